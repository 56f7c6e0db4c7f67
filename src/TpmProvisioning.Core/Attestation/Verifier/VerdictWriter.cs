using System.Threading.Channels;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Attestation.Verifier;

/// <summary>
/// Writes the verifier's verdicts to the store in groups: every watch hands its record here and waits until it is stored, and
/// one writer loop stores whatever has queued up meanwhile in one call (<see cref="IStore.UpdateVerifierAgentsAsync"/>: one
/// transaction), so 5,000 verdicts a second cost a few dozen commits instead of 5,000 competing ones (SQLite serialises writers,
/// and competing writers wait in its busy handler). A lone verdict is written at once: nothing waits for a batch to fill.
/// </summary>
internal sealed class VerdictWriter : IAsyncDisposable
{
    /// <summary>Most records written in one call.</summary>
    public const int MaxBatch = 512;

    private readonly IStore _store;
    private readonly Action<string>? _log;
    private readonly Channel<Pending> _queue = Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Task _loop;
    private long _batches, _written;

    private sealed class Pending(VerifierAgentRecord record) : TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously)
    {
        public VerifierAgentRecord Record { get; } = record;
    }

    public VerdictWriter(IStore store, Action<string>? log)
    {
        _store = store;
        _log = log;
        _loop = Task.Run(LoopAsync);
    }

    /// <summary>Commits so far and records written (for the load bench and diagnostics).</summary>
    public (long Batches, long Records) Counts => (Interlocked.Read(ref _batches), Interlocked.Read(ref _written));

    /// <summary>
    /// Stores <paramref name="record"/>; true when it was, false when the agent is no longer in the store. Not cancellable on purpose:
    /// a watch that is stopped still waits for its last write, so the tenant's write that follows the stop is never overwritten.
    /// </summary>
    public Task<bool> WriteAsync(VerifierAgentRecord record)
    {
        var p = new Pending(record);
        if (!_queue.Writer.TryWrite(p))
            return _store.UpdateVerifierAgentAsync(record, CancellationToken.None); // after dispose: write it directly
        return p.Task;
    }

    private async Task LoopAsync()
    {
        var batch = new List<Pending>(MaxBatch);
        var records = new List<VerifierAgentRecord>(MaxBatch);
        while (await _queue.Reader.WaitToReadAsync().ConfigureAwait(false))
        {
            batch.Clear();
            records.Clear();
            while (batch.Count < MaxBatch && _queue.Reader.TryRead(out var p))
            {
                batch.Add(p);
                records.Add(p.Record);
            }
            try
            {
                var done = await _store.UpdateVerifierAgentsAsync(records, CancellationToken.None).ConfigureAwait(false);
                for (int i = 0; i < batch.Count; i++) batch[i].TrySetResult(done[i]);
                Interlocked.Increment(ref _batches);
                Interlocked.Add(ref _written, batch.Count);
            }
            catch (Exception ex)
            {
                // The whole group failed (store unavailable): each watch sees the failure as it would have seen its own write fail.
                _log?.Invoke($"Verifier: storing {batch.Count} verdicts failed: {ex.Message}");
                foreach (var p in batch) p.TrySetException(ex);
            }
        }
    }

    /// <summary>Writes what is queued, then stops.</summary>
    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await _loop.ConfigureAwait(false);
    }
}
