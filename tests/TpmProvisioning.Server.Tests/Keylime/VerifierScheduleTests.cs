using Microsoft.Data.Sqlite;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Cluster;
using Xunit.Abstractions;

namespace TpmProvisioning.Tests.Keylime;

/// <summary>
/// The quote schedule against agents that take 0.4 s to answer (as a real TPM's quote does): with FixedRate each agent is asked
/// every interval, start to start, so the round trip does not stretch its period; with AfterVerdict (Keylime's pacing) the period
/// is the interval plus the round trip. Times are taken at the agents, when each quote is answered.
/// </summary>
public sealed class VerifierScheduleTests(ITestOutputHelper output) : IAsyncLifetime
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan RoundTrip = TimeSpan.FromMilliseconds(400);
    private const int Rounds = 7;

    private SoftwareAgentFleet _fleet = null!;
    private readonly string _dir = Directory.CreateTempSubdirectory("tpmprov-schedule-").FullName;

    public async Task InitializeAsync()
    {
        _fleet = await SoftwareAgentFleet.StartAsync(2 + Resumed);
    }

    public async Task DisposeAsync()
    {
        await _fleet.DisposeAsync();
        SqliteConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    [Fact]
    public async Task FixedRateKeepsTheIntervalAndAfterVerdictAddsTheRoundTrip()
    {
        _fleet.AnswerDelay = RoundTrip;
        var fixedRate = await WatchAsync(0, QuoteSchedule.FixedRate);
        var afterVerdict = await WatchAsync(1, QuoteSchedule.AfterVerdict);
        try
        {
            var until = DateTime.UtcNow + TimeSpan.FromSeconds(90);
            while ((_fleet.Quotes(0).Count < Rounds + 1 || _fleet.Quotes(1).Count < Rounds + 1) && DateTime.UtcNow < until) await Task.Delay(200);

            double fixedPeriod = MeanPeriod(0), afterPeriod = MeanPeriod(1);
            output.WriteLine($"interval {Interval.TotalSeconds:0.0} s, agent round trip {RoundTrip.TotalSeconds:0.0} s: FixedRate period {fixedPeriod:0.000} s, AfterVerdict period {afterPeriod:0.000} s");
            // AfterVerdict can never be faster than interval + the agent's own delay; FixedRate only slows down if a round trip
            // (0.4 s at the agent plus TLS and judging) took longer than 0.8 s on average.
            Assert.True(afterPeriod >= (Interval + RoundTrip).TotalSeconds - 0.05, $"AfterVerdict period {afterPeriod:0.000} s");
            Assert.True(fixedPeriod < (Interval + RoundTrip / 2).TotalSeconds, $"FixedRate period {fixedPeriod:0.000} s");
            Assert.True(fixedPeriod >= Interval.TotalSeconds - 0.05, $"FixedRate asked more often than every interval: {fixedPeriod:0.000} s");
            foreach (var v in new[] { fixedRate, afterVerdict })
            {
                var agents = await v.Store.ListVerifierAgentsAsync();
                Assert.All(agents, a => Assert.Equal(OperationalState.GetQuote, a.State));
                Assert.All(agents, a => Assert.True(a.AttestationCount >= Rounds, $"{a.AttestationCount} verdicts"));
            }
        }
        finally
        {
            await fixedRate.DisposeAsync();
            await afterVerdict.DisposeAsync();
        }
    }

    private const int Resumed = 8;

    [Fact]
    public async Task AResumedFleetIsSpreadOverOneIntervalNotAskedAtOnce()
    {
        // Agents 2.. of the fleet, watched every 4 s; the verifier stops and a new one resumes them from the store.
        var interval = TimeSpan.FromSeconds(4);
        var settings = new VerifierSettings { QuoteInterval = interval, RequestTimeout = TimeSpan.FromSeconds(30) };
        var store = await SqliteStore.OpenAsync(Path.Combine(_dir, "resume.db"));
        try
        {
            var first = new VerifierService(store, settings, new AgentConnector(null, settings.RequestTimeout), new RevocationNotifier([]), MeasurementChecks.Default);
            for (int i = 2; i < 2 + Resumed; i++)
                Assert.True((await first.AddAsync(_fleet.AgentIds[i], System.Text.Encoding.UTF8.GetBytes(_fleet.AddBody(i)))).Succeeded);
            var until = DateTime.UtcNow + TimeSpan.FromSeconds(60);
            while (Enumerable.Range(2, Resumed).Any(i => _fleet.Quotes(i).Count == 0) && DateTime.UtcNow < until) await Task.Delay(100);
            await first.DisposeAsync();

            var resumedAt = SoftwareAgentFleet.Now;
            var second = new VerifierService(store, settings, new AgentConnector(null, settings.RequestTimeout), new RevocationNotifier([]), MeasurementChecks.Default);
            try
            {
                Assert.Equal(Resumed, await second.ResumeAsync());
                until = DateTime.UtcNow + TimeSpan.FromSeconds(60);
                while (Enumerable.Range(2, Resumed).Any(i => !_fleet.Quotes(i).Any(q => q.At > resumedAt)) && DateTime.UtcNow < until) await Task.Delay(100);
                var firsts = Enumerable.Range(2, Resumed).Select(i => _fleet.Quotes(i).First(q => q.At > resumedAt).At - resumedAt).OrderBy(t => t).ToList();
                output.WriteLine("first quotes after resume (s): " + string.Join(", ", firsts.Select(t => t.TotalSeconds.ToString("0.00"))));
                // Agent k of 8 is due k/8 of 4 s after the resume: the first and last are 3.5 s apart, at least 2 s on any machine;
                // asked all at once, 8 quotes are answered within a fraction of a second.
                Assert.True((firsts[^1] - firsts[0]).TotalSeconds >= 2, $"the resumed quotes came within {(firsts[^1] - firsts[0]).TotalSeconds:0.00} s");
                Assert.True(firsts[^1] < interval + TimeSpan.FromSeconds(3), $"the last resumed agent waited {firsts[^1].TotalSeconds:0.0} s");
            }
            finally { await second.DisposeAsync(); }
        }
        finally { store.Dispose(); }
    }

    /// <summary>Mean time between answered quotes after the first (which comes with the NK), over <see cref="Rounds"/> periods.</summary>
    private double MeanPeriod(int agent)
    {
        var q = _fleet.Quotes(agent);
        Assert.True(q.Count >= Rounds + 1, $"agent {agent} answered {q.Count} quotes");
        return (q[Rounds].At - q[1].At).TotalSeconds / (Rounds - 1);
    }

    private sealed class Watcher(SqliteStore store, VerifierService verifier) : IAsyncDisposable
    {
        public SqliteStore Store => store;
        public async ValueTask DisposeAsync()
        {
            await verifier.DisposeAsync();
            store.Dispose();
        }
    }

    private async Task<Watcher> WatchAsync(int agent, QuoteSchedule schedule)
    {
        var store = await SqliteStore.OpenAsync(Path.Combine(_dir, $"{schedule}.db"));
        var settings = new VerifierSettings { QuoteInterval = Interval, QuoteSchedule = schedule, RequestTimeout = TimeSpan.FromSeconds(30) };
        var verifier = new VerifierService(store, settings, new AgentConnector(null, settings.RequestTimeout), new RevocationNotifier([]), MeasurementChecks.Default);
        var added = await verifier.AddAsync(_fleet.AgentIds[agent], System.Text.Encoding.UTF8.GetBytes(_fleet.AddBody(agent)));
        Assert.True(added.Succeeded, $"{added.Status} {added.Message}");
        return new Watcher(store, verifier);
    }
}
