using TpmProvisioning.Attestation.Verifier;

namespace TpmProvisioning.Tests.Verifier;

/// <summary>When the verifier asks an agent for its next quote, under each <see cref="QuoteSchedule"/>.</summary>
public sealed class QuoteScheduleTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(2);

    [Theory]
    [InlineData(0)]      // judged at once
    [InlineData(180)]    // a quote round trip of 0.18 s
    [InlineData(1000)]   // up to half the interval late: the slot is kept
    public void FixedRateCountsFromWhenTheQuoteWasDue(int roundTripMs)
    {
        var now = T0 + TimeSpan.FromMilliseconds(roundTripMs);
        Assert.Equal(T0 + Interval, VerifierService.NextDue(QuoteSchedule.FixedRate, T0, now, Interval));
    }

    [Theory]
    [InlineData(1500)]
    [InlineData(2000)]
    [InlineData(2500)]
    [InlineData(9000)]   // four intervals missed: asked once, half an interval later, not four times
    public void FixedRateLeavesHalfAnIntervalAfterALateQuoteAndNeverCatchesUp(int roundTripMs)
    {
        var now = T0 + TimeSpan.FromMilliseconds(roundTripMs);
        var next = VerifierService.NextDue(QuoteSchedule.FixedRate, T0, now, Interval);
        Assert.Equal(now + Interval / 2, next);
        // From there on the agent is on a new slot, a whole interval apart: missed slots are skipped, not made up in a burst.
        Assert.Equal(next + Interval, VerifierService.NextDue(QuoteSchedule.FixedRate, next, next, Interval));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(180)]
    [InlineData(2500)]
    public void AfterVerdictCountsFromTheVerdictAsKeylimeDoes(int roundTripMs)
    {
        var now = T0 + TimeSpan.FromMilliseconds(roundTripMs);
        Assert.Equal(now + Interval, VerifierService.NextDue(QuoteSchedule.AfterVerdict, T0, now, Interval));
    }

    [Fact]
    public void FixedRateIsTheDefault() => Assert.Equal(QuoteSchedule.FixedRate, new VerifierSettings().QuoteSchedule);

    [Fact]
    public void OverAHundredRoundsFixedRateKeepsThePeriodAndAfterVerdictAddsTheRoundTrip()
    {
        var roundTrip = TimeSpan.FromMilliseconds(180);
        foreach (var (schedule, period) in new[] { (QuoteSchedule.FixedRate, Interval), (QuoteSchedule.AfterVerdict, Interval + roundTrip) })
        {
            var due = T0;
            for (int k = 0; k < 100; k++) due = VerifierService.NextDue(schedule, due, due + roundTrip, Interval);
            Assert.Equal(T0 + period * 100, due);
        }
    }
}
