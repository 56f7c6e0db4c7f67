using System.Security.Cryptography.X509Certificates;
using System.Text.Json.Serialization;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Provisioning;

/// <summary>
/// The provisioning request exactly as spec 000 puts it on the wire (<c>POST /api/tpm/tpm/provision</c>). Every member is
/// the raw string the client sent; <see cref="ProvisioningService"/> decodes and checks them, naming the field it rejects.
/// </summary>
public sealed class ProvisioningRequest
{
    /// <summary>AK public key: base64 DER SubjectPublicKeyInfo, or base64 TPM2B_PUBLIC.</summary>
    [JsonPropertyName("ak_pub_key")] public string? AkPubKey { get; set; }
    /// <summary>The provisioning API key. May instead come in an <c>Authorization</c> header.</summary>
    [JsonPropertyName("api_key")] public string? ApiKey { get; set; }
    /// <summary>PKCS#10 request signed by the AK: PEM, or base64 DER.</summary>
    [JsonPropertyName("csr")] public string? Csr { get; set; }
    [JsonPropertyName("device")] public ProvisioningDevice? Device { get; set; }
    /// <summary>EK certificate: base64 DER (PEM also accepted).</summary>
    [JsonPropertyName("ek_cert")] public string? EkCert { get; set; }
    /// <summary>EK public key: base64 DER SubjectPublicKeyInfo (base64 TPM2B_PUBLIC also accepted).</summary>
    [JsonPropertyName("ek_pub_key")] public string? EkPubKey { get; set; }
}

/// <summary>The <c>device</c> object of a provisioning request.</summary>
public sealed class ProvisioningDevice
{
    [JsonPropertyName("name")] public string? Name { get; set; }
    [JsonPropertyName("serial")] public string? Serial { get; set; }
    [JsonPropertyName("vendor")] public string? Vendor { get; set; }
    [JsonPropertyName("version")] public string? Version { get; set; }
}

/// <summary>The successful answer: what only the TPM holding the EK, with the AK loaded, can open.</summary>
public sealed class ProvisioningResponse
{
    /// <summary>base64 of the tpm2-tools credential file (magic, version, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET).</summary>
    [JsonPropertyName("credential_bundle")] public string CredentialBundle { get; set; } = "";
    /// <summary>base64 of AES-256-GCM(secret, nonce, DER AK certificate): ciphertext followed by the 16-byte tag.</summary>
    [JsonPropertyName("encrypted_ak_cert")] public string EncryptedAkCert { get; set; } = "";
    /// <summary>base64 of the 12-byte GCM nonce.</summary>
    [JsonPropertyName("nonce")] public string Nonce { get; set; } = "";
}

/// <summary>Source-generated JSON metadata for the wire types (trimming- and AOT-friendly, no reflection at run time).</summary>
[JsonSourceGenerationOptions(DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(ProvisioningRequest))]
[JsonSerializable(typeof(ProvisioningResponse))]
[JsonSerializable(typeof(string))]
public sealed partial class ProvisioningJsonContext : JsonSerializerContext;

/// <summary>The device's identity as the plant knows it.</summary>
public sealed record DeviceIdentity(string Name, string Serial, string Vendor, string Version);

/// <summary>Who is calling and how, as the transport saw it.</summary>
public sealed record ProvisioningCallInfo
{
    /// <summary>Remote address, or <c>local</c>.</summary>
    public string Source { get; init; } = "local";
    /// <summary>The raw <c>Authorization</c> header, used for the API key when the body has none.</summary>
    public string? Authorization { get; init; }
    /// <summary>Correlates the audit entry with server logs and a 500's message.</summary>
    public string? CorrelationId { get; init; }
    /// <summary>The namespace of the route, when the namespaced route was used.</summary>
    public string? Namespace { get; init; }
}

/// <summary>
/// How a provisioning call ended: <see cref="Response"/> on success (status 200), otherwise a status from the spec's list and
/// a message that names the field and why (<c>device.name: must be at least 6 characters</c>).
/// </summary>
public sealed record ProvisioningOutcome
{
    public int Status { get; init; } = 200;
    public ProvisioningResponse? Response { get; init; }
    /// <summary>The manufacturing record written on success.</summary>
    public ManufacturingRecord? Record { get; init; }
    /// <summary>The AK certificate issued on success (DER).</summary>
    public byte[]? AkCertificate { get; init; }

    /// <summary>A new <see cref="X509Certificate2"/> of the issued AK certificate (the caller disposes it), or null.</summary>
    public X509Certificate2? LoadAkCertificate() => AkCertificate is null ? null : X509CertificateLoader.LoadCertificate(AkCertificate);
    /// <summary>The rejection message (safe to return to the caller).</summary>
    public string? Error { get; init; }
    /// <summary>For 429 and 503: seconds after which a retry may succeed.</summary>
    public int? RetryAfterSeconds { get; init; }
    /// <summary>For 500: the unexpected exception, for the server log only (never for the caller).</summary>
    public Exception? Fault { get; init; }
    /// <summary>The API key id that made the call, when it authenticated.</summary>
    public string? ApiKeyId { get; init; }
    /// <summary>
    /// True when the device (vendor, serial), its EK and this AK already had a record with a valid certificate: that certificate
    /// was sealed again and nothing was issued or written (a re-run batch). The role says so in the
    /// <c>X-Tpm-Provisioning-Status: already-provisioned</c> response header.
    /// </summary>
    public bool AlreadyProvisioned { get; init; }

    public bool Succeeded => Status == 200 && Response is not null;

    internal static ProvisioningOutcome Reject(int status, string error, int? retryAfter = null) => new() { Status = status, Error = error, RetryAfterSeconds = retryAfter };
}

/// <summary>Settings of the provisioning surface (server side).</summary>
public sealed class ProvisioningSettings
{
    /// <summary>Namespaces served by <c>/api/v1/namespaces/{namespace}/api/tpm/tpm/provision</c>; others answer 404.</summary>
    public IList<string> Namespaces { get; set; } = ["default"];
    /// <summary>Largest request body accepted; larger ones are refused with 413 before they are read.</summary>
    public long MaxRequestBytes { get; set; } = 256 * 1024;
    /// <summary>How long the TPM CA's signer may take before the request fails with 504.</summary>
    public TimeSpan SignerTimeout { get; set; } = TimeSpan.FromSeconds(10);
    /// <summary>Validity of issued AK certificates (capped by the CA's own).</summary>
    public TimeSpan AkCertificateLifetime { get; set; } = TimeSpan.FromDays(3652);
    /// <summary>Seconds a client is told to wait (Retry-After) when the server is draining or the store is down.</summary>
    public int UnavailableRetryAfterSeconds { get; set; } = 5;
    /// <summary>The TPM CA directory; null means <see cref="ProvisioningPaths.TpmCa"/> under the data path.</summary>
    public string? TpmCaDirectory { get; set; }
    /// <summary>Trusted EK roots; null means <see cref="ProvisioningPaths.EkRoots"/> under the data path.</summary>
    public string? EkRootsDirectory { get; set; }
    /// <summary>EK intermediates; null means <see cref="ProvisioningPaths.EkIntermediates"/> under the data path.</summary>
    public string? EkIntermediatesDirectory { get; set; }
}

/// <summary>Where the provisioning surface keeps its files under a server's data path.</summary>
public static class ProvisioningPaths
{
    /// <summary><c>&lt;DataPath&gt;/provisioning</c>.</summary>
    public static string Root(string dataPath) => Path.Combine(Path.GetFullPath(dataPath), "provisioning");
    /// <summary>Trusted TPM-manufacturer roots (PEM or DER files): <c>&lt;DataPath&gt;/provisioning/ek-roots</c>.</summary>
    public static string EkRoots(string dataPath) => Path.Combine(Root(dataPath), "ek-roots");
    /// <summary>Manufacturer intermediate CAs, used to build chains but never trusted alone: <c>&lt;DataPath&gt;/provisioning/ek-intermediates</c>.</summary>
    public static string EkIntermediates(string dataPath) => Path.Combine(Root(dataPath), "ek-intermediates");
    /// <summary>The TPM CA (certificate and key) that signs AK certificates: <c>&lt;DataPath&gt;/provisioning/tpm-ca</c>.</summary>
    public static string TpmCa(string dataPath) => Path.Combine(Root(dataPath), "tpm-ca");
}

/// <summary>
/// Reports from long engine operations (the device-side provisioning flow); a cmdlet forwards them to Write-Verbose,
/// Write-Warning and Write-Progress. The engine never sees PowerShell.
/// </summary>
public interface IOperationReporter
{
    void Verbose(string message);
    void Warning(string message);
    /// <summary>A step of the operation: <paramref name="percent"/> 0..100 and what is happening.</summary>
    void Progress(int percent, string status);
}

/// <summary>A reporter that drops everything.</summary>
public sealed class NullOperationReporter : IOperationReporter
{
    public static NullOperationReporter Instance { get; } = new();
    public void Verbose(string message) { }
    public void Warning(string message) { }
    public void Progress(int percent, string status) { }
}

/// <summary>
/// Response header of a 200 from <c>/api/tpm/tpm/provision</c> (an extension; clients of the spec ignore it):
/// <c>X-Tpm-Provisioning-Status: already-provisioned</c> when the device, its EK and the AK in the request already held a
/// valid certificate, which is returned again and nothing is written.
/// </summary>
public static class ProvisioningHeaders
{
    public const string Status = "X-Tpm-Provisioning-Status";
    public const string AlreadyProvisioned = "already-provisioned";
}
