using System.Collections.Concurrent;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Fixtures;

namespace TpmProvisioning.Tests.Verifier;

/// <summary>
/// The hand-over of agents between two verifiers' lease components on a real PostgreSQL store, when one gives agents back to a
/// joining one: the next holder's first quote is due one interval after the last verdict stored, and when the watch given back
/// had to be cut short (a quote the agent answered may have no stored verdict) one interval after the give-back, so the agent
/// is never asked twice in one interval.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class VerifierLeasesHandoverTests(PostgresFixture pg)
{
    /// <summary>The verifier side as the lease component sees it: which agents it was told to watch, and after what delay.</summary>
    private sealed class RecordingHost(bool watchesEndByThemselves) : IVerifierLeaseHost
    {
        public ConcurrentDictionary<string, TimeSpan> Watched { get; } = new(StringComparer.Ordinal);
        public void WatchClaimed(string agentId, TimeSpan delay) => Watched[agentId] = delay;
        public bool IsWatching(string agentId) => Watched.ContainsKey(agentId);
        public Task<bool> UnwatchAsync(string agentId, bool graceful = false)
        {
            Watched.TryRemove(agentId, out _);
            return Task.FromResult(watchesEndByThemselves);
        }
    }

    [SkippableTheory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task AnAgentGivenBackIsFirstAskedByItsNextHolderOneIntervalAfterItsLastJudgement(bool watchesEndByThemselves)
    {
        var db = await pg.CreateDatabaseAsync("handover");
        using var store = await PostgresStore.OpenAsync(db);
        var interval = TimeSpan.FromSeconds(20);
        var lease = TimeSpan.FromSeconds(30);
        var longAgo = DateTimeOffset.UtcNow.AddMinutes(-5);
        for (int i = 0; i < 4; i++)
            Assert.True(await store.InsertVerifierAgentAsync(new VerifierAgentRecord
            {
                AgentId = $"agent-{i}", Config = new VerifierAgentConfig { Ip = "127.0.0.1", Port = 9002 }, VerifierId = "v1",
                State = OperationalState.GetQuote, AttestationCount = 7, Added = longAgo, Updated = longAgo,
            }));

        var h1 = new RecordingHost(watchesEndByThemselves);
        var h2 = new RecordingHost(true);
        await using var l1 = new VerifierLeases(store, "v1", interval, lease);
        await using var l2 = new VerifierLeases(store, "v2", interval, lease);
        l1.Start(h1);
        await l1.RoundAsync();
        Assert.Equal(4, l1.HeldCount);
        Assert.All(h1.Watched.Values, d => Assert.Equal(TimeSpan.Zero, d)); // last judged long ago: due now

        // v2 joins: v1 is above its fair share (2) and gives two agents back, v2 claims them.
        l2.Start(h2);
        await l2.RoundAsync();
        await l1.RoundAsync();
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (h2.Watched.Count < 2)
        {
            Assert.True(DateTime.UtcNow < until, $"v2 took {h2.Watched.Count} agents, not 2");
            await Task.Delay(200);
            await l2.RoundAsync();
        }
        Assert.Equal(2, l1.HeldCount);
        foreach (var (agent, delay) in h2.Watched)
        {
            var r = (await store.GetVerifierAgentAsync(agent))!;
            Assert.Equal(7, r.AttestationCount); // the stamp changes nothing but the time
            Assert.Equal("v2", r.VerifierId);
            if (watchesEndByThemselves) Assert.Equal(TimeSpan.Zero, delay); // its last verdict is the last quote asked
            else Assert.True(delay > interval / 2, $"{agent}: its watch was cut short at the give-back, yet its next holder asks after {delay.TotalSeconds:0.0} s");
        }
    }
}
