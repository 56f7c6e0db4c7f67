using System.Security.Cryptography;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Station;

/// <summary>
/// After provisioning (spec 001): the station watches the registrar's rows in its store and, when a verifier is configured,
/// the verifier's verdicts, and appends <c>REGISTERED</c>, <c>ATTESTING</c> and <c>ATTESTATION-FAILED</c> to the devices'
/// histories (only on a change), running the <c>attestation-failed</c> hook on a failure. A device is matched to an agent by
/// its EK certificate: the SHA-256 the manufacturing record holds and the certificate the agent registered.
/// </summary>
public sealed partial class StationService : IAsyncDisposable
{
    private CancellationTokenSource? _watchCts;
    private Task? _watch;
    private long _watchRounds;
    private string? _watchError;

    public long WatchRounds => Interlocked.Read(ref _watchRounds);
    public string? WatchError => _watchError;

    /// <summary>Starts the watch loop: one round now, then every <paramref name="interval"/>.</summary>
    public void StartWatch(TimeSpan interval, Func<CancellationToken, Task<IReadOnlyDictionary<string, VerifierAgentStatus>>>? verifier)
    {
        if (_watch is not null) return;
        _watchCts = new CancellationTokenSource();
        var ct = _watchCts.Token;
        _watch = Task.Run(async () =>
        {
            while (!ct.IsCancellationRequested)
            {
                try
                {
                    await WatchOnceAsync(verifier is null ? null : await verifier(ct).ConfigureAwait(false), ct).ConfigureAwait(false);
                    _watchError = null;
                }
                catch (OperationCanceledException) when (ct.IsCancellationRequested) { break; }
                catch (Exception ex) { _watchError = ex.Message; }
                Interlocked.Increment(ref _watchRounds);
                try { await Task.Delay(interval, ct).ConfigureAwait(false); }
                catch (OperationCanceledException) { break; }
            }
        }, CancellationToken.None);
    }

    /// <summary>
    /// One round: each active registered agent whose EK certificate is a provisioned device's moves that device to REGISTERED
    /// (once, after PROVISIONER-FINISHED); with <paramref name="verdicts"/>, a passing agent moves to ATTESTING and a failing
    /// one to ATTESTATION-FAILED. Returns the number of states appended.
    /// </summary>
    public async Task<int> WatchOnceAsync(IReadOnlyDictionary<string, VerifierAgentStatus>? verdicts, CancellationToken ct = default)
    {
        int appended = 0;
        foreach (var id in await _store.ListRegistrarAgentIdsAsync(ct).ConfigureAwait(false))
        {
            var agent = await _store.GetRegistrarAgentAsync(id, ct).ConfigureAwait(false);
            if (agent is not { Active: true, EkCert: { } ek }) continue;
            string fingerprint = Convert.ToHexString(SHA256.HashData(ek));
            var record = (await _store.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery { EkFingerprint = fingerprint, Limit = 1 }, ct).ConfigureAwait(false)).FirstOrDefault();
            if (record is null) continue;
            var history = (await _store.GetDeviceHistoryAsync(record.Serial, ct).ConfigureAwait(false)).Where(h => h.Vendor == record.Vendor).ToList();
            if (history.Count == 0) continue;
            string last = history[^1].State;
            if (last == DeviceStates.ProvisionerFinished)
            {
                await AppendStateAsync(record.Serial, record.Vendor, DeviceStates.Registered, $"agent {id}", agent.Ip, record.DeviceName, ct).ConfigureAwait(false);
                await _store.AppendDeviceLogAsync(new DeviceLogLine
                {
                    Serial = record.Serial, Vendor = record.Vendor, Log = DeviceLogType.Provisioner,
                    Line = $"registered with the registrar as agent {id} (registration {agent.RegCount}, activated {(agent.Activated is { } a ? a.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'") : "-")})",
                }, ct).ConfigureAwait(false);
                last = DeviceStates.Registered;
                appended++;
            }
            if (verdicts is null || !verdicts.TryGetValue(id, out var status) || last is not (DeviceStates.Registered or DeviceStates.Attesting or DeviceStates.AttestationFailed))
                continue;
            var state = (OperationalState)status.OperationalState;
            var verdict = OperationalStates.Status(state);
            string name = Enum.IsDefined(state) ? OperationalStates.KeylimeName(state) : "UNKNOWN";
            if (verdict == AttestationStatus.Pass && last != DeviceStates.Attesting)
            {
                await AppendStateAsync(record.Serial, record.Vendor, DeviceStates.Attesting, $"operational_state {status.OperationalState} ({name})", null, record.DeviceName, ct).ConfigureAwait(false);
                appended++;
            }
            else if (verdict == AttestationStatus.Fail && last != DeviceStates.AttestationFailed)
            {
                string reason = $"operational_state {status.OperationalState} ({name})";
                await AppendStateAsync(record.Serial, record.Vendor, DeviceStates.AttestationFailed, reason, null, record.DeviceName, ct).ConfigureAwait(false);
                appended++;
                var progress = new ProvisioningProgress
                {
                    Serial = record.Serial, Vendor = record.Vendor, DeviceName = record.DeviceName, DeviceVersion = record.DeviceVersion,
                    Source = agent.Ip ?? "", ApiKeyId = record.ApiKeyId,
                };
                progress.FailureReason = reason;
                progress.Record = record;
                string? failed = await StageAsync(progress, HookStages.AttestationFailed, ct).ConfigureAwait(false);
                if (failed is not null)
                    await _store.AppendDeviceLogAsync(new DeviceLogLine { Serial = record.Serial, Vendor = record.Vendor, Log = DeviceLogType.Provisioner, Line = $"the attestation-failed hook failed: {failed}" }, ct).ConfigureAwait(false);
            }
        }
        return appended;
    }

    public async ValueTask DisposeAsync()
    {
        if (_watchCts is null) return;
        _watchCts.Cancel();
        try { if (_watch is not null) await _watch.ConfigureAwait(false); } catch (Exception) { }
        _watchCts.Dispose();
        _watchCts = null;
    }
}
