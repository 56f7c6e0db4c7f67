using System.Buffers;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace TpmProvisioning.Attestation.Verifier;

/// <summary>
/// What a tenant sends in <c>POST /v2.1/agents/{id}</c> (the spec's body): how to reach the agent, its AK and TLS certificate,
/// and the policies to judge it by. Stored as given; <see cref="RevocationKey"/> and <see cref="V"/> are never returned.
/// </summary>
public sealed record VerifierAgentConfig
{
    [JsonPropertyName("v")] public string? V { get; init; }
    [JsonPropertyName("cloudagent_ip")] public string Ip { get; init; } = "";
    [JsonPropertyName("cloudagent_port")] public int Port { get; init; }
    [JsonPropertyName("tpm_policy")] public string TpmPolicy { get; init; } = "{}";
    [JsonPropertyName("vtpm_policy")] public string? VtpmPolicy { get; init; }
    [JsonPropertyName("ak_tpm")] public string AkTpm { get; init; } = "";
    [JsonPropertyName("mtls_cert")] public string? MtlsCert { get; init; }
    [JsonPropertyName("runtime_policy_name")] public string? RuntimePolicyName { get; init; }
    /// <summary>The runtime (IMA) policy JSON, base64 as the spec sends it; empty for none.</summary>
    [JsonPropertyName("runtime_policy")] public string? RuntimePolicy { get; init; }
    [JsonPropertyName("runtime_policy_sig")] public string? RuntimePolicySig { get; init; }
    [JsonPropertyName("runtime_policy_key")] public string? RuntimePolicyKey { get; init; }
    /// <summary>The measured-boot reference state (JSON text; <c>null</c> for none).</summary>
    [JsonPropertyName("mb_refstate")] public string? MbRefstate { get; init; }
    [JsonPropertyName("ima_sign_verification_keys")] public string? ImaSignVerificationKeys { get; init; }
    [JsonPropertyName("metadata")] public string? Metadata { get; init; }
    [JsonPropertyName("revocation_key")] public string? RevocationKey { get; init; }
    [JsonPropertyName("accept_tpm_hash_algs")] public IReadOnlyList<string> AcceptTpmHashAlgs { get; init; } = ["sha512", "sha384", "sha256"];
    [JsonPropertyName("accept_tpm_encryption_algs")] public IReadOnlyList<string> AcceptTpmEncryptionAlgs { get; init; } = ["ecc", "rsa"];
    [JsonPropertyName("accept_tpm_signing_algs")] public IReadOnlyList<string> AcceptTpmSigningAlgs { get; init; } = ["ecschnorr", "rsassa", "rsapss", "ecdsa"];
    [JsonPropertyName("supported_version")] public string SupportedVersion { get; init; } = KeylimeApi.CurrentVersion;

    /// <summary>True when the tenant sent a non-empty runtime policy.</summary>
    [JsonIgnore] public bool HasRuntimePolicy => !string.IsNullOrWhiteSpace(RuntimePolicy);
    /// <summary>True when the tenant sent a measured-boot reference state.</summary>
    [JsonIgnore] public bool HasMbRefstate => !string.IsNullOrWhiteSpace(MbRefstate) && MbRefstate.Trim() is not ("null" or "{}" or "\"\"");
}

/// <summary>
/// What the verifier learns while watching an agent and must survive a restart: the NK, the algorithms of the first quote, the
/// TPM clock counters (which never decrease), the IMA position, and the failures of the last judgement.
/// </summary>
public sealed record VerifierAgentProgress
{
    [JsonPropertyName("hash_alg")] public string? HashAlg { get; init; }
    [JsonPropertyName("enc_alg")] public string? EncAlg { get; init; }
    [JsonPropertyName("sign_alg")] public string? SignAlg { get; init; }
    /// <summary>The agent's NK (PEM), learned from the first quote; quotes after that are asked for with <c>partial=1</c>.</summary>
    [JsonPropertyName("nk")] public string? NkPem { get; init; }
    [JsonPropertyName("boottime")] public long Boottime { get; init; }
    [JsonPropertyName("reset_count")] public uint? ResetCount { get; init; }
    [JsonPropertyName("restart_count")] public uint? RestartCount { get; init; }
    [JsonPropertyName("clock")] public ulong? Clock { get; init; }
    /// <summary>IMA verification state (opaque JSON of the measurement engine), reset when the agent reboots.</summary>
    [JsonPropertyName("ima_state")] public string? ImaState { get; init; }
    [JsonPropertyName("next_ima_ml_entry")] public int NextImaEntry { get; init; }
    [JsonPropertyName("v_delivered")] public bool VDelivered { get; init; }
    [JsonPropertyName("failures")] public IReadOnlyList<AttestationFailure> Failures { get; init; } = [];
    /// <summary>The nonce of the last quote asked for.</summary>
    [JsonPropertyName("last_nonce")] public string? LastNonce { get; init; }
}

/// <summary>One agent as the verifier keeps it (Keylime's <c>verifiermain</c> row).</summary>
public sealed record VerifierAgentRecord
{
    public required string AgentId { get; init; }
    public required VerifierAgentConfig Config { get; init; }
    public VerifierAgentProgress Progress { get; init; } = new();
    public OperationalState State { get; init; } = OperationalState.Start;
    public int? SeverityLevel { get; init; }
    public string? LastEventId { get; init; }
    public long AttestationCount { get; init; }
    /// <summary>Unix seconds of the last quote received, valid or not (0: none).</summary>
    public long LastReceivedQuote { get; init; }
    /// <summary>Unix seconds of the last quote that passed (0: none).</summary>
    public long LastSuccessfulAttestation { get; init; }
    public string VerifierId { get; init; } = "default";
    public DateTimeOffset Added { get; init; } = DateTimeOffset.UtcNow;
    public DateTimeOffset Updated { get; init; } = DateTimeOffset.UtcNow;

    internal static readonly JsonSerializerOptions Json = new() { DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };
}

/// <summary><c>GET /v2.1/agents/{id}</c>'s results on the verifier: every field of the spec's example.</summary>
public sealed record VerifierAgentStatus
{
    [JsonPropertyName("operational_state")] public int OperationalState { get; init; }
    /// <summary>Always null here: V is half of the payload key and is not given out (the spec allows null).</summary>
    [JsonPropertyName("v")] public string? V { get; init; }
    [JsonPropertyName("ip")] public string Ip { get; init; } = "";
    [JsonPropertyName("port")] public int Port { get; init; }
    [JsonPropertyName("tpm_policy")] public string TpmPolicy { get; init; } = "{}";
    [JsonPropertyName("vtpm_policy")] public string VtpmPolicy { get; init; } = "{}";
    [JsonPropertyName("meta_data")] public string MetaData { get; init; } = "{}";
    [JsonPropertyName("has_mb_refstate")] public int HasMbRefstate { get; init; }
    [JsonPropertyName("has_runtime_policy")] public int HasRuntimePolicy { get; init; }
    [JsonPropertyName("accept_tpm_hash_algs")] public IReadOnlyList<string> AcceptTpmHashAlgs { get; init; } = [];
    [JsonPropertyName("accept_tpm_encryption_algs")] public IReadOnlyList<string> AcceptTpmEncryptionAlgs { get; init; } = [];
    [JsonPropertyName("accept_tpm_signing_algs")] public IReadOnlyList<string> AcceptTpmSigningAlgs { get; init; } = [];
    [JsonPropertyName("hash_alg")] public string HashAlg { get; init; } = "";
    [JsonPropertyName("enc_alg")] public string EncAlg { get; init; } = "";
    [JsonPropertyName("sign_alg")] public string SignAlg { get; init; } = "";
    [JsonPropertyName("verifier_id")] public string VerifierId { get; init; } = "default";
    [JsonPropertyName("verifier_ip")] public string VerifierIp { get; init; } = "";
    [JsonPropertyName("verifier_port")] public int VerifierPort { get; init; }
    [JsonPropertyName("severity_level")] public int? SeverityLevel { get; init; }
    [JsonPropertyName("last_event_id")] public string? LastEventId { get; init; }
    [JsonPropertyName("attestation_count")] public long AttestationCount { get; init; }
    [JsonPropertyName("last_received_quote")] public long LastReceivedQuote { get; init; }
    [JsonPropertyName("last_successful_attestation")] public long LastSuccessfulAttestation { get; init; }
    /// <summary>Ours, beside Keylime's fields: PASS, FAIL or PENDING.</summary>
    [JsonPropertyName("attestation_status")] public string AttestationStatus { get; init; } = "PENDING";
    /// <summary>Ours: the failed checks of the last judgement (event id, reason, PCR or path).</summary>
    [JsonPropertyName("failures")] public IReadOnlyList<AttestationFailure> Failures { get; init; } = [];

    public static VerifierAgentStatus From(VerifierAgentRecord r, string verifierIp, int verifierPort) => new()
    {
        OperationalState = (int)r.State,
        Ip = r.Config.Ip,
        Port = r.Config.Port,
        TpmPolicy = r.Config.TpmPolicy,
        VtpmPolicy = r.Config.VtpmPolicy ?? "{}",
        MetaData = r.Config.Metadata ?? "{}",
        HasMbRefstate = r.Config.HasMbRefstate ? 1 : 0,
        HasRuntimePolicy = r.Config.HasRuntimePolicy ? 1 : 0,
        AcceptTpmHashAlgs = r.Config.AcceptTpmHashAlgs,
        AcceptTpmEncryptionAlgs = r.Config.AcceptTpmEncryptionAlgs,
        AcceptTpmSigningAlgs = r.Config.AcceptTpmSigningAlgs,
        HashAlg = r.Progress.HashAlg ?? "",
        EncAlg = r.Progress.EncAlg ?? "",
        SignAlg = r.Progress.SignAlg ?? "",
        VerifierId = r.VerifierId,
        VerifierIp = verifierIp,
        VerifierPort = verifierPort,
        SeverityLevel = r.SeverityLevel,
        LastEventId = r.LastEventId,
        AttestationCount = r.AttestationCount,
        LastReceivedQuote = r.LastReceivedQuote,
        LastSuccessfulAttestation = r.LastSuccessfulAttestation,
        AttestationStatus = OperationalStates.Status(r.State).ToString().ToUpperInvariant(),
        Failures = r.Progress.Failures,
    };

    /// <summary>Reads a status from a verifier's <c>results</c> element.</summary>
    public static VerifierAgentStatus? FromJson(JsonElement results) =>
        results.ValueKind == JsonValueKind.Object ? results.Deserialize<VerifierAgentStatus>(VerifierAgentRecord.Json) : null;
}

/// <summary>Reads and checks a <c>POST /v2.1/agents/{id}</c> body.</summary>
public static class VerifierAgentRequest
{
    /// <summary>Largest accepted body (runtime policies of big systems are several MiB).</summary>
    public const int MaxBodyBytes = 32 * 1024 * 1024;

    /// <summary>
    /// Parses and checks the body; null with <paramref name="error"/> (the field and why) when it is malformed. Checks: contact
    /// address and port, <c>v</c> (32 bytes base64), <c>tpm_policy</c>, <c>ak_tpm</c> (a TPM2B_PUBLIC of a TPM-resident restricted
    /// signing key), <c>mtls_cert</c> (a PEM certificate unless <paramref name="requireMtls"/> is off), <c>revocation_key</c>
    /// (an RSA private key PEM when given), and the algorithm lists.
    /// </summary>
    public static VerifierAgentConfig? Parse(ReadOnlySpan<byte> body, bool requireMtls, out string? error) =>
        Parse(new ReadOnlySequence<byte>(body.ToArray()), requireMtls, out error);

    /// <summary>The members of the body this parser reads; any other member is skipped without being materialised.</summary>
    private static readonly string[] s_members =
    [
        "cloudagent_ip", "cloudagent_port", "v", "tpm_policy", "vtpm_policy", "ak_tpm", "mtls_cert", "runtime_policy_name", "runtime_policy",
        "runtime_policy_sig", "runtime_policy_key", "mb_refstate", "ima_sign_verification_keys", "metadata", "revocation_key",
        "accept_tpm_hash_algs", "accept_tpm_encryption_algs", "accept_tpm_signing_algs", "supported_version",
    ];
    private static readonly byte[][] s_memberNames = s_members.Select(System.Text.Encoding.UTF8.GetBytes).ToArray();

    /// <summary>
    /// As <see cref="Parse(ReadOnlySpan{byte}, bool, out string?)"/>, over the body as the server buffered it (pooled segments),
    /// without copying it: one pass of a forward-only reader checks the JSON and notes where each known member's value lies (the
    /// last one wins, as with a parsed document), unknown members are skipped, and only the values read are turned into strings.
    /// A document of millions of tokens therefore costs no memory beyond its own bytes.
    /// </summary>
    public static VerifierAgentConfig? Parse(ReadOnlySequence<byte> body, bool requireMtls, out string? error)
    {
        error = null;
        if (body.IsEmpty) { error = "Expected non zero content length"; return null; }
        if (!IsUtf8(body)) { error = "body: not valid UTF-8"; return null; }
        var found = new (JsonTokenType Kind, long Start, long Length)[s_members.Length];
        try
        {
            var reader = new Utf8JsonReader(body, new JsonReaderOptions { MaxDepth = 16 });
            if (!reader.Read()) { error = "body: not valid JSON"; return null; }
            if (reader.TokenType != JsonTokenType.StartObject)
            {
                reader.Skip();
                while (reader.Read()) { } // the rest must still be valid JSON, as a parsed document requires
                error = "body: must be a JSON object";
                return null;
            }
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                int which = -1;
                for (int i = 0; i < s_memberNames.Length && which < 0; i++)
                    if (reader.ValueTextEquals(s_memberNames[i])) which = i;
                reader.Read();
                long start = reader.TokenStartIndex;
                var kind = reader.TokenType;
                reader.Skip();
                if (which >= 0) found[which] = (kind, start, reader.BytesConsumed - start);
            }
            while (reader.Read()) { } // trailing content after the object is an error (the reader throws)
        }
        catch (JsonException) { error = "body: not valid JSON"; return null; }

        string? e = null;
        ReadOnlySequence<byte> Raw(int i) => body.Slice(found[i].Start, found[i].Length);
        string? Str(string name)
        {
            int i = Array.IndexOf(s_members, name);
            var kind = found[i].Kind;
            if (kind is JsonTokenType.None or JsonTokenType.Null) return null;
            if (kind == JsonTokenType.String)
            {
                var r = new Utf8JsonReader(Raw(i));
                r.Read();
                try { return r.GetString(); }
                catch (InvalidOperationException) { e ??= $"{name}: not valid text (a lone surrogate escape)"; return null; }
            }
            // Keylime tenants send some of these as JSON values rather than strings (mb_refstate, metadata): keep the text.
            if (name is "mb_refstate" or "metadata" or "ima_sign_verification_keys" or "tpm_policy" or "vtpm_policy") return System.Text.EncodingExtensions.GetString(System.Text.Encoding.UTF8, Raw(i));
            e ??= $"{name}: must be a string";
            return null;
        }
        IReadOnlyList<string>? List(string name)
        {
            int i = Array.IndexOf(s_members, name);
            var kind = found[i].Kind;
            if (kind is JsonTokenType.None or JsonTokenType.Null) return null;
            var items = new List<string>();
            bool ok = kind == JsonTokenType.StartArray;
            if (ok)
            {
                var r = new Utf8JsonReader(Raw(i));
                r.Read();
                while (ok && r.Read() && r.TokenType != JsonTokenType.EndArray)
                {
                    if (r.TokenType != JsonTokenType.String || items.Count == 16 || !r.TryGetText(out var text)) ok = false;
                    else items.Add(text.ToLowerInvariant());
                }
            }
            if (!ok)
            {
                e ??= $"{name}: must be a list of algorithm names";
                return null;
            }
            return items;
        }

        string? ip = Str("cloudagent_ip");
        int port = 0;
        int pi = Array.IndexOf(s_members, "cloudagent_port");
        var pk = found[pi].Kind;
        if (pk is JsonTokenType.None or JsonTokenType.Null) e ??= "cloudagent_port: required";
        else
        {
            var r = new Utf8JsonReader(Raw(pi));
            r.Read();
            if (pk == JsonTokenType.Number && r.TryGetInt32(out int n)) port = n;
            else if (pk == JsonTokenType.String && r.TryGetText(out var text) && int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int m)) port = m;
            else e ??= "cloudagent_port: must be a port number";
        }
        // The large members (policies, reference states) are turned into strings only once the rest passed its checks, so a
        // refused body never costs more than its own bytes; a wrong JSON type is still reported first, as before.
        string[] large = ["runtime_policy", "runtime_policy_sig", "runtime_policy_key", "mb_refstate", "ima_sign_verification_keys", "metadata"];
        foreach (var name in large)
        {
            var kind = found[Array.IndexOf(s_members, name)].Kind;
            if (kind is not (JsonTokenType.None or JsonTokenType.Null or JsonTokenType.String) && name is not ("mb_refstate" or "metadata" or "ima_sign_verification_keys"))
                e ??= $"{name}: must be a string";
        }
        var config = new VerifierAgentConfig
        {
            V = Str("v"),
            Ip = ip ?? "",
            Port = port,
            TpmPolicy = Str("tpm_policy") ?? "{}",
            VtpmPolicy = Str("vtpm_policy"),
            AkTpm = Str("ak_tpm") ?? "",
            MtlsCert = Str("mtls_cert"),
            RuntimePolicyName = Str("runtime_policy_name"),
            RevocationKey = Str("revocation_key"),
            AcceptTpmHashAlgs = List("accept_tpm_hash_algs") ?? ["sha512", "sha384", "sha256"],
            AcceptTpmEncryptionAlgs = List("accept_tpm_encryption_algs") ?? ["ecc", "rsa"],
            AcceptTpmSigningAlgs = List("accept_tpm_signing_algs") ?? ["ecschnorr", "rsassa", "rsapss", "ecdsa"],
            SupportedVersion = Str("supported_version") ?? KeylimeApi.CurrentVersion,
        };
        if (e is not null) { error = e; return null; }
        error = Check(config, requireMtls);
        if (error is not null) return null;
        config = config with
        {
            RuntimePolicy = Str("runtime_policy"),
            RuntimePolicySig = Str("runtime_policy_sig"),
            RuntimePolicyKey = Str("runtime_policy_key"),
            MbRefstate = Str("mb_refstate"),
            ImaSignVerificationKeys = Str("ima_sign_verification_keys"),
            Metadata = Str("metadata"),
        };
        if (e is not null) { error = e; return null; }
        return config;
    }

    /// <summary>A string token's text; false for one that cannot be read as text (a lone surrogate escape).</summary>
    private static bool TryGetText(this ref Utf8JsonReader r, out string text)
    {
        try { text = r.GetString() ?? ""; return true; }
        catch (InvalidOperationException) { text = ""; return false; }
    }

    /// <summary>Whether the bytes are UTF-8, checked segment by segment through a small buffer (a sequence split anywhere is fine).</summary>
    private static bool IsUtf8(ReadOnlySequence<byte> body)
    {
        if (body.IsSingleSegment) return System.Text.Unicode.Utf8.IsValid(body.FirstSpan);
        var decoder = new System.Text.UTF8Encoding(false, true).GetDecoder();
        var chars = System.Buffers.ArrayPool<char>.Shared.Rent(4096);
        int used;
        try
        {
            foreach (var segment in body)
                for (var rest = segment.Span; !rest.IsEmpty; rest = rest[used..])
                    decoder.Convert(rest, chars, false, out used, out _, out _);
            decoder.Convert(ReadOnlySpan<byte>.Empty, chars, true, out _, out _, out _);
            return true;
        }
        catch (System.Text.DecoderFallbackException) { return false; }
        finally { System.Buffers.ArrayPool<char>.Shared.Return(chars); }
    }

    private static string? Check(VerifierAgentConfig c, bool requireMtls)
    {
        if (!KeylimeValidators.IsValidContactHost(c.Ip))
            return "cloudagent_ip: must be an IP address or host name";
        if (c.Port is < 1 or > 65535) return "cloudagent_port: must be 1-65535";
        if (c.V is not null)
        {
            var v = TryBase64(c.V);
            if (v is null || v.Length != 32) return "v: must be 32 bytes, base64";
        }
        if (TpmPolicy.TryParse(c.TpmPolicy, out var perr) is null) return perr;
        if (string.IsNullOrEmpty(c.AkTpm)) return "ak_tpm: required";
        var ak = TryBase64(c.AkTpm);
        if (ak is null) return "ak_tpm: not base64";
        try
        {
            var pub = Tpm.TpmPublic.ParseTpm2B(ak);
            var problems = pub.RestrictedSigningKeyProblems();
            if (problems.Count > 0) return "ak_tpm: not a TPM-resident restricted signing key (" + string.Join("; ", problems) + ")";
            // The watch prepares this key to verify every quote: a key that cannot be prepared is refused now, not failed later.
            using var prepared = Tpm.PreparedAk.Create(pub);
        }
        catch (Tpm.TpmFormatException ex) { return "ak_tpm: not a TPM2B_PUBLIC (" + ex.Message + ")"; }
        catch (Exception ex) when (ex is InvalidOperationException or NotSupportedException or System.Security.Cryptography.CryptographicException)
        { return "ak_tpm: not a usable public key (" + ex.Message + ")"; }
        if (c.MtlsCert is null or "" or "disabled")
        {
            if (requireMtls) return "mTLS certificate for agent is required!";
        }
        else
        {
            try { using var cert = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPem(c.MtlsCert); }
            catch (Exception ex) when (ex is System.Security.Cryptography.CryptographicException or ArgumentException) { return "mtls_cert: not a PEM certificate"; }
        }
        if (!string.IsNullOrWhiteSpace(c.RevocationKey))
        {
            try
            {
                using var rsa = System.Security.Cryptography.RSA.Create();
                rsa.ImportFromPem(c.RevocationKey);
                if (rsa.KeySize < 2048) return "revocation_key: an RSA key of at least 2048 bits is required";
                _ = rsa.ExportParameters(true);
            }
            catch (Exception ex) when (ex is System.Security.Cryptography.CryptographicException or ArgumentException) { return "revocation_key: not an RSA private key in PEM"; }
        }
        foreach (var a in c.AcceptTpmHashAlgs) if (a is not ("sha1" or "sha256" or "sha384" or "sha512" or "sm3_256")) return $"accept_tpm_hash_algs: unknown algorithm '{Clip(a)}'";
        foreach (var a in c.AcceptTpmEncryptionAlgs) if (a is not ("rsa" or "ecc")) return $"accept_tpm_encryption_algs: unknown algorithm '{Clip(a)}'";
        foreach (var a in c.AcceptTpmSigningAlgs) if (a is not ("rsassa" or "rsapss" or "ecdsa" or "ecdaa" or "ecschnorr" or "sm2")) return $"accept_tpm_signing_algs: unknown algorithm '{Clip(a)}'";
        if (c.SupportedVersion is not { Length: > 0 and <= 8 }) return "supported_version: must be an API version such as 2.1";
        return null;
    }

    internal static byte[]? TryBase64(string s)
    {
        try { return Convert.FromBase64String(s); }
        catch (FormatException) { return null; }
    }

    private static string Clip(string s) => s.Length <= 24 ? s : s[..24] + "…";
}
