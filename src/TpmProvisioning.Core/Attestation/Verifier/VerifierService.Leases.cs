using System.Collections.Concurrent;

namespace TpmProvisioning.Attestation.Verifier;

/// <summary>
/// The verifier's side of <see cref="VerifierLeases"/>: the few hooks the watch loop and the tenant routes call. Without leases
/// (no <see cref="Leases"/>, or a store that is not shared) every hook keeps the single-node behaviour.
/// </summary>
public sealed partial class VerifierService : IVerifierLeaseHost
{
    private readonly ConcurrentDictionary<string, CancellationTokenSource> _pendingStarts = new(StringComparer.Ordinal);
    /// <summary>Watches between asking their agent and storing the verdict (not waiting for their next quote).</summary>
    private readonly ConcurrentDictionary<string, byte> _inFlight = new(StringComparer.Ordinal);

    /// <summary>
    /// The server's clean stop. No more claims or renewals; on a shared store the quotes in flight are then judged and stored
    /// (the leases are still this node's in the store, so the writes are fenced as always) for up to <paramref name="drainLimit"/>,
    /// the watches waiting for their next quote end at once, a watch that did not finish in time is cut short and its agent's
    /// record stamped (its next holder then waits a whole interval, as after a give-back), and every lease goes back, so the
    /// other servers take the agents at once without asking any of them twice in one interval. Without leases: the watches end.
    /// </summary>
    public async Task ShutdownAsync(TimeSpan drainLimit)
    {
        if (Leases is { } leases) await leases.StopAsync(leave: false).ConfigureAwait(false);
        if (Shared)
        {
            foreach (var (id, w) in _watches)
                if (!_inFlight.ContainsKey(id)) await w.Cts.CancelAsync().ConfigureAwait(false);
            var inFlight = _watches.Where(kv => _inFlight.ContainsKey(kv.Key)).ToList();
            var drained = Task.WhenAll(inFlight.Select(kv => kv.Value.Task));
            await Task.WhenAny(drained, Task.Delay(drainLimit, _time)).ConfigureAwait(false);
            var cut = inFlight.Where(kv => !kv.Value.Task.IsCompleted).Select(kv => kv.Key).ToList();
            await DisposeAsync().ConfigureAwait(false);
            foreach (var id in cut)
            {
                try { await Leases!.StampCutShortAsync(id).ConfigureAwait(false); }
                catch (Storage.StoreUnavailableException ex) { _log?.Invoke($"Verifier: could not stamp {id} before giving its lease back: {ex.Message}"); }
            }
        }
        else await DisposeAsync().ConfigureAwait(false);
        if (Leases is { } l) await l.LeaveAsync().ConfigureAwait(false);
    }

    /// <summary>The lease component when servers share the store; set before the server starts, then <see cref="VerifierLeases.Start"/>.</summary>
    public VerifierLeases? Leases { get; set; }

    private bool Shared => Leases is { Shared: true };

    /// <summary>Whether a tenant may see and change this agent here: its own agents, or every agent of a shared store (a cluster is one verifier to its tenants).</summary>
    private bool Visible([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] VerifierAgentRecord? r) => r is not null && (Shared || r.VerifierId == _settings.VerifierId);

    private bool MayJudge(string agentId) => Leases?.MayJudge(agentId) ?? true;

    private Task<bool> WriteVerdictAsync(VerifierAgentRecord r, CancellationToken ct) =>
        Shared ? Leases!.WriteAsync(r, ct) : _writer.WriteAsync(r);

    private Task<bool> TenantWriteAsync(VerifierAgentRecord r, CancellationToken ct) =>
        Leases is { } l ? l.TenantWriteAsync(r, ct) : _store.UpdateVerifierAgentAsync(r, ct);

    /// <summary>After an add or a reactivation: watch here when this server could claim the agent (always, single-node).</summary>
    private async Task WatchIfClaimedAsync(string agentId, CancellationToken ct)
    {
        if (Leases is { Shared: true } l && !await l.ClaimAsync(agentId, ct).ConfigureAwait(false)) return;
        StartWatch(agentId);
    }

    bool IVerifierLeaseHost.IsWatching(string agentId) => _watches.ContainsKey(agentId) || _pendingStarts.ContainsKey(agentId);

    void IVerifierLeaseHost.WatchClaimed(string agentId, TimeSpan delay)
    {
        if (_stopping.IsCancellationRequested) return;
        if (delay <= TimeSpan.Zero) { StartWatch(agentId); return; }
        var cts = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token);
        if (_pendingStarts.TryRemove(agentId, out var old)) { old.Cancel(); old.Dispose(); }
        _pendingStarts[agentId] = cts;
        _ = Task.Run(async () =>
        {
            try
            {
                await Task.Delay(delay, _time, cts.Token).ConfigureAwait(false);
                if (_pendingStarts.TryRemove(new KeyValuePair<string, CancellationTokenSource>(agentId, cts))) StartWatch(agentId);
            }
            catch (OperationCanceledException) { }
        });
    }

    async Task<bool> IVerifierLeaseHost.UnwatchAsync(string agentId, bool graceful)
    {
        if (_pendingStarts.TryRemove(agentId, out var pending)) { pending.Cancel(); pending.Dispose(); }
        if (!_watches.TryGetValue(agentId, out var w)) return true;
        if (graceful)
        {
            // MayJudge is already false for it: the loop stores the verdict of a quote in flight, then ends at its next pause.
            var limit = Task.Delay(_settings.QuoteInterval * 2 + TimeSpan.FromSeconds(5), _time, _stopping.Token);
            try { if (await Task.WhenAny(w.Task, limit).ConfigureAwait(false) == w.Task) return true; }
            catch (OperationCanceledException) { }
        }
        await StopWatchAsync(agentId).ConfigureAwait(false);
        return false;
    }
}
