using System.Diagnostics;
using System.Security.Cryptography;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Station;

/// <summary>
/// The station's engine: it watches provisioning (<see cref="IProvisioningObserver"/>), appending each state and log line to
/// the store, broadcasting state changes in order, and running the enabled hook of each stage through the
/// <see cref="IStationScriptRunner"/> with the configured time limit. Thread-safe: one per server.
/// </summary>
public sealed partial class StationService : IProvisioningObserver
{
    private readonly IStore _store;
    private readonly object _publish = new();
    private long _hooksRun, _hooksFailed, _statesWritten;

    public StationService(IStore store, StationSettings settings, string dataPath)
    {
        _store = store ?? throw new ArgumentNullException(nameof(store));
        Settings = settings ?? new StationSettings();
        Scripts = new StationScripts(Settings.ScriptsDirectory ?? Path.Combine(Path.GetFullPath(dataPath), "station", "scripts"), Settings.MaxScriptBytes);
        Tokens = new StationTokenManager(store);
        _dataPath = dataPath;
        Started = DateTimeOffset.UtcNow;
    }

    public StationSettings Settings { get; }
    public StationScripts Scripts { get; }
    public StationTokenManager Tokens { get; }
    public DateTimeOffset Started { get; }
    public long HooksRun => Interlocked.Read(ref _hooksRun);
    public long HooksFailed => Interlocked.Read(ref _hooksFailed);
    public long StatesWritten => Interlocked.Read(ref _statesWritten);

    /// <summary>Raised after each state change is stored, in the order of their ids.</summary>
    public event Action<StationEvent>? StateChanged;

    /// <summary>Raised for each line the script runner reports (service log of <c>script-runner</c>).</summary>
    public event Action<string>? RunnerLog;

    // ------------------------------------------------------------------ observer

    public Task StateAsync(ProvisioningProgress progress, string state, string? reason, CancellationToken ct) =>
        AppendStateAsync(progress.Serial, progress.Vendor, state, reason, progress.Source, progress.DeviceName, ct, progress);

    /// <summary>Appends a state (also for states the registrar and verifier report) and broadcasts it.</summary>
    public async Task AppendStateAsync(string serial, string vendor, string state, string? reason, string? address, string? name, CancellationToken ct,
        ProvisioningProgress? progress = null)
    {
        var change = new DeviceStateChange { Serial = serial, Vendor = vendor, State = state, Detail = reason, Address = address, DeviceName = name };
        // One writer at a time so ids and broadcasts come in the same order.
        StationEvent ev;
        lock (_publish)
        {
            long id = _store.AppendDeviceStateAsync(change, ct).GetAwaiter().GetResult();
            ev = new StationEvent(id, change.Time, serial, vendor, state, reason, address);
            Interlocked.Increment(ref _statesWritten);
            try { StateChanged?.Invoke(ev); } catch (Exception) { }
        }
        if (state == DeviceStates.ProvisionerFinished && progress?.Record is { Id: > 0 } record)
        {
            var image = await ImageForDeviceAsync(progress.Vendor, progress.DeviceName, progress.DeviceVersion, ct).ConfigureAwait(false);
            await _store.UpsertStationRecordInfoAsync(new StationRecordInfo
            {
                RecordId = record.Id, EkIssuer = progress.EkIssuer, CaKeyLabel = progress.CaKeyLabel, CaFingerprint = progress.CaFingerprint,
                ImageName = image.Name, ImageSha256 = image.Sha256,
            }, ct).ConfigureAwait(false);
        }
    }

    public async Task LogAsync(ProvisioningProgress progress, DeviceLogType log, string line, CancellationToken ct) =>
        await _store.AppendDeviceLogAsync(new DeviceLogLine { Serial = progress.Serial, Vendor = progress.Vendor, Log = log, Line = line }, ct).ConfigureAwait(false);

    public async Task<string?> StageAsync(ProvisioningProgress progress, string stage, CancellationToken ct)
    {
        var hook = Scripts.EnabledHook(stage);
        if (hook is null) return null;
        var log = stage switch
        {
            HookStages.Bootstrap => DeviceLogType.Bootstrap,
            HookStages.ProvisionFailed when progress.FailedPhase == "BOOTSTRAP" => DeviceLogType.Bootstrap,
            HookStages.ProvisionFailed when progress.FailedPhase == "TRIAGE" => DeviceLogType.Triage,
            _ => DeviceLogType.Provisioner,
        };
        async Task Line(string text) =>
            await _store.AppendDeviceLogAsync(new DeviceLogLine { Serial = progress.Serial, Vendor = progress.Vendor, Log = log, Line = text }, CancellationToken.None).ConfigureAwait(false);

        Interlocked.Increment(ref _hooksRun);
        await Line($"hook {hook.Filename} ({stage}) started, limit {(long)Settings.HookTimeout.TotalSeconds} s").ConfigureAwait(false);
        RunnerLog?.Invoke($"{hook.Filename} started for {progress.Vendor}/{progress.Serial}");
        var runner = Settings.ScriptRunner;
        if (runner is null)
        {
            Interlocked.Increment(ref _hooksFailed);
            const string why = "no script runner is available on this server (hooks run when the server is started from the PowerShell module)";
            await Line($"hook {hook.Filename} failed: {why}").ConfigureAwait(false);
            return why;
        }
        ScriptRunResult result;
        var sw = Stopwatch.StartNew();
        try
        {
            result = await runner.RunAsync(new ScriptRunRequest
            {
                Name = hook.Filename, Content = hook.Content ?? "", Variables = VariablesFor(progress, stage), Timeout = Settings.HookTimeout,
            }, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            result = new ScriptRunResult { Succeeded = false, Error = ex.Message, Elapsed = sw.Elapsed };
        }
        foreach (var o in result.Output) await Line($"{hook.Filename}: {o}").ConfigureAwait(false);
        if (result.Succeeded)
        {
            await Line($"hook {hook.Filename} finished in {result.Elapsed.TotalSeconds:0.###} s").ConfigureAwait(false);
            RunnerLog?.Invoke($"{hook.Filename} finished for {progress.Vendor}/{progress.Serial}");
            return null;
        }
        Interlocked.Increment(ref _hooksFailed);
        string reason = result.TimedOut
            ? $"stopped after its time limit of {Settings.HookTimeout.TotalSeconds:0.###} s"
            : result.Error ?? $"exit code {result.ExitCode}";
        await Line($"hook {hook.Filename} failed: {reason}").ConfigureAwait(false);
        RunnerLog?.Invoke($"{hook.Filename} failed for {progress.Vendor}/{progress.Serial}: {reason}");
        return $"{hook.Filename}: {reason}";
    }

    /// <summary>The variables a hook sees: objects, and the original's upper-case names as strings ("" for none).</summary>
    public static IReadOnlyDictionary<string, object?> VariablesFor(ProvisioningProgress p, string stage)
    {
        var r = p.Record;
        return new Dictionary<string, object?>(StringComparer.OrdinalIgnoreCase)
        {
            ["Stage"] = stage,
            ["Device"] = new HookDevice(p.Serial, p.Vendor, p.DeviceName, p.DeviceVersion, p.Source, p.EkFingerprint, p.AkName),
            ["Record"] = r,
            ["TARGET_DEVICE_SERIAL"] = p.Serial,
            ["SERIAL"] = p.Serial,
            ["VENDOR"] = p.Vendor,
            ["DEVICE_NAME"] = p.DeviceName,
            ["DEVICE_VERSION"] = p.DeviceVersion,
            ["EK_FINGERPRINT"] = p.EkFingerprint ?? "",
            ["AK_NAME"] = p.AkName ?? "",
            ["AK_CERT_SERIAL"] = p.AkCertificateSerial ?? "",
            ["PROVISION_FAILED_CONTEXT"] = stage == HookStages.ProvisionFailed ? (p.FailedPhase == "PROVISIONER" ? "provisioning" : (p.FailedPhase ?? "").ToLowerInvariant()) : "",
            ["FAILURE_REASON"] = p.FailureReason ?? "",
        };
    }

    // ------------------------------------------------------------------ reads

    /// <summary>The device with this serial (latest vendor when several share it), or DEVICE_NOT_FOUND.</summary>
    public async Task<StationDeviceDetail> GetDeviceAsync(string serial, CancellationToken ct = default)
    {
        var history = await _store.GetDeviceHistoryAsync(serial, ct).ConfigureAwait(false);
        if (history.Count == 0) throw new StationException(404, "DEVICE_NOT_FOUND", "no device with this serial", "Requested serial: " + Clip(serial));
        var vendor = history[^1].Vendor;
        var mine = history.Where(h => h.Vendor == vendor).ToList();
        var records = await _store.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery { Serial = serial, Vendor = vendor, Limit = 1 }, ct).ConfigureAwait(false);
        var last = mine[^1];
        return new StationDeviceDetail
        {
            Serial = serial, Vendor = vendor, Name = mine.LastOrDefault(h => h.DeviceName is not null)?.DeviceName, State = last.State,
            Address = mine.LastOrDefault(h => h.Address is not null)?.Address, FirstSeen = mine[0].Time, LastSeen = last.Time,
            History = mine, Record = records.FirstOrDefault(),
        };
    }

    public async Task<IReadOnlyList<DeviceLogLine>> GetLogAsync(string serial, string? type, CancellationToken ct = default)
    {
        if (!TryParseLog(type, out var log))
            throw new StationException(404, "LOG_NOT_FOUND", "unknown log type; the logs are bootstrap, triage and provisioner", "Requested log: " + Clip(type ?? ""));
        var history = await _store.GetDeviceHistoryAsync(serial, ct).ConfigureAwait(false);
        if (history.Count == 0) throw new StationException(404, "DEVICE_NOT_FOUND", "no device with this serial", "Requested serial: " + Clip(serial));
        return await _store.GetDeviceLogAsync(serial, log, ct).ConfigureAwait(false);
    }

    public static bool TryParseLog(string? type, out DeviceLogType log)
    {
        log = default;
        switch (type)
        {
            case "bootstrap": log = DeviceLogType.Bootstrap; return true;
            case "triage": log = DeviceLogType.Triage; return true;
            case "provisioner": log = DeviceLogType.Provisioner; return true;
            default: return false;
        }
    }

    /// <summary>The AK public key (SubjectPublicKeyInfo PEM) of the device's latest manufacturing record, or KEY_NOT_FOUND.</summary>
    public async Task<string> GetPublicKeyPemAsync(string serial, CancellationToken ct = default)
    {
        var device = await GetDeviceAsync(serial, ct).ConfigureAwait(false);
        if (device.Record is null) throw new StationException(404, "KEY_NOT_FOUND", "the device has no AK certificate yet (not provisioned)", "Requested serial: " + Clip(serial));
        using var cert = System.Security.Cryptography.X509Certificates.X509CertificateLoader.LoadCertificate(device.Record.AkCertificate);
        return PemEncoding.WriteString("PUBLIC KEY", cert.PublicKey.ExportSubjectPublicKeyInfo()) + "\n";
    }

    /// <summary>Manufacturing rows newest first with their station facts and the registered agent id when the registrar knows the EK.</summary>
    public async Task<IReadOnlyList<ManufacturingRow>> PageManufacturingAsync(long offset, long? limit, CancellationToken ct = default)
    {
        var records = await _store.PageManufacturingRecordsAsync(offset, limit, ct).ConfigureAwait(false);
        var infos = await _store.GetStationRecordInfosAsync(records.Select(r => r.Id).ToList(), ct).ConfigureAwait(false);
        var agents = records.Count == 0 ? new Dictionary<string, string>() : await AgentsByEkAsync(ct).ConfigureAwait(false);
        return records.Select(r => ManufacturingRow.From(r, infos.GetValueOrDefault(r.Id), agents.GetValueOrDefault(r.EkFingerprint))).ToList();
    }

    /// <summary>Registered agents by the SHA-256 of their EK certificate (the registrar's rows in this store).</summary>
    public async Task<Dictionary<string, string>> AgentsByEkAsync(CancellationToken ct = default)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var id in await _store.ListRegistrarAgentIdsAsync(ct).ConfigureAwait(false))
            if (await _store.GetRegistrarAgentAsync(id, ct).ConfigureAwait(false) is { EkCert: { } ek })
                map[Convert.ToHexString(SHA256.HashData(ek))] = id;
        return map;
    }

    /// <summary>Whether a scanned QR text matches a record: a serial, or the label payload <see cref="DeviceLabels.Payload"/>.</summary>
    public async Task<ManufacturingRecord?> MatchQrAsync(string text, CancellationToken ct = default)
    {
        string? serial = DeviceLabels.TryParse(text, out var s, out var ek) ? s : text;
        var records = await _store.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery { Serial = serial, Limit = 1 }, ct).ConfigureAwait(false);
        var r = records.FirstOrDefault();
        if (r is null) return null;
        if (ek is not null && !string.Equals(ek, r.EkFingerprint, StringComparison.OrdinalIgnoreCase)) return null;
        return r;
    }

    internal static string Clip(string s) => s.Length <= 128 ? s : s[..128] + "…";
}

/// <summary>What a hook sees as <c>$Device</c>.</summary>
public sealed record HookDevice(string Serial, string Vendor, string Name, string Version, string Source, string? EkFingerprint, string? AkName);

/// <summary>A device with its full history and its latest manufacturing record.</summary>
public sealed record StationDeviceDetail
{
    public required string Serial { get; init; }
    public required string Vendor { get; init; }
    public string? Name { get; init; }
    public required string State { get; init; }
    public string? Address { get; init; }
    public DateTimeOffset FirstSeen { get; init; }
    public DateTimeOffset LastSeen { get; init; }
    public required IReadOnlyList<DeviceStateChange> History { get; init; }
    public ManufacturingRecord? Record { get; init; }
}

/// <summary>One row of <c>/api/v2/manufacturing</c>: the identity of a provisioned TPM device.</summary>
public sealed record ManufacturingRow
{
    public long Id { get; init; }
    public required string Serial { get; init; }
    public required string Name { get; init; }
    public required string Vendor { get; init; }
    public required string Version { get; init; }
    public required string EkFingerprint { get; init; }
    public string? EkIssuer { get; init; }
    public required string AkName { get; init; }
    public required string AkCertificateSerial { get; init; }
    public required string AkCertificateFingerprint { get; init; }
    public string? CaKeyLabel { get; init; }
    public string? CaFingerprint { get; init; }
    public string? ImageName { get; init; }
    public string? ImageSha256 { get; init; }
    public string? AgentId { get; init; }
    public required string ApiKeyId { get; init; }
    public DateTimeOffset ProvisionTime { get; init; }
    /// <summary>The AK certificate, DER.</summary>
    public required byte[] AkCertificate { get; init; }

    public static ManufacturingRow From(ManufacturingRecord r, StationRecordInfo? info, string? agentId) => new()
    {
        Id = r.Id, Serial = r.Serial, Name = r.DeviceName, Vendor = r.Vendor, Version = r.DeviceVersion, EkFingerprint = r.EkFingerprint,
        EkIssuer = info?.EkIssuer, AkName = r.AkName, AkCertificateSerial = r.AkCertificateSerial,
        AkCertificateFingerprint = Convert.ToHexString(SHA256.HashData(r.AkCertificate)), CaKeyLabel = info?.CaKeyLabel, CaFingerprint = info?.CaFingerprint,
        ImageName = info?.ImageName, ImageSha256 = info?.ImageSha256, AgentId = agentId, ApiKeyId = r.ApiKeyId, ProvisionTime = r.Time, AkCertificate = r.AkCertificate,
    };
}

/// <summary>What a device label's QR code says: <c>TPMPROV1;serial=&lt;serial&gt;;ek=&lt;EK SHA-256&gt;</c>.</summary>
public static class DeviceLabels
{
    public const string Magic = "TPMPROV1";

    public static string Payload(ManufacturingRecord r) => $"{Magic};serial={Uri.EscapeDataString(r.Serial)};ek={r.EkFingerprint}";

    public static bool TryParse(string text, out string? serial, out string? ek)
    {
        serial = ek = null;
        if (!text.StartsWith(Magic + ";", StringComparison.Ordinal)) return false;
        foreach (var part in text.Split(';').Skip(1))
        {
            int eq = part.IndexOf('=');
            if (eq <= 0) return false;
            var (k, v) = (part[..eq], part[(eq + 1)..]);
            if (k == "serial") serial = Uri.UnescapeDataString(v);
            else if (k == "ek") ek = v;
        }
        return serial is not null;
    }
}
