using System.Text.RegularExpressions;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Station;

/// <summary>
/// The device states of the station (spec 003), upper case as in the original's state table. Each phase of spec 000's flow
/// starts, then finishes or aborts; registration and attestation (spec 001) follow. See docs/rest/station.md for the mapping.
/// </summary>
public static class DeviceStates
{
    public const string BootstrapStarted = "BOOTSTRAP-STARTED";
    public const string BootstrapFinished = "BOOTSTRAP-FINISHED";
    public const string BootstrapAborted = "BOOTSTRAP-ABORTED";
    public const string TriageStarted = "TRIAGE-STARTED";
    public const string TriageFinished = "TRIAGE-FINISHED";
    public const string TriageAborted = "TRIAGE-ABORTED";
    public const string ProvisionerStarted = "PROVISIONER-STARTED";
    public const string ProvisionerFinished = "PROVISIONER-FINISHED";
    public const string ProvisionerAborted = "PROVISIONER-ABORTED";
    public const string Registered = "REGISTERED";
    public const string Attesting = "ATTESTING";
    public const string AttestationFailed = "ATTESTATION-FAILED";

    public static IReadOnlyList<string> All { get; } =
    [
        BootstrapStarted, BootstrapFinished, BootstrapAborted, TriageStarted, TriageFinished, TriageAborted,
        ProvisionerStarted, ProvisionerFinished, ProvisionerAborted, Registered, Attesting, AttestationFailed,
    ];

    public static bool IsKnown(string? state) => state is not null && All.Contains(state, StringComparer.Ordinal);
}

/// <summary>The three logs a device has at the station, one per phase of the flow.</summary>
public enum DeviceLogType
{
    /// <summary>First contact: the request, the EK certificate and its chain.</summary>
    Bootstrap,
    /// <summary>The checks: EK key, AK attributes and Name, CSR, bindings.</summary>
    Triage,
    /// <summary>Certificate issue, credential, the manufacturing record, registration.</summary>
    Provisioner,
}

/// <summary>The hook stages of the station's flow; a script <c>&lt;flow&gt;-&lt;stage&gt;.ps1</c> runs when its stage fires.</summary>
public static class HookStages
{
    public const string Bootstrap = "bootstrap";
    public const string ProvisionStarted = "provision-started";
    public const string CertificateIssued = "certificate-issued";
    public const string PostProvision = "post-provision";
    public const string ProvisionFailed = "provision-failed";
    public const string AttestationFailed = "attestation-failed";

    public static IReadOnlyList<(string Name, string Description)> All { get; } =
    [
        (Bootstrap, "After the EK certificate chained to a trusted manufacturer, before the checks of triage. A failure aborts bootstrap."),
        (ProvisionStarted, "When provisioning starts, before the AK certificate is issued. A failure aborts provisioning: no certificate, no record."),
        (CertificateIssued, "After the TPM CA issued the AK certificate, before the credential is made. A failure aborts provisioning."),
        (PostProvision, "After the credential is sealed, just before the manufacturing record is written; gets the record. A failure aborts provisioning."),
        (ProvisionFailed, "After bootstrap, triage or provisioning aborted. Its own failure is only logged."),
        (AttestationFailed, "When the verifier reports that a provisioned device failed attestation. Its failure is only logged."),
    ];

    public static bool IsKnown(string? stage) => stage is not null && All.Any(s => s.Name == stage);
}

/// <summary>One transition of a device, as appended to its history (never updated).</summary>
public sealed record DeviceStateChange
{
    public long Id { get; init; }
    public DateTimeOffset Time { get; init; } = DateTimeOffset.UtcNow;
    public required string Serial { get; init; }
    public required string Vendor { get; init; }
    public required string State { get; init; }
    /// <summary>The device's (client's) address as the server saw it.</summary>
    public string? Address { get; init; }
    /// <summary>Why, for an aborted or failed state.</summary>
    public string? Detail { get; init; }
    /// <summary>The device name given in the request, when known.</summary>
    public string? DeviceName { get; init; }
}

/// <summary>One timestamped line of a device log.</summary>
public sealed record DeviceLogLine
{
    public long Id { get; init; }
    public DateTimeOffset Time { get; init; } = DateTimeOffset.UtcNow;
    public required string Serial { get; init; }
    public required string Vendor { get; init; }
    public required DeviceLogType Log { get; init; }
    public required string Line { get; init; }

    public override string ToString() => $"{Time.UtcDateTime:yyyy-MM-dd'T'HH:mm:ss.fff'Z'} {Line}";
}

/// <summary>Station-only facts of a manufacturing record (the record itself is spec 000's).</summary>
public sealed record StationRecordInfo
{
    public required long RecordId { get; init; }
    public string? EkIssuer { get; init; }
    public string? CaKeyLabel { get; init; }
    /// <summary>SHA-256 of the TPM CA certificate, upper-case hex.</summary>
    public string? CaFingerprint { get; init; }
    public string? ImageName { get; init; }
    public string? ImageSha256 { get; init; }
}

/// <summary>An operator token of the station: only a hash of the secret is kept.</summary>
public sealed record StationTokenRecord
{
    public required string TokenId { get; init; }
    public string Name { get; init; } = "";
    public required byte[] SecretHash { get; init; }
    public DateTimeOffset Created { get; init; } = DateTimeOffset.UtcNow;
}

/// <summary>A device as the station lists it: its latest state and when it was seen.</summary>
public sealed record StationDevice
{
    public required string Serial { get; init; }
    public required string Vendor { get; init; }
    public string? Name { get; init; }
    public required string State { get; init; }
    public string? Address { get; init; }
    public DateTimeOffset FirstSeen { get; init; }
    public DateTimeOffset LastSeen { get; init; }
    /// <summary>The station's sequence of the latest transition (newest first ordering).</summary>
    public long LastChangeId { get; init; }
}

/// <summary>Script names of the station: <c>[A-Za-z0-9_-]+</c> (no dot, no slash), with an optional <c>.ps1</c> suffix.</summary>
public static partial class StationNames
{
    [GeneratedRegex("^[A-Za-z0-9_-]{1,128}$", RegexOptions.CultureInvariant)]
    private static partial Regex SafeName();

    /// <summary>True when <paramref name="name"/> is a safe script name (without its <c>.ps1</c>).</summary>
    public static bool IsSafe(string? name) => name is not null && SafeName().IsMatch(name);

    /// <summary>The name without a trailing <c>.ps1</c>, or null when what is left is not a safe name.</summary>
    public static string? Normalize(string? name)
    {
        if (name is null) return null;
        var n = name.EndsWith(".ps1", StringComparison.OrdinalIgnoreCase) ? name[..^4] : name;
        return IsSafe(n) ? n : null;
    }
}
