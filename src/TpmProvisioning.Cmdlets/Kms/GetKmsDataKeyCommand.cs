using System.Management.Automation;
using System.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Kms;

namespace TpmProvisioning.Cmdlets;

/// <summary>
/// Device side: asks a KMS server for a data key over mutual TLS with the agent's own certificate. The server releases it only
/// while the verifier reports the agent's attestation passing. The key comes back as a SecureString; bytes only on request.
/// </summary>
[Cmdlet(VerbsCommon.Get, "KmsDataKey", DefaultParameterSetName = "Provider")]
[OutputType(typeof(KmsDataKey))]
public sealed class GetKmsDataKeyCommand : PSCmdlet
{
    public const string ReleasePath = "/api/tpmprov/kms/v1/release";

    /// <summary>The KMS server's base address.</summary>
    [Parameter(Mandatory = true)]
    [ArgumentCompleter(typeof(KmsUrlCompleter))]
    public Uri Server { get; set; } = null!;

    /// <summary>The agent's mTLS certificate with its private key (the one the registrar holds for the agent).</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public X509Certificate2? Certificate { get; set; }

    /// <summary>The agent id; default the certificate's common name.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? AgentId { get; set; }

    /// <summary>The provider whose key derivation key derives the data key.</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Provider")]
    [ArgumentCompleter(typeof(KmsProviderNameCompleter))]
    public string Provider { get; set; } = "";

    /// <summary>The key identifier the data key is derived for.</summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = "Provider")]
    public string KeyIdentifier { get; set; } = "";

    /// <summary>A KMS key's id or name: release that key's version material.</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Key")]
    [ArgumentCompleter(typeof(KmsKeyNameCompleter))]
    public string Key { get; set; } = "";

    /// <summary>The version (id, OCI version id or number); default the primary.</summary>
    [Parameter(ParameterSetName = "Key")]
    public string? Version { get; set; }

    /// <summary>Also return the key as a byte array (KeyBytes); without it only the SecureString holds it.</summary>
    [Parameter]
    public SwitchParameter AsPlainBytes { get; set; }

    /// <summary>CA certificate (object or PEM/DER path) the server's TLS certificate must chain to.</summary>
    [Parameter]
    public object? CaCertificate { get; set; }

    /// <summary>Accept any server TLS certificate (labs only).</summary>
    [Parameter]
    public SwitchParameter SkipCertificateCheck { get; set; }

    protected override void ProcessRecord()
    {
        if (Certificate is null)
        {
            WriteError(new ErrorRecord(new ArgumentException("-Certificate is required: the agent's mTLS certificate with its private key."), "KmsCertificateRequired", ErrorCategory.InvalidArgument, null));
            return;
        }
        if (!Certificate.HasPrivateKey)
        {
            WriteError(new ErrorRecord(new ArgumentException($"The certificate '{Certificate.Subject}' has no private key; mutual TLS needs it."), "KmsCertificateRequired", ErrorCategory.InvalidArgument, Certificate));
            return;
        }
        var agentId = AgentId ?? Certificate.GetNameInfo(X509NameType.SimpleName, false);
        var body = new Dictionary<string, string?> { ["agent_id"] = agentId };
        if (ParameterSetName == "Provider") { body["provider"] = Provider; body["key_identifier"] = KeyIdentifier; }
        else { body["key_id"] = Key; if (Version is not null) body["version"] = Version; }

        TransportErrors.RequireServerUri(this, Server, nameof(Server));
        var ca = CertificateInput.Load(this, CaCertificate, nameof(CaCertificate));
        using var http = RemoteKmsBackend.CreateHttpClient(new KmsServerOptions(Server, ca, SkipCertificateCheck, Certificate));
        byte[]? key = null;
        try
        {
            using var req = new HttpRequestMessage(HttpMethod.Post, new Uri(Server, ReleasePath)) { Content = new StringContent(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json") };
            using var resp = http.Send(req);
            var text = resp.Content.ReadAsStringAsync().GetAwaiter().GetResult();
            JsonElement root = default;
            try { if (text.Length > 0) root = JsonDocument.Parse(text).RootElement.Clone(); } catch (JsonException) { }
            int status = (int)resp.StatusCode;
            string why = root.ValueKind == JsonValueKind.Object && root.TryGetProperty("status", out var st) && st.ValueKind == JsonValueKind.String ? st.GetString()! : resp.ReasonPhrase ?? "";
            if (status is 401 or 403 && TransportErrors.FromStatus(status, why, new InvalidOperationException($"The KMS at {Server} refused the key ({status}): {why}"), new TransportTarget(Server, ca, SkipCertificateCheck, Certificate), agentId) is { } refused)
            {
                WriteError(refused);
                return;
            }
            if (status != 200)
            {
                var (id, category) = status switch
                {
                    400 => ("KmsInvalidArgument", ErrorCategory.InvalidArgument),
                    401 => ("KmsUnauthenticated", ErrorCategory.AuthenticationError),
                    403 => ("KmsReleaseRefused", ErrorCategory.PermissionDenied),
                    404 => ("KmsNotFound", ErrorCategory.ObjectNotFound),
                    _ => ("KmsUnavailable", ErrorCategory.ResourceUnavailable),
                };
                WriteError(new ErrorRecord(new InvalidOperationException($"The KMS at {Server} refused the key ({status}): {why}"), id, category, agentId));
                return;
            }
            var r = root.GetProperty("results");
            string? S(string n) => r.TryGetProperty(n, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
            key = Convert.FromBase64String(S("key") ?? "");
            var secure = new SecureString();
            foreach (var c in Convert.ToBase64String(key)) secure.AppendChar(c);
            secure.MakeReadOnly();
            WriteObject(new KmsDataKey
            {
                AgentId = S("agent_id") ?? agentId, Server = Server.ToString(), Provider = S("provider"), KeyIdentifier = S("key_identifier"),
                KeyId = S("key_id"), VersionId = S("version_id"),
                VersionNumber = r.TryGetProperty("version_number", out var vn) && vn.ValueKind == JsonValueKind.Number ? vn.GetInt32() : null,
                Algorithm = S("algorithm") ?? "", Key = secure, KeyBytes = AsPlainBytes ? (byte[])key.Clone() : null,
            });
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or TimeoutException or FormatException or KeyNotFoundException or InvalidOperationException)
        {
            WriteError(TransportErrors.Classify(ex, new TransportTarget(Server, ca, SkipCertificateCheck, Certificate), agentId) ?? KmsErrors.Record(ex, agentId) ?? new ErrorRecord(ex, "KmsUnavailable", ErrorCategory.InvalidResult, agentId));
        }
        finally
        {
            if (key is not null) CryptographicOperations.ZeroMemory(key);
        }
    }
}
