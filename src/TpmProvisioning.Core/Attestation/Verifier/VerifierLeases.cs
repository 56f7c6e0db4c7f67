using System.Collections.Concurrent;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Attestation.Verifier;

/// <summary>What the lease component asks of the verifier it serves.</summary>
public interface IVerifierLeaseHost
{
    /// <summary>Start watching a claimed agent, its first quote after <paramref name="delay"/>.</summary>
    void WatchClaimed(string agentId, TimeSpan delay);

    /// <summary>True while the agent is watched here (or its first quote is scheduled).</summary>
    bool IsWatching(string agentId);

    /// <summary>
    /// Stop watching the agent and wait until its loop has ended (nothing more is written for it). <paramref name="graceful"/>:
    /// let a quote in flight be judged and stored first (the loop ends at its next pause), instead of cancelling it. True when
    /// no loop was cut short; false when one was cancelled, so a quote the agent answered may have no stored verdict.
    /// </summary>
    Task<bool> UnwatchAsync(string agentId, bool graceful = false);
}

/// <summary>
/// Splits the verifier's agents between the servers that share one store, through leases in the store (Keylime splits them by
/// <c>verifier_id</c>; here the split moves by itself). Every <see cref="Tick"/> the component records a heartbeat, renews the
/// leases it holds, and claims expired or unowned watched agents up to its fair share (watched agents / live verifiers) with
/// <c>FOR UPDATE SKIP LOCKED</c>, or gives back what it holds above that share, so a joining server gets work and a dead one's
/// agents move once its leases expire. The watch loop asks <see cref="MayJudge"/> before each quote and writes through
/// <see cref="WriteAsync"/>, a write fenced by the lease: a verifier that lost an agent cannot store a verdict for it.
/// The local deadline of a lease ends a margin before the store's, so an old holder stops before a new one may start.
/// On a store that is not shared (SQLite) the component is inert: it holds every agent and writes unfenced.
/// </summary>
public sealed class VerifierLeases : IAsyncDisposable
{
    private readonly IStore _store;
    private readonly TimeProvider _time;
    private readonly Action<string>? _log;
    private readonly ConcurrentDictionary<string, DateTimeOffset> _held = new(StringComparer.Ordinal);
    /// <summary>Agents being given back: still leased in the store until their watch has ended, no longer judged here.</summary>
    private readonly ConcurrentDictionary<string, Task> _releasing = new(StringComparer.Ordinal);
    /// <summary>When a claim made outside a round (<see cref="ClaimAsync"/>) was committed: a round whose renewal read the store
    /// before that must not take the agent for lost.</summary>
    private readonly ConcurrentDictionary<string, DateTimeOffset> _claimedOutside = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stop = new();
    private readonly SemaphoreSlim _round = new(1, 1);
    private IVerifierLeaseHost? _host;
    private Task? _loop;

    public VerifierLeases(IStore store, string verifierId, TimeSpan quoteInterval, TimeSpan? lease = null, TimeProvider? time = null, Action<string>? log = null)
    {
        _store = store ?? throw new ArgumentNullException(nameof(store));
        VerifierId = verifierId ?? throw new ArgumentNullException(nameof(verifierId));
        QuoteInterval = quoteInterval;
        // A few quote intervals, and never so short that a busy machine's pauses lose leases.
        Lease = lease ?? TimeSpan.FromTicks(Math.Max(TimeSpan.FromSeconds(6).Ticks, quoteInterval.Ticks * 3));
        if (Lease < TimeSpan.FromSeconds(1)) throw new ArgumentOutOfRangeException(nameof(lease), "A lease must last at least one second.");
        Tick = TimeSpan.FromTicks(Math.Max(TimeSpan.FromMilliseconds(200).Ticks, Lease.Ticks / 5));
        _time = time ?? TimeProvider.System;
        _log = log;
    }

    public string VerifierId { get; }
    public TimeSpan QuoteInterval { get; }
    /// <summary>How long a claim lasts without renewal: a dead verifier's agents move within this period (plus one <see cref="Tick"/>).</summary>
    public TimeSpan Lease { get; }
    /// <summary>The period of heartbeat, renewal and claims.</summary>
    public TimeSpan Tick { get; }
    /// <summary>True when the store is shared (PostgreSQL) and leases decide who judges which agent.</summary>
    public bool Shared => _store.SupportsLeases;
    /// <summary>Agents this verifier holds a live lease on now.</summary>
    public int HeldCount => _held.Count;
    /// <summary>The address the verifier reports in the cluster view.</summary>
    public string? Contact { get; set; }
    /// <summary>Rounds that failed because the store was unreachable (leases lapse meanwhile; judging stops until it is back).</summary>
    public long FailedRounds => Interlocked.Read(ref _failedRounds);
    private long _failedRounds;

    /// <summary>Starts the lease loop for <paramref name="host"/> (nothing on a store that is not shared).</summary>
    public void Start(IVerifierLeaseHost host)
    {
        _host = host ?? throw new ArgumentNullException(nameof(host));
        if (!Shared || _loop is not null) return;
        _loop = Task.Run(LoopAsync);
    }

    /// <summary>True when this verifier may judge the agent now: it holds a lease whose local deadline has not passed.</summary>
    public bool MayJudge(string agentId) => !Shared || (_held.TryGetValue(agentId, out var until) && _time.GetUtcNow() < until);

    /// <summary>
    /// Stores a verdict: fenced by the lease on a shared store (and stamped with the time it is stored, which is after the
    /// quote was answered: the next holder schedules from it); false when the agent is gone or no longer ours.
    /// </summary>
    public Task<bool> WriteAsync(VerifierAgentRecord record, CancellationToken ct) =>
        Shared ? _store.UpdateLeasedVerifierAgentAsync(record with { Updated = _time.GetUtcNow() }, VerifierId, ct) : _store.UpdateVerifierAgentAsync(record, ct);

    /// <summary>A tenant's change to an agent (stop, reactivate): on a shared store it also ends the agent's lease, wherever held.</summary>
    public async Task<bool> TenantWriteAsync(VerifierAgentRecord record, CancellationToken ct)
    {
        if (!Shared) return await _store.UpdateVerifierAgentAsync(record, ct).ConfigureAwait(false);
        _held.TryRemove(record.AgentId, out _);
        return await _store.UpdateVerifierAgentReleasingLeaseAsync(record, ct).ConfigureAwait(false);
    }

    /// <summary>Claims an agent this server was just asked to watch (added or reactivated); true when it is now ours to watch.</summary>
    public async Task<bool> ClaimAsync(string agentId, CancellationToken ct)
    {
        if (!Shared) return true;
        var start = _time.GetUtcNow();
        if (!await _store.ClaimVerifierAgentAsync(VerifierId, agentId, Lease, ct).ConfigureAwait(false)) return false;
        _claimedOutside[agentId] = _time.GetUtcNow();
        _held[agentId] = start + LocalLease;
        return true;
    }

    /// <summary>The local deadline of a lease: a fifth shorter than the store's, so this verifier stops before another may start.</summary>
    private TimeSpan LocalLease => Lease - Tick;

    private async Task LoopAsync()
    {
        var ct = _stop.Token;
        while (!ct.IsCancellationRequested)
        {
            try { await RoundAsync(ct).ConfigureAwait(false); }
            catch (OperationCanceledException) when (ct.IsCancellationRequested) { break; }
            catch (Exception ex)
            {
                Interlocked.Increment(ref _failedRounds);
                _log?.Invoke($"Verifier leases: round failed ({ex.GetType().Name}: {ex.Message}); held leases lapse until the store answers");
            }
            try { await Task.Delay(Tick, _time, ct).ConfigureAwait(false); }
            catch (OperationCanceledException) { break; }
        }
    }

    /// <summary>One round: heartbeat, renew, then claim up to or give back down to the fair share. Public for tests.</summary>
    public async Task RoundAsync(CancellationToken ct = default)
    {
        if (!Shared || _host is null) return;
        await _round.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var start = _time.GetUtcNow();
            await _store.HeartbeatVerifierAsync(VerifierId, Contact, Lease, ct).ConfigureAwait(false);
            var renewed = await _store.RenewVerifierLeasesAsync(VerifierId, Lease, ct).ConfigureAwait(false);
            var renewedSet = new HashSet<string>(renewed.Select(c => c.AgentId), StringComparer.Ordinal);
            var now0 = _time.GetUtcNow();
            foreach (var c in renewed)
            {
                _claimedOutside.TryRemove(c.AgentId, out _);
                if (_releasing.ContainsKey(c.AgentId)) continue;
                _held[c.AgentId] = start + LocalLease;
                // Held but not watched (its watch paused while the store was down): watch it again on its rhythm.
                if (!_host.IsWatching(c.AgentId)) _host.WatchClaimed(c.AgentId, Due(c, now0));
            }
            foreach (var lost in _held.Keys.Where(k => !renewedSet.Contains(k) && !_releasing.ContainsKey(k)).ToList())
            {
                // Claimed (a tenant's add) after this round's renewal read the store: still ours, renewed next round. Taking it for
                // lost would cut its first quote short and watch it again from the last stored verdict, asking twice in an interval.
                if (_claimedOutside.TryGetValue(lost, out var claimedAt) && claimedAt >= start) continue;
                _claimedOutside.TryRemove(lost, out _);
                // Expired (a store outage, a long pause) or taken by a tenant's change: stop watching it here.
                _held.TryRemove(lost, out _);
                await _host.UnwatchAsync(lost).ConfigureAwait(false);
            }

            var (live, watched) = await _store.VerifierClusterSizeAsync(ct).ConfigureAwait(false);
            int fair = (int)Math.Ceiling(watched / (double)Math.Max(1, live));
            int held = _held.Count;
            if (held < fair)
            {
                var claims = await _store.ClaimVerifierAgentsAsync(VerifierId, fair - held, Lease, ct).ConfigureAwait(false);
                var now = _time.GetUtcNow();
                foreach (var c in claims)
                {
                    _held[c.AgentId] = start + LocalLease;
                    _host.WatchClaimed(c.AgentId, Due(c, now));
                }
                if (claims.Count > 0) _log?.Invoke($"Verifier leases: {VerifierId} claimed {claims.Count} agent(s) (fair share {fair} of {watched} over {live} verifier(s))");
            }
            else if (held > fair && live > 1)
            {
                // A verifier joined: give back the surplus. Each agent is released only once its watch has ended (a quote in
                // flight is judged and stored first), so its next holder, which starts one interval after the last stored
                // verdict, never judges it twice in an interval. The lease stays ours (renewed) until then.
                var surplus = _held.Keys.Where(k => !_releasing.ContainsKey(k)).Order(StringComparer.Ordinal).Take(held - fair).ToList();
                foreach (var id in surplus) _held.TryRemove(id, out _);
                var giveBack = Task.Run(async () =>
                {
                    try
                    {
                        var ended = await Task.WhenAll(surplus.Select(id => _host.UnwatchAsync(id, graceful: true))).ConfigureAwait(false);
                        for (int k = 0; k < surplus.Count; k++)
                            if (!ended[k]) await StampCutShortAsync(surplus[k]).ConfigureAwait(false);
                        await _store.ReleaseVerifierLeasesAsync(VerifierId, surplus, CancellationToken.None).ConfigureAwait(false);
                        _log?.Invoke($"Verifier leases: {VerifierId} gave back {surplus.Count} agent(s) (fair share {fair})");
                    }
                    catch (StoreUnavailableException ex) { _log?.Invoke($"Verifier leases: giving back {surplus.Count} agent(s) failed ({ex.Message}); their leases expire instead"); }
                    finally { foreach (var id in surplus) _releasing.TryRemove(id, out _); }
                }, CancellationToken.None);
                foreach (var id in surplus) _releasing[id] = giveBack;
            }
        }
        finally { _round.Release(); }
    }

    /// <summary>
    /// A watch given back that had to be cut short (it did not end by itself in time) may have had a quote answered whose verdict
    /// was never stored. Its next holder schedules from the last stored verdict, so stamp the record now, while the lease is still
    /// ours (a fenced write): the next quote is then due one interval after this, never within the interval just asked.
    /// </summary>
    public async Task StampCutShortAsync(string agentId)
    {
        var r = await _store.GetVerifierAgentAsync(agentId, CancellationToken.None).ConfigureAwait(false);
        if (r is not null) await _store.UpdateLeasedVerifierAgentAsync(r with { Updated = _time.GetUtcNow() }, VerifierId, CancellationToken.None).ConfigureAwait(false);
    }

    /// <summary>Keeps the agent's rhythm: its next quote is one interval after the last verdict stored for it.</summary>
    private TimeSpan Due(LeaseClaim c, DateTimeOffset now)
    {
        var due = c.LastJudged + QuoteInterval - now;
        return due > TimeSpan.Zero ? due : TimeSpan.Zero;
    }

    /// <summary>Stops the loop (no more claims or renewals). <paramref name="leave"/>: also give the leases back at once (a clean
    /// stop, once the verifier's watches have ended) instead of letting them expire.</summary>
    public async Task StopAsync(bool leave)
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        if (_loop is not null)
        {
            try { await _loop.ConfigureAwait(false); } catch (OperationCanceledException) { }
        }
        _held.Clear();
        foreach (var t in _releasing.Values.Distinct().ToList())
        {
            try { await t.ConfigureAwait(false); } catch (Exception) { }
        }
        if (leave) await LeaveAsync().ConfigureAwait(false);
    }

    /// <summary>Gives every lease back and leaves the cluster view; call after the verifier's watches have stopped.</summary>
    public async Task LeaveAsync()
    {
        _held.Clear();
        if (!Shared) return;
        try { await _store.LeaveVerifierClusterAsync(VerifierId, CancellationToken.None).ConfigureAwait(false); }
        catch (StoreUnavailableException ex) { _log?.Invoke($"Verifier leases: could not give back the leases ({ex.Message}); they expire in {Lease.TotalSeconds:0} s"); }
    }

    /// <summary>
    /// The verifier id of a server on a shared store that was given none: generated once and kept in
    /// <c>&lt;DataPath&gt;/verifier/verifier-id</c>, so a restarted server is the same verifier.
    /// </summary>
    public static string StableVerifierId(string dataPath)
    {
        var dir = Path.Combine(Path.GetFullPath(dataPath), "verifier");
        var file = Path.Combine(dir, "verifier-id");
        if (File.Exists(file))
        {
            var existing = File.ReadAllText(file).Trim();
            if (KeylimeValidators.IsValidAgentId(existing)) return existing;
        }
        if (!Directory.Exists(dir)) PrivateFiles.CreateFolder(dir);
        var id = "verifier-" + Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(6));
        PrivateFiles.WriteAllBytes(file, System.Text.Encoding.ASCII.GetBytes(id + "\n"));
        return id;
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(leave: false).ConfigureAwait(false);
        _stop.Dispose();
        _round.Dispose();
    }
}
