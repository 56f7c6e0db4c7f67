using System.Reflection;
using Microsoft.Data.Sqlite;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Tests.Verifier;

/// <summary>
/// The verifier's grouped verdict writes: the store's batch update (one transaction, per-record answer) and the writer that
/// gathers the watches' verdicts into it, over a real SQLite store.
/// </summary>
public sealed class VerdictWriterTests : IAsyncLifetime
{
    private readonly string _dir = Directory.CreateTempSubdirectory("tpmprov-verdicts-").FullName;
    private SqliteStore _store = null!;

    public async Task InitializeAsync() => _store = await SqliteStore.OpenAsync(Path.Combine(_dir, "store.db"));

    public Task DisposeAsync()
    {
        _store.Dispose();
        SqliteConnection.ClearAllPools();
        Directory.Delete(_dir, true);
        return Task.CompletedTask;
    }

    private static VerifierAgentRecord Agent(int i) => new()
    {
        AgentId = $"agent-{i:D4}",
        Config = new VerifierAgentConfig { Ip = "127.0.0.1", Port = 9002, AkTpm = "AAAA" },
        State = OperationalState.Start,
    };

    private async Task<List<VerifierAgentRecord>> InsertAsync(int n)
    {
        var list = Enumerable.Range(0, n).Select(Agent).ToList();
        foreach (var a in list) Assert.True(await _store.InsertVerifierAgentAsync(a));
        return list;
    }

    private static VerifierAgentRecord Judged(VerifierAgentRecord r, long count) => r with
    {
        State = OperationalState.GetQuote,
        AttestationCount = count,
        LastSuccessfulAttestation = 1_700_000_000 + count,
        Progress = r.Progress with { Clock = (ulong)count, LastNonce = $"nonce{count}" },
    };

    [Fact]
    public async Task BatchUpdateWritesEveryExistingAgentAndAnswersFalseForAMissingOne()
    {
        var agents = await InsertAsync(3);
        var batch = new[] { Judged(agents[0], 5), Judged(Agent(99), 1), Judged(agents[2], 7) with { SeverityLevel = 6, LastEventId = "pcr_validation.invalid_pcr_15", LastReceivedQuote = 1_700_000_123 } };

        var done = await _store.UpdateVerifierAgentsAsync(batch);

        Assert.Equal([true, false, true], done);
        var a0 = await _store.GetVerifierAgentAsync(agents[0].AgentId);
        Assert.Equal(5, a0!.AttestationCount);
        Assert.Equal(OperationalState.GetQuote, a0.State);
        Assert.Equal("nonce5", a0.Progress.LastNonce);
        Assert.Equal(0, (await _store.GetVerifierAgentAsync(agents[1].AgentId))!.AttestationCount); // not in the batch: unchanged
        // Every field of a later record of the group is its own, not the first record's (the group shares one command).
        var a2 = (await _store.GetVerifierAgentAsync(agents[2].AgentId))!;
        Assert.Equal(7, a2.AttestationCount);
        Assert.Equal(6, a2.SeverityLevel);
        Assert.Equal("pcr_validation.invalid_pcr_15", a2.LastEventId);
        Assert.Equal(1_700_000_123, a2.LastReceivedQuote);
        Assert.Equal(1_700_000_007, a2.LastSuccessfulAttestation);
        Assert.Equal("nonce7", a2.Progress.LastNonce);
        Assert.Null(a0.LastEventId);
        Assert.Null(await _store.GetVerifierAgentAsync(Agent(99).AgentId)); // an update never inserts
        Assert.Empty(await _store.UpdateVerifierAgentsAsync([]));
    }

    [Fact]
    public async Task VerdictsQueuedWhileTheStoreIsBusyAreWrittenTogetherInOneCall()
    {
        var agents = await InsertAsync(101);
        var gate = GateStore.Wrap(_store);
        await using var writer = new VerdictWriter(gate.Store, null);

        // The first verdict holds the store; the other 100 queue up meanwhile and must go in one call, not 100.
        var first = writer.WriteAsync(Judged(agents[0], 1));
        await gate.FirstCallStarted.Task.WaitAsync(TimeSpan.FromMinutes(2));
        var rest = agents.Skip(1).Select((a, i) => writer.WriteAsync(Judged(a, i + 2))).ToList();
        gate.Release.SetResult();

        Assert.True(await first);
        Assert.All(await Task.WhenAll(rest), Assert.True);
        Assert.Equal([1, 100], gate.BatchSizes);
        Assert.Equal((2L, 101L), writer.Counts);
        foreach (var (a, i) in agents.Select((a, i) => (a, i)))
            Assert.Equal(i + 1, (await _store.GetVerifierAgentAsync(a.AgentId))!.AttestationCount);
    }

    [Fact]
    public async Task AnAgentRemovedMeanwhileIsAnsweredFalseAndTheOthersAreStillWritten()
    {
        var agents = await InsertAsync(2);
        await using var writer = new VerdictWriter(_store, null);
        Assert.True(await _store.DeleteVerifierAgentAsync(agents[0].AgentId));

        var results = await Task.WhenAll(writer.WriteAsync(Judged(agents[0], 3)), writer.WriteAsync(Judged(agents[1], 4)));

        Assert.Equal([false, true], results);
        Assert.Null(await _store.GetVerifierAgentAsync(agents[0].AgentId));
        Assert.Equal(4, (await _store.GetVerifierAgentAsync(agents[1].AgentId))!.AttestationCount);
    }

    [Fact]
    public async Task AStoreFailureReachesEveryWaitingWatchAndTheWriterCarriesOn()
    {
        var agents = await InsertAsync(2);
        bool failing = true;
        var logged = new List<string>();
        var faulty = Tests.Provisioning.FaultyStore.Wrap(_store, m => failing && m == nameof(IStore.UpdateVerifierAgentsAsync) ? new StoreUnavailableException("disk gone") : null);
        await using var writer = new VerdictWriter(faulty, m => { lock (logged) logged.Add(m); });

        var ex = await Assert.ThrowsAsync<StoreUnavailableException>(() => writer.WriteAsync(Judged(agents[0], 1)));
        Assert.Equal("disk gone", ex.Message);
        Assert.Contains(logged, l => l.Contains("disk gone", StringComparison.Ordinal));
        Assert.Equal(0, (await _store.GetVerifierAgentAsync(agents[0].AgentId))!.AttestationCount);

        failing = false;
        Assert.True(await writer.WriteAsync(Judged(agents[1], 2)));
        Assert.Equal(2, (await _store.GetVerifierAgentAsync(agents[1].AgentId))!.AttestationCount);
    }

    [Fact]
    public async Task DisposeWritesWhatIsQueuedAndLaterWritesGoStraightToTheStore()
    {
        var agents = await InsertAsync(2);
        var writer = new VerdictWriter(_store, null);
        var queued = writer.WriteAsync(Judged(agents[0], 9));
        await writer.DisposeAsync();
        Assert.True(queued.IsCompletedSuccessfully && queued.Result);
        Assert.True(await writer.WriteAsync(Judged(agents[1], 8)));
        Assert.Equal(9, (await _store.GetVerifierAgentAsync(agents[0].AgentId))!.AttestationCount);
        Assert.Equal(8, (await _store.GetVerifierAgentAsync(agents[1].AgentId))!.AttestationCount);
    }

    /// <summary>Forwards to a real store; its first batch update waits for the test's release, and every batch's size is kept.</summary>
    public class GateStore : DispatchProxy
    {
        public IStore Inner { get; private set; } = null!;
        public TaskCompletionSource FirstCallStarted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public List<int> BatchSizes { get; } = [];

        public static GateStore Wrap(IStore inner)
        {
            var p = Create<IStore, GateStore>();
            var g = (GateStore)(object)p;
            g.Inner = inner;
            return g;
        }

        public IStore Store => (IStore)(object)this;

        protected override object? Invoke(MethodInfo? targetMethod, object?[]? args)
        {
            if (targetMethod!.Name == nameof(IStore.UpdateVerifierAgentsAsync))
            {
                var batch = (IReadOnlyList<VerifierAgentRecord>)args![0]!;
                int n;
                lock (BatchSizes) { BatchSizes.Add(batch.Count); n = BatchSizes.Count; }
                return n == 1 ? GatedAsync(batch, (CancellationToken)args[1]!) : Inner.UpdateVerifierAgentsAsync(batch, (CancellationToken)args[1]!);
            }
            try { return targetMethod.Invoke(Inner, args); }
            catch (TargetInvocationException tie) { throw tie.InnerException!; }
        }

        private async Task<bool[]> GatedAsync(IReadOnlyList<VerifierAgentRecord> batch, CancellationToken ct)
        {
            FirstCallStarted.SetResult();
            await Release.Task.ConfigureAwait(false);
            return await Inner.UpdateVerifierAgentsAsync(batch, ct).ConfigureAwait(false);
        }
    }
}
