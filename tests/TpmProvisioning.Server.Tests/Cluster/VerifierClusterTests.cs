using System.Diagnostics;
using System.Net;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Fixtures;
using Xunit.Abstractions;

namespace TpmProvisioning.Tests.Cluster;

/// <summary>The software agents of <see cref="VerifierClusterTests"/> (issue 16's 3,000), started once for the class and stopped after it.</summary>
public sealed class ClusterFleetFixture : IAsyncLifetime
{
    public const int Agents = 3000;
    public SoftwareAgentFleet Fleet { get; private set; } = null!;
    public async Task InitializeAsync() => Fleet = await SoftwareAgentFleet.StartAsync(Agents);
    public async Task DisposeAsync() { if (Fleet is not null) await Fleet.DisposeAsync(); }
}

/// <summary>
/// Three verifier servers, each an operating-system process of its own, on one real PostgreSQL database watch 3,000 software
/// agents: the leases give each agent to exactly one live verifier, the agents spread evenly, and when one server's process is
/// killed (SIGKILL: no stop, no lease given back) its agents move to the others within the lease period with no stored
/// attestation result lost. Judgement times are taken at the agents (each answered quote, and which verifier asked) and checked
/// against the store. "Judged once per interval" holds whether the verifier schedules the next quote from the end of the last
/// judgement or from the start of the last request: consecutive quotes of one agent are never closer than half an interval,
/// and a window of w seconds holds at least w / interval - 1 quotes of every agent.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class VerifierClusterTests(PostgresFixture pg, ClusterFleetFixture fleetFixture, ITestOutputHelper output) : IClassFixture<ClusterFleetFixture>
{
    // 3,000 agents every 10 s is 300 quotes/s over three nodes: what a busy 2-core machine sustains beside PostgreSQL and the fleet.
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan Tick = Lease / 5;
    private static readonly string[] Ids = ["node-a", "node-b", "node-c"];
    private const string Victim = "node-c";

    [SkippableFact]
    public async Task ThreeVerifierProcessesShareTheFleetAndTakeOverAKilledOnesAgents()
    {
        var clock = Stopwatch.StartNew();
        var db = await pg.CreateDatabaseAsync("cluster");
        var fleet = fleetFixture.Fleet;
        int n = fleet.Count;
        await using var nodes = new ClusterProcesses(db);
        using var admin = await PostgresStore.OpenAsync(db);
        await nodes.StartVerifiersAsync(Ids, Interval, Lease);
        output.WriteLine($"{clock.Elapsed.TotalSeconds,6:0.0} s: three verifier processes up ({string.Join(", ", Ids.Select(id => $"{id} pid {nodes[id].Process.Id}"))})");

        // The tenant adds the whole fleet through two of the servers; the cluster gives the third its share.
        string[] entry = [nodes[Ids[0]].Url, nodes[Ids[1]].Url];
        int added = 0;
        var addStart = clock.Elapsed;
        var tenth = TimeSpan.Zero;
        await Parallel.ForEachAsync(Enumerable.Range(0, n), new ParallelOptions { MaxDegreeOfParallelism = 32 }, async (i, _) =>
        {
            var (status, body, resp) = await ClusterNodes.SendAsync(nodes.Tenant, HttpMethod.Post, $"{entry[i % 2]}/v2.1/agents/{fleet.AgentIds[i]}", fleet.AddBody(i));
            resp.Dispose();
            Assert.True(status == HttpStatusCode.OK, $"add {i}: {(int)status} {body}");
            if (Interlocked.Increment(ref added) == n / 10) tenth = clock.Elapsed - addStart;
        });
        output.WriteLine($"{clock.Elapsed.TotalSeconds,6:0.0} s: {n} agents added through {Ids[0]} and {Ids[1]} ({n / (clock.Elapsed - addStart).TotalSeconds:0}/s; the first tenth {n / 10 / tenth.TotalSeconds:0}/s); load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");

        // Settle: every agent judged, each verifier holding about a third.
        int fair = (int)Math.Ceiling(n / 3.0);
        await WaitUntil(TimeSpan.FromSeconds(120), async () =>
        {
            var view = await admin.ListVerifierNodesAsync();
            var agents = await admin.ListVerifierAgentsAsync();
            return view.Count == 3 && view.All(v => Math.Abs(v.LeasedAgents - fair) <= 2) && agents.All(a => a.AttestationCount > 0 && a.State == OperationalState.GetQuote);
        }, "the cluster did not settle to a fair share with every agent judged");
        output.WriteLine($"{clock.Elapsed.TotalSeconds,6:0.0} s: settled, every agent judged, about {fair} leases each");

        // Steady state: each agent judged once per interval, by one verifier, spread evenly.
        var window = Interval * 3;
        var t0 = SoftwareAgentFleet.Now;
        await Task.Delay(window);
        var t1 = SoftwareAgentFleet.Now;
        var owners = new string[n];
        var (perVerifier, maxGap) = Judged(fleet, t0, t1, Ids, owners);
        output.WriteLine($"steady ({(t1 - t0).TotalSeconds:0} s window): {n} agents judged by {Spread(perVerifier)}, longest gap {maxGap:0.00} s (interval {Interval.TotalSeconds:0} s, lease {Lease.TotalSeconds:0} s)");
        int slack = Math.Max(5, n / 100);
        Assert.All(perVerifier, kv => Assert.InRange(kv.Value, n / 3 - slack, n / 3 + slack));
        Assert.True(maxGap < Lease.TotalSeconds, $"an agent waited {maxGap:0.0} s between quotes");

        // Keylime's API is unchanged: any server answers for any agent, verifier_id names the one judging it.
        foreach (var (owner, k) in Ids.Select((id, k) => (id, k)))
        {
            int i = Array.IndexOf(owners, owner);
            var other = nodes[Ids[(k + 1) % Ids.Length]].Url;
            var (st, agentBody, r) = await ClusterNodes.SendAsync(nodes.Tenant, HttpMethod.Get, $"{other}/v2.1/agents/{fleet.AgentIds[i]}");
            r.Dispose();
            Assert.Equal(HttpStatusCode.OK, st);
            Assert.Equal(owner, ClusterNodes.Json(agentBody).GetProperty("results").GetProperty("verifier_id").GetString());
        }

        // Kill node-c's process: SIGKILL, no stop, no lease given back.
        var before = (await admin.ListVerifierAgentsAsync()).ToDictionary(a => a.AgentId, a => a.AttestationCount);
        var victims = Enumerable.Range(0, n).Where(i => owners[i] == Victim).ToList();
        Assert.NotEmpty(victims);
        var killedAt = SoftwareAgentFleet.Now;
        await nodes.KillAsync(Victim);
        var goneAt = SoftwareAgentFleet.Now;
        output.WriteLine($"{clock.Elapsed.TotalSeconds,6:0.0} s: {Victim}'s process killed, holding {victims.Count} agents");

        // Two measures of the takeover: when the survivors hold every lease (the store), and when each of node-c's agents is
        // first judged by a survivor (the agents). The second adds the survivors' burst of first quotes over new connections.
        TimeSpan Takeover(int i) => fleet.Quotes(i).FirstOrDefault(x => x.At > killedAt && x.Verifier != Victim) is { } q ? q.At - killedAt : TimeSpan.MaxValue;
        TimeSpan? leasesMoved = null;
        await WaitUntil(Lease + Interval + TimeSpan.FromSeconds(90), async () =>
        {
            if (leasesMoved is null)
            {
                var view = await admin.ListVerifierNodesAsync();
                if (view.Where(v => v.VerifierId != Victim).Sum(v => v.LeasedAgents) == n) leasesMoved = SoftwareAgentFleet.Now - killedAt;
            }
            return leasesMoved is not null && victims.All(i => Takeover(i) != TimeSpan.MaxValue);
        }, "the killed verifier's agents were not taken over", poll: TimeSpan.FromMilliseconds(500));
        var takeovers = victims.Select(Takeover).Order().ToList();
        var worst = takeovers[^1];
        var lastByVictim = victims.Max(i => fleet.Quotes(i).LastOrDefault(x => x.Verifier == Victim)?.At ?? TimeSpan.Zero);
        output.WriteLine($"kill: {victims.Count} agents of {Victim}: every lease held by a survivor {leasesMoved!.Value.TotalSeconds:0.0} s after the kill; first judged by a survivor after {takeovers[0].TotalSeconds:0.0} s (first), {takeovers[takeovers.Count / 2].TotalSeconds:0.0} s (median), {takeovers[takeovers.Count * 9 / 10].TotalSeconds:0.0} s (90 %), {worst.TotalSeconds:0.0} s (last) (lease {Lease.TotalSeconds:0} s, tick {Tick.TotalSeconds:0.0} s, interval {Interval.TotalSeconds:0} s); {Victim}'s last answered quote {(lastByVictim - killedAt).TotalSeconds:0.00} s after the kill");
        foreach (var id in Ids.Where(id => id != Victim)) foreach (var line in LeaseLog(nodes[id])) output.WriteLine($"  {id}: {line}");
        Assert.True(lastByVictim <= goneAt, $"an agent answered {Victim} {(lastByVictim - goneAt).TotalSeconds:0.00} s after its process had exited");
        Assert.True(takeovers[0] >= Lease - Tick - TimeSpan.FromSeconds(1), $"an agent of {Victim} was judged by a survivor {takeovers[0].TotalSeconds:0.0} s after the kill, before its lease could have expired");
        Assert.True(leasesMoved <= Lease + Tick + TimeSpan.FromSeconds(10), $"the survivors held every lease only {leasesMoved.Value.TotalSeconds:0.0} s after the kill");
        Assert.True(worst <= Lease + Interval + TimeSpan.FromSeconds(30), $"takeover took {worst.TotalSeconds:0.0} s");

        // After the takeover: two verifiers share everything evenly, nobody judges twice, nothing stored was lost.
        await WaitUntil(TimeSpan.FromSeconds(60), async () =>
        {
            var view = (await admin.ListVerifierNodesAsync()).Where(v => v.Alive).ToList();
            return view.Count == 2 && view.All(v => Math.Abs(v.LeasedAgents - n / 2) <= 2);
        }, "the two survivors did not settle");
        var survivors = Ids.Where(id => id != Victim).ToArray();
        var t2 = SoftwareAgentFleet.Now;
        await Task.Delay(Interval * 3);
        var t3 = SoftwareAgentFleet.Now;
        var (perSurvivor, maxGapAfter) = Judged(fleet, t2, t3, survivors, new string[n]);
        output.WriteLine($"after the takeover ({(t3 - t2).TotalSeconds:0} s window): judged by {Spread(perSurvivor)}, longest gap {maxGapAfter:0.00} s");
        Assert.All(perSurvivor, kv => Assert.InRange(kv.Value, n / 2 - slack, n / 2 + slack));

        // Every stored verdict is an answered quote: the store holds at most what each agent answered, and the answers missing
        // from it are only quotes in flight: one per agent at most when the store is read (the survivors keep judging), and for
        // node-c's agents also the one it may have been judging when it was killed. The store is read first, then the agents,
        // so every verdict counted was answered before the agents are counted.
        var after = (await admin.ListVerifierAgentsAsync()).ToDictionary(a => a.AgentId, a => a);
        var answered = Enumerable.Range(0, n).Select(i => fleet.Quotes(i)).ToArray();
        long storedTotal = 0, answeredTotal = 0, unstoredVictims = 0, unstoredOthers = 0;
        var victimSet = victims.ToHashSet();
        for (int i = 0; i < n; i++)
        {
            var rec = after[fleet.AgentIds[i]];
            AssertNoDoubleJudgement(answered[i], i);
            Assert.Equal(OperationalState.GetQuote, rec.State);
            Assert.True(rec.AttestationCount >= before[rec.AgentId], $"agent {i}: attestation count went from {before[rec.AgentId]} to {rec.AttestationCount}");
            Assert.NotEqual(Victim, rec.VerifierId);
            long unstored = answered[i].Count - rec.AttestationCount;
            Assert.True(unstored >= 0, $"agent {i}: {rec.AttestationCount} verdicts stored for {answered[i].Count} answered quotes");
            Assert.True(unstored <= (victimSet.Contains(i) ? 2 : 1), $"agent {i} ({(victimSet.Contains(i) ? "node-c's" : "a survivor's")}): {unstored} answered quotes have no stored verdict");
            storedTotal += rec.AttestationCount;
            answeredTotal += answered[i].Count;
            if (victimSet.Contains(i)) unstoredVictims += unstored; else unstoredOthers += unstored;
        }
        output.WriteLine($"quotes answered by agents {answeredTotal}, verdicts stored {storedTotal}: unstored {unstoredVictims} of node-c's {victims.Count} agents, {unstoredOthers} of the others' {n - victims.Count}");
        Assert.True(unstoredVictims <= 2L * victims.Count);
        output.WriteLine($"{clock.Elapsed.TotalSeconds,6:0.0} s: done");
    }

    /// <summary>
    /// Checks each agent's quotes in [<paramref name="from"/>, <paramref name="to"/>]: at least window / interval - 1 of them, all by
    /// one of <paramref name="verifiers"/>; returns the agents per verifier of their last quote (written to <paramref name="owners"/>)
    /// and the longest gap between two quotes of one agent.
    /// </summary>
    private static (Dictionary<string, int> PerVerifier, double MaxGap) Judged(SoftwareAgentFleet fleet, TimeSpan from, TimeSpan to, string[] verifiers, string[] owners)
    {
        int least = (int)Math.Floor((to - from) / Interval) - 1;
        var perVerifier = verifiers.ToDictionary(id => id, _ => 0);
        double maxGap = 0;
        for (int i = 0; i < fleet.Count; i++)
        {
            var all = fleet.Quotes(i);
            AssertNoDoubleJudgement(all, i);
            var q = all.Where(x => x.At >= from && x.At <= to).ToList();
            Assert.True(q.Count >= least, $"agent {i} was judged {q.Count} times in {(to - from).TotalSeconds:0} s (at least {least} expected)");
            Assert.All(q, x => Assert.Contains(x.Verifier, verifiers));
            maxGap = Math.Max(maxGap, q.Zip(q.Skip(1), (a, b) => (b.At - a.At).TotalSeconds).DefaultIfEmpty(0).Max());
            owners[i] = q[^1].Verifier;
            perVerifier[owners[i]]++;
        }
        return (perVerifier, maxGap);
    }

    private static string Spread(Dictionary<string, int> perVerifier) => string.Join(", ", perVerifier.Select(kv => $"{kv.Key}={kv.Value}"));

    /// <summary>Two verifiers judging one agent in the same interval would show as two quotes much closer than the interval.</summary>
    private static void AssertNoDoubleJudgement(IReadOnlyList<SoftwareAgentFleet.Quote> quotes, int agent)
    {
        for (int k = 1; k < quotes.Count; k++)
        {
            var gap = quotes[k].At - quotes[k - 1].At;
            if (gap < Interval / 2)
                Assert.Fail($"agent {agent} was judged twice within {gap.TotalMilliseconds:0} ms (by {quotes[k - 1].Verifier} then {quotes[k].Verifier}); its quotes: "
                    + string.Join(", ", quotes.Select(q => $"{q.At.TotalSeconds:0.00} s {q.Verifier}")));
        }
    }

    private static async Task WaitUntil(TimeSpan limit, Func<Task<bool>> condition, string what, TimeSpan? poll = null)
    {
        var until = DateTime.UtcNow + limit;
        while (!await condition())
        {
            if (DateTime.UtcNow > until) Assert.Fail(what);
            await Task.Delay(poll ?? TimeSpan.FromSeconds(1));
        }
    }

    /// <summary>The lease lines of a node's log (claims and give-backs), the last few.</summary>
    private static IEnumerable<string> LeaseLog(Hardening.ChildServer.Handle node)
    {
        var dir = Path.Combine(node.DataPath, "logs");
        if (!Directory.Exists(dir)) return [];
        var lines = Directory.GetFiles(dir, "server-*.log").Order(StringComparer.Ordinal)
            .SelectMany(f => { using var fs = new FileStream(f, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete); using var rd = new StreamReader(fs); return rd.ReadToEnd().Split('\n'); })
            .Where(l => l.Contains("Verifier leases", StringComparison.Ordinal)).ToList();
        return lines.TakeLast(6).Select(l => l.TrimEnd());
    }
}
