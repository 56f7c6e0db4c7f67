using System.Net;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Hosting;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Fixtures;
using Xunit.Abstractions;

namespace TpmProvisioning.Tests.Cluster;

/// <summary>The software agents of <see cref="VerifierClusterTests"/>, started once for the class and stopped after it.</summary>
public sealed class ClusterFleetFixture : IAsyncLifetime
{
    public const int Agents = 120;
    public SoftwareAgentFleet Fleet { get; private set; } = null!;
    public async Task InitializeAsync() => Fleet = await SoftwareAgentFleet.StartAsync(Agents);
    public async Task DisposeAsync() { if (Fleet is not null) await Fleet.DisposeAsync(); }
}

/// <summary>
/// Three servers with the verifier role on one real PostgreSQL database watch a fleet of software agents: the leases give each
/// agent to exactly one live verifier, the agents spread evenly, and when one server is killed its agents move to the others
/// within the lease period with no stored attestation result lost. Judgement times are taken at the agents (each answered
/// quote, and which verifier asked) and checked against the store.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class VerifierClusterTests(PostgresFixture pg, ClusterFleetFixture fleetFixture, ITestOutputHelper output) : IClassFixture<ClusterFleetFixture>
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(4);
    private static readonly string[] Ids = ["node-a", "node-b", "node-c"];

    [SkippableFact]
    public async Task ThreeVerifiersShareTheFleetAndTakeOverADeadOnesAgents()
    {
        var db = await pg.CreateDatabaseAsync("cluster");
        var fleet = fleetFixture.Fleet;
        int n = fleet.Count;
        await using var nodes = new ClusterNodes(db);
        using var admin = await PostgresStore.OpenAsync(db);
        foreach (var id in Ids)
            await nodes.StartAsync(ServerRole.Verifier, o => o.Verifier = new VerifierSettings { VerifierId = id, QuoteInterval = Interval, LeaseDuration = Lease, MaxRetries = 3 });

        // The tenant adds the whole fleet through one server; the cluster spreads it.
        var first = nodes.Hosts[0].Info.Urls[0];
        await Parallel.ForEachAsync(Enumerable.Range(0, n), new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (i, _) =>
        {
            var (status, body, resp) = await ClusterNodes.SendAsync(nodes.Tenant, HttpMethod.Post, $"{first}/v2.1/agents/{fleet.AgentIds[i]}", fleet.AddBody(i));
            resp.Dispose();
            Assert.True(status == HttpStatusCode.OK, $"add {i}: {(int)status} {body}");
        });

        // Settle: every agent judged, each verifier holding about a third.
        int fair = (int)Math.Ceiling(n / 3.0);
        await WaitUntil(TimeSpan.FromSeconds(90), async () =>
        {
            var view = await admin.ListVerifierNodesAsync();
            var agents = await admin.ListVerifierAgentsAsync();
            return view.Count == 3 && view.All(v => Math.Abs(v.LeasedAgents - fair) <= 2) && agents.All(a => a.AttestationCount > 0 && a.State == OperationalState.GetQuote);
        }, "the cluster did not settle to a fair share with every agent judged");
        await Task.Delay(Interval * 2); // past any handover in flight

        // Steady state: each agent judged once per interval, by one verifier, spread evenly.
        var t0 = SoftwareAgentFleet.Now;
        await Task.Delay(Interval * 8);
        var t1 = SoftwareAgentFleet.Now;
        var perVerifier = Ids.ToDictionary(id => id, _ => 0);
        var owners = new string[n];
        double maxGap = 0;
        for (int i = 0; i < n; i++)
        {
            var q = fleet.Quotes(i).Where(x => x.At >= t0 && x.At <= t1).ToList();
            Assert.True(q.Count >= 2, $"agent {i} was judged {q.Count} times in {(t1 - t0).TotalSeconds:0} s");
            AssertNoDoubleJudgement(fleet.Quotes(i), i);
            maxGap = Math.Max(maxGap, q.Zip(q.Skip(1), (a, b) => (b.At - a.At).TotalSeconds).DefaultIfEmpty(0).Max());
            owners[i] = q[^1].Verifier;
            perVerifier[owners[i]]++;
        }
        output.WriteLine($"steady: {n} agents, judged by {string.Join(", ", perVerifier.Select(kv => $"{kv.Key}={kv.Value}"))}, longest gap {maxGap:0.00} s (interval {Interval.TotalSeconds:0} s)");
        Assert.All(perVerifier.Values, c => Assert.InRange(c, n / 3 - 5, n / 3 + 5));
        Assert.True(maxGap < Lease.TotalSeconds, $"an agent waited {maxGap:0.0} s between quotes");

        // Keylime's API is unchanged: any server answers for any agent, verifier_id names the one judging it.
        var (st, agentBody, r) = await ClusterNodes.SendAsync(nodes.Tenant, HttpMethod.Get, $"{nodes.Hosts[1].Info.Urls[0]}/v2.1/agents/{fleet.AgentIds[0]}");
        r.Dispose();
        Assert.Equal(HttpStatusCode.OK, st);
        Assert.Contains(ClusterNodes.Json(agentBody).GetProperty("results").GetProperty("verifier_id").GetString(), Ids);

        // Kill node-c: no stop, no lease given back.
        var before = (await admin.ListVerifierAgentsAsync()).ToDictionary(a => a.AgentId, a => a.AttestationCount);
        var victims = Enumerable.Range(0, n).Where(i => owners[i] == "node-c").ToList();
        Assert.NotEmpty(victims);
        var killedAt = SoftwareAgentFleet.Now;
        await nodes.Hosts[2].AbortAsync();
        nodes.Hosts.RemoveAt(2);

        TimeSpan Takeover(int i) => fleet.Quotes(i).FirstOrDefault(x => x.At > killedAt && x.Verifier != "node-c") is { } q ? q.At - killedAt : TimeSpan.MaxValue;
        await WaitUntil(Lease + TimeSpan.FromSeconds(60), () => Task.FromResult(victims.All(i => Takeover(i) != TimeSpan.MaxValue)),
            "the dead verifier's agents were not taken over");
        var worst = victims.Max(Takeover);
        output.WriteLine($"kill: {victims.Count} agents of node-c taken over, the last after {worst.TotalSeconds:0.0} s (lease {Lease.TotalSeconds:0} s, tick {Lease.TotalSeconds / 5:0.0} s)");
        Assert.True(worst <= Lease + Interval + TimeSpan.FromSeconds(10), $"takeover took {worst.TotalSeconds:0.0} s");

        // After the takeover: two verifiers share everything evenly, nobody judges twice, nothing stored was lost.
        await WaitUntil(TimeSpan.FromSeconds(60), async () =>
        {
            var view = (await admin.ListVerifierNodesAsync()).Where(v => v.Alive).ToList();
            return view.Count == 2 && view.All(v => Math.Abs(v.LeasedAgents - n / 2) <= 2);
        }, "the two survivors did not settle");
        var t2 = SoftwareAgentFleet.Now;
        await Task.Delay(Interval * 5);
        var t3 = SoftwareAgentFleet.Now;
        var after = (await admin.ListVerifierAgentsAsync()).ToDictionary(a => a.AgentId, a => a);
        for (int i = 0; i < n; i++)
        {
            AssertNoDoubleJudgement(fleet.Quotes(i), i);
            var q = fleet.Quotes(i).Where(x => x.At >= t2 && x.At <= t3).ToList();
            Assert.True(q.Count >= 2, $"agent {i} was judged {q.Count} times after the takeover");
            Assert.DoesNotContain(q, x => x.Verifier == "node-c");
            var rec = after[fleet.AgentIds[i]];
            Assert.Equal(OperationalState.GetQuote, rec.State);
            Assert.True(rec.AttestationCount >= before[rec.AgentId], $"agent {i}: attestation count went from {before[rec.AgentId]} to {rec.AttestationCount}");
            Assert.NotEqual("node-c", rec.VerifierId);
        }
        // Every stored verdict is an answered quote: the store holds at most what the agents answered, and the agents' answers
        // that are missing from it are only the quotes in flight when node-c died (at most one per agent).
        // The survivors keep judging meanwhile: read the store first, then the agents, so every verdict counted was answered
        // before the agents are counted (the other order lets a quote answered between the two reads count as stored only).
        long stored = (await admin.ListVerifierAgentsAsync()).Sum(a => a.AttestationCount);
        long answered = Enumerable.Range(0, n).Sum(i => (long)fleet.Quotes(i).Count);
        output.WriteLine($"quotes answered by agents {answered}, verdicts stored {stored}");
        Assert.True(stored <= answered, $"more verdicts ({stored}) than answered quotes ({answered})");
        Assert.True(answered - stored <= victims.Count + n, $"{answered - stored} answered quotes have no stored verdict");
    }

    /// <summary>Two verifiers judging one agent in the same interval would show as two quotes much closer than the interval.</summary>
    private static void AssertNoDoubleJudgement(IReadOnlyList<SoftwareAgentFleet.Quote> quotes, int agent)
    {
        for (int k = 1; k < quotes.Count; k++)
        {
            var gap = quotes[k].At - quotes[k - 1].At;
            Assert.True(gap >= Interval / 2, $"agent {agent} was judged twice within {gap.TotalMilliseconds:0} ms (by {quotes[k - 1].Verifier} then {quotes[k].Verifier})");
        }
    }

    private static async Task WaitUntil(TimeSpan limit, Func<Task<bool>> condition, string what)
    {
        var until = DateTime.UtcNow + limit;
        while (!await condition())
        {
            if (DateTime.UtcNow > until) Assert.Fail(what);
            await Task.Delay(250);
        }
    }
}
