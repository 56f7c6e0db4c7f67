using TpmProvisioning.Station;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Provisioning;

/// <summary>
/// One provisioning as it runs, as <see cref="ProvisioningService"/> shows it to an <see cref="IProvisioningObserver"/>: the
/// device, then what each step learned. Filled in step by step; read-only to observers.
/// </summary>
public sealed class ProvisioningProgress
{
    public required string Serial { get; init; }
    public required string Vendor { get; init; }
    public required string DeviceName { get; init; }
    public required string DeviceVersion { get; init; }
    /// <summary>The caller's address.</summary>
    public required string Source { get; init; }
    public required string ApiKeyId { get; init; }
    public string? CorrelationId { get; init; }
    public string? EkFingerprint { get; internal set; }
    public string? EkSubject { get; internal set; }
    public string? EkIssuer { get; internal set; }
    /// <summary>The AK's TPM Name, upper-case hex.</summary>
    public string? AkName { get; internal set; }
    public string? AkCertificateSerial { get; internal set; }
    /// <summary>The issued AK certificate, DER.</summary>
    public byte[]? AkCertificate { get; internal set; }
    /// <summary>Where the TPM CA's key is (<see cref="Pki.ICertificateSigner.Description"/>).</summary>
    public string? CaKeyLabel { get; internal set; }
    /// <summary>SHA-256 of the TPM CA certificate, upper-case hex.</summary>
    public string? CaFingerprint { get; internal set; }
    /// <summary>The manufacturing record: prepared (id 0) at <c>post-provision</c>, written (with its id) once finished.</summary>
    public ManufacturingRecord? Record { get; internal set; }
    /// <summary>The phase that aborted and why, once one did.</summary>
    public string? FailedPhase { get; internal set; }
    public string? FailureReason { get; internal set; }
}

/// <summary>
/// Watches the server side of spec 000 (the station implements it): each phase's states, a timestamped line per step in the
/// phase's log, and the hook stages. The engine stays free of HTTP and PowerShell: a hook is whatever the observer runs.
/// </summary>
public interface IProvisioningObserver
{
    /// <summary>The device entered <paramref name="state"/> (<see cref="DeviceStates"/>); <paramref name="reason"/> for an abort.</summary>
    Task StateAsync(ProvisioningProgress progress, string state, string? reason, CancellationToken ct);

    /// <summary>One step's line for the device's <paramref name="log"/>.</summary>
    Task LogAsync(ProvisioningProgress progress, DeviceLogType log, string line, CancellationToken ct);

    /// <summary>
    /// The hook <paramref name="stage"/> (<see cref="HookStages"/>) fires. Returns null when it passed (or no hook is enabled),
    /// otherwise why it failed; a failure aborts the phase (except for <c>provision-failed</c>).
    /// </summary>
    Task<string?> StageAsync(ProvisioningProgress progress, string stage, CancellationToken ct);
}
