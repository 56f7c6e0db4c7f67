using System.Globalization;
using System.Text;
using TpmProvisioning.Hosting;

namespace TpmProvisioning.Configuration;

/// <summary>
/// Every setting of the product, in one typed, documented list: what <c>/options/get</c>, <c>/options/set</c> and
/// <c>/options/validate</c> serve, what the options page shows, what <c>Get-ProvisioningOption</c> completes, and what
/// <c>docs/configuration.md</c> documents (a test fails when the two differ). Values persisted by the options surface are
/// applied at server start by <see cref="ApplyPersisted"/>; a start parameter given explicitly wins over a persisted value.
/// </summary>
public static class SettingsCatalog
{
    private const double Day = 86_400;

    private static double Sec(TimeSpan t) => t.TotalSeconds;
    private static TimeSpan FromSec(object? v) => TimeSpan.FromSeconds(Convert.ToDouble(v, CultureInfo.InvariantCulture));
    private static int Int(object? v) => Convert.ToInt32(v, CultureInfo.InvariantCulture);
    private static long Long(object? v) => Convert.ToInt64(v, CultureInfo.InvariantCulture);
    private static Uri? U(object? v) => v is null ? null : new Uri((string)v, UriKind.Absolute);

    /// <summary>A connection string without its password (never shown or returned).</summary>
    private static string? RedactedConnectionString(string? cs)
    {
        if (cs is null) return null;
        try
        {
            var b = new System.Data.Common.DbConnectionStringBuilder { ConnectionString = cs };
            foreach (var k in b.Keys.Cast<string>().Where(k => k.Replace(" ", "", StringComparison.Ordinal).Equals("password", StringComparison.OrdinalIgnoreCase) || k.Equals("pwd", StringComparison.OrdinalIgnoreCase)).ToList())
                b[k] = "***";
            return b.ConnectionString;
        }
        catch (ArgumentException) { return "(unreadable connection string)"; }
    }

    private static SettingDefinition S(string name, string section, SettingType type, SettingApply apply, string description,
        Func<ServerOptions, object?> get, Action<ServerOptions, object?>? set = null) => new(name, section, type, description, apply, get, set);

    /// <summary>Every setting, by section, in documentation order.</summary>
    public static IReadOnlyList<SettingDefinition> All { get; } = Build();

    private static readonly Dictionary<string, SettingDefinition> s_byName = All.ToDictionary(d => d.Name, StringComparer.OrdinalIgnoreCase);

    /// <summary>The setting named <paramref name="name"/> (case-insensitive), or null.</summary>
    public static SettingDefinition? Find(string? name) => name is null ? null : s_byName.GetValueOrDefault(name.Trim());

    /// <summary>Settings whose names start with <paramref name="prefix"/> (for tab completion).</summary>
    public static IEnumerable<SettingDefinition> Complete(string? prefix) =>
        All.Where(d => d.Name.StartsWith(prefix ?? "", StringComparison.OrdinalIgnoreCase));

    private static List<SettingDefinition> Build()
    {
        const SettingApply L = SettingApply.Live, R = SettingApply.Restart, O = SettingApply.StartOnly;
        const string Srv = "Server", Prov = "Provisioning", Reg = "Registrar", Ag = "Agent", Ver = "Verifier", Kms = "Kms", St = "Station";
        var roleNames = Enum.GetNames<ServerRole>().Where(n => n is not ("None" or "All")).ToList();
        var levels = Enum.GetNames<LogLevelName>().ToList();
        return
        [
            // ---- Server ----
            S("SERVER_NAME", Srv, SettingType.String, O, "The server's name in Get-ProvisioningServer and the service log; default: a generated name.",
                o => o.Name) with { StartParameters = ["Name"], Nullable = true },
            S("SERVER_ADDRESS", Srv, SettingType.String, O, "The IP address Kestrel binds (loopback by default: closed until an operator opens it).",
                o => o.Address.ToString()) with { StartParameters = ["Address"] },
            S("SERVER_PORT", Srv, SettingType.Integer, O, "The TCP port; 0 picks a free one.",
                o => (long)o.Port) with { StartParameters = ["Port"], Minimum = 0, Maximum = 65535 },
            S("SERVER_DATA_PATH", Srv, SettingType.Path, O, "The folder of the store, keys, CA, logs and station files.",
                o => o.DataPath) with { StartParameters = ["DataPath"], NullMeaning = "TPMPROV_DATA or the per-user folder" },
            S("SERVER_ROLES", Srv, SettingType.List, O, "The surfaces hosted (Registrar and Verifier cannot share a server).",
                o => Enum.GetValues<ServerRole>().Where(r => r is not (ServerRole.None or ServerRole.All) && o.Roles.HasFlag(r)).Select(r => r.ToString()).ToList())
                with { StartParameters = ["Role"], Allowed = roleNames },
            S("SERVER_REQUIRE_CLIENT_CERTIFICATE", Srv, SettingType.List, O, "Roles whose routes need a components-CA client certificate (the Keylime roles always do on their protected routes).",
                o => Enum.GetValues<ServerRole>().Where(r => r is not (ServerRole.None or ServerRole.All) && o.RequireClientCertificate.HasFlag(r)).Select(r => r.ToString()).ToList())
                with { StartParameters = ["RequireClientCertificate"], Allowed = roleNames },
            S("SERVER_INSECURE_PLAIN_HTTP", Srv, SettingType.Boolean, O, "Serve plain HTTP instead of HTTPS; never for production.",
                o => o.InsecurePlainHttp) with { StartParameters = ["InsecurePlainHttp"] },
            S("SERVER_CERTIFICATE", Srv, SettingType.Object, O, "A TLS certificate (with key) to serve instead of one issued by the server's own CA.",
                o => o.Certificate?.Subject) with { StartParameters = ["Certificate"], Nullable = true },
            S("SERVER_TRUSTED_CLIENT_CAS", Srv, SettingType.Object, O, "Other CAs whose client certificates the mutual-TLS routes accept, each in given roles.",
                o => o.TrustedClientCas.Select(c => c.Certificate.Subject).ToList()) with { StartParameters = ["TrustedClientCa", "TrustedClientCaRole"] },
            S("SERVER_SHUTDOWN_TIMEOUT_SECONDS", Srv, SettingType.Duration, R, "Grace period for in-flight requests when the server stops.",
                o => Sec(o.ShutdownTimeout), (o, v) => o.ShutdownTimeout = FromSec(v)) with { Unit = "seconds", Minimum = 0, Maximum = 600 },
            S("SERVER_MAX_BUFFERED_REQUEST_BYTES", Srv, SettingType.Integer, L, "Bytes of request bodies held in memory at once across all roles; a body that does not fit gets 503 with Retry-After before it is read.",
                o => o.MaxBufferedRequestBytes, (o, v) => o.MaxBufferedRequestBytes = Long(v)) with { Minimum = 64 * 1024, Maximum = 16L * 1024 * 1024 * 1024 },
            S("SERVER_LOG_LEVEL", Srv, SettingType.Enum, R, "Minimum level written to the log file and the in-memory log.",
                o => o.LogLevel.ToString(), (o, v) => o.LogLevel = Enum.Parse<LogLevelName>((string)v!)) with { StartParameters = ["LogLevel"], Allowed = levels },
            S("SERVER_STORE_CONNECTION_STRING", Srv, SettingType.String, O, "A PostgreSQL connection string: the store several servers share (docs/cluster.md) instead of the SQLite file in the data path; also read from TPMPROVISIONING_STORE. Shown without its password.",
                o => RedactedConnectionString(o.StoreConnectionString)) with { StartParameters = ["StoreConnectionString"], Nullable = true, NullMeaning = "TPMPROVISIONING_STORE, else SQLite under the data path" },
            S("SERVER_CONTACT_ADDRESS", Srv, SettingType.String, R, "The address agents and tenants are told to reach this server at (NAT, multi-homed host, wildcard bind).",
                o => o.ContactAddress, (o, v) => o.ContactAddress = (string?)v) with { StartParameters = ["ContactAddress"], Nullable = true, NullMeaning = "the bound address" },
            S("SERVER_CONTACT_PORT", Srv, SettingType.Integer, R, "The port registered and reported instead of the bound one (NAT or a proxy).",
                o => o.ContactPort is { } p ? (long)p : null, (o, v) => o.ContactPort = v is null ? null : Int(v))
                with { StartParameters = ["ContactPort"], Minimum = 1, Maximum = 65535, Nullable = true, NullMeaning = "the bound port" },

            // ---- Provisioning (spec 000) ----
            S("PROVISIONING_NAMESPACES", Prov, SettingType.List, R, "Namespaces served by /api/v1/namespaces/{namespace}/api/tpm/tpm/provision; others answer 404.",
                o => o.Provisioning.Namespaces.ToList(), (o, v) => o.Provisioning.Namespaces = ((IEnumerable<string>)v!).ToList())
                with { Role = ServerRole.Provisioning, Extra = v => ((IEnumerable<string>)v).All(n => n.Length <= 63 && n.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')) ? null : "each namespace is 1-63 characters of A-Z, a-z, 0-9, '.', '_' and '-'" },
            S("PROVISIONING_MAX_REQUEST_BYTES", Prov, SettingType.Integer, L, "Largest provisioning request body; larger ones get 413 before they are read.",
                o => o.Provisioning.MaxRequestBytes, (o, v) => o.Provisioning.MaxRequestBytes = Long(v)) with { Role = ServerRole.Provisioning, Minimum = 4096, Maximum = 16 * 1024 * 1024 },
            S("PROVISIONING_SIGNER_TIMEOUT_SECONDS", Prov, SettingType.Duration, R, "How long the TPM CA's signer (key file or HSM) may take before the request fails with 504.",
                o => Sec(o.Provisioning.SignerTimeout), (o, v) => o.Provisioning.SignerTimeout = FromSec(v)) with { Role = ServerRole.Provisioning, Unit = "seconds", Minimum = 0.1, Maximum = 600 },
            S("PROVISIONING_AK_CERTIFICATE_LIFETIME_DAYS", Prov, SettingType.Duration, R, "Validity of issued AK certificates (capped by the TPM CA's own).",
                o => o.Provisioning.AkCertificateLifetime.TotalDays, (o, v) => o.Provisioning.AkCertificateLifetime = TimeSpan.FromDays(Convert.ToDouble(v, CultureInfo.InvariantCulture)))
                with { Role = ServerRole.Provisioning, Unit = "days", Minimum = 1, Maximum = 36_525 },
            S("PROVISIONING_UNAVAILABLE_RETRY_AFTER_SECONDS", Prov, SettingType.Integer, L, "Seconds a client is told to wait (Retry-After) when the server drains or the store is down.",
                o => (long)o.Provisioning.UnavailableRetryAfterSeconds, (o, v) => o.Provisioning.UnavailableRetryAfterSeconds = Int(v)) with { Role = ServerRole.Provisioning, Minimum = 1, Maximum = 3600 },
            S("PROVISIONING_TPM_CA_DIRECTORY", Prov, SettingType.Path, R, "The TPM CA (certificate and key) that signs AK certificates.",
                o => o.Provisioning.TpmCaDirectory, (o, v) => o.Provisioning.TpmCaDirectory = (string?)v) with { Role = ServerRole.Provisioning, Nullable = true, NullMeaning = "<DataPath>/provisioning/tpm-ca" },
            S("PROVISIONING_EK_ROOTS_DIRECTORY", Prov, SettingType.Path, R, "Trusted TPM-manufacturer roots (PEM or DER files).",
                o => o.Provisioning.EkRootsDirectory, (o, v) => o.Provisioning.EkRootsDirectory = (string?)v) with { Role = ServerRole.Provisioning, Nullable = true, NullMeaning = "<DataPath>/provisioning/ek-roots" },
            S("PROVISIONING_EK_INTERMEDIATES_DIRECTORY", Prov, SettingType.Path, R, "Manufacturer intermediate CAs, used to build chains but never trusted alone.",
                o => o.Provisioning.EkIntermediatesDirectory, (o, v) => o.Provisioning.EkIntermediatesDirectory = (string?)v) with { Role = ServerRole.Provisioning, Nullable = true, NullMeaning = "<DataPath>/provisioning/ek-intermediates" },

            // ---- Registrar (spec 001) ----
            S("REGISTRAR_VERIFY_EK_CERTIFICATE_CHAIN", Reg, SettingType.Boolean, L, "An ekcert, when sent, must chain to a trusted TPM-manufacturer root.",
                o => o.Registrar.VerifyEkCertificateChain, (o, v) => o.Registrar.VerifyEkCertificateChain = (bool)v!) with { Role = ServerRole.Registrar },
            S("REGISTRAR_REQUIRE_EK_CERTIFICATE", Reg, SettingType.Boolean, L, "Refuse registrations without an ekcert (Keylime leaves that check to the tenant).",
                o => o.Registrar.RequireEkCertificate, (o, v) => o.Registrar.RequireEkCertificate = (bool)v!) with { Role = ServerRole.Registrar },
            S("REGISTRAR_ACCEPT_NON_UUID_AGENT_IDS", Reg, SettingType.Boolean, L, "Accept agent ids that are not UUIDs but follow Keylime's looser rule (hash_ek or hostname ids).",
                o => o.Registrar.AcceptNonUuidAgentIds, (o, v) => o.Registrar.AcceptNonUuidAgentIds = (bool)v!) with { Role = ServerRole.Registrar },
            S("REGISTRAR_EK_ROOTS_DIRECTORY", Reg, SettingType.Path, R, "Trusted EK roots of the registrar.",
                o => o.Registrar.EkRootsDirectory, (o, v) => o.Registrar.EkRootsDirectory = (string?)v) with { Role = ServerRole.Registrar, Nullable = true, NullMeaning = "the provisioning surface's folder" },
            S("REGISTRAR_EK_INTERMEDIATES_DIRECTORY", Reg, SettingType.Path, R, "EK intermediates of the registrar.",
                o => o.Registrar.EkIntermediatesDirectory, (o, v) => o.Registrar.EkIntermediatesDirectory = (string?)v) with { Role = ServerRole.Registrar, Nullable = true, NullMeaning = "the provisioning surface's folder" },
            S("REGISTRAR_PLAIN_PORT", Reg, SettingType.Integer, R, "A second, plain-HTTP port for agent registration and activation only (Keylime's 8890); 0 picks a free one.",
                o => o.Registrar.PlainPort is { } p ? (long)p : null, (o, v) => o.Registrar.PlainPort = v is null ? null : Int(v))
                with { Role = ServerRole.Registrar, StartParameters = ["RegistrarPlainPort"], Minimum = 0, Maximum = 65535, Nullable = true, NullMeaning = "no plain port" },

            // ---- Agent (spec 001) ----
            S("AGENT_ID", Ag, SettingType.String, R, "The agent's id (a UUID).",
                o => o.Agent.AgentId, (o, v) => o.Agent.AgentId = (string?)v) with { Role = ServerRole.Agent, StartParameters = ["AgentId"], Nullable = true, NullMeaning = "a UUID derived from the EK" },
            S("AGENT_TPM", Ag, SettingType.String, R, "The TPM, as a tpm2-tools TCTI string (swtpm:host=127.0.0.1,port=2321, device:/dev/tpmrm0).",
                o => o.Agent.Tpm, (o, v) => o.Agent.Tpm = (string?)v) with { Role = ServerRole.Agent, StartParameters = ["Tpm"], Nullable = true, NullMeaning = "TPM2TOOLS_TCTI, else device:/dev/tpmrm0" },
            S("AGENT_EK_KIND", Ag, SettingType.Enum, R, "Which EK to use (and whose certificate to send).",
                o => o.Agent.EkKind.ToString(), (o, v) => o.Agent.EkKind = Enum.Parse<Tpm.EkKind>((string)v!)) with { Role = ServerRole.Agent, Allowed = Enum.GetNames<Tpm.EkKind>() },
            S("AGENT_AK_HANDLE", Ag, SettingType.Integer, R, "A persistent AK handle to reuse (0x81000000-0x81FFFFFF, given in decimal).",
                o => o.Agent.AkHandle is { } h ? (long)h : null, (o, v) => o.Agent.AkHandle = v is null ? null : (uint)Long(v))
                with { Role = ServerRole.Agent, StartParameters = ["AkHandle"], Minimum = 0x81000000, Maximum = 0x81FFFFFF, Nullable = true, NullMeaning = "the AK persisted on an earlier start, else a new one" },
            S("AGENT_REGISTRAR", Ag, SettingType.Url, R, "The registrar to register with at start.",
                o => o.Agent.Registrar?.ToString(), (o, v) => o.Agent.Registrar = U(v)) with { Role = ServerRole.Agent, StartParameters = ["Registrar"], Nullable = true, NullMeaning = "no registration" },
            S("AGENT_REGISTRAR_CA_CERTIFICATE_PATH", Ag, SettingType.Path, R, "The CA (PEM file) the registrar's TLS certificate chains to.",
                o => o.Agent.RegistrarCaCertificatePath, (o, v) => o.Agent.RegistrarCaCertificatePath = (string?)v) with { Role = ServerRole.Agent, StartParameters = ["RegistrarCaCertificate"], Nullable = true, NullMeaning = "the system store" },
            S("AGENT_CONTACT_IP", Ag, SettingType.String, R, "Contact address sent to the registrar.",
                o => o.Agent.ContactIp, (o, v) => o.Agent.ContactIp = (string?)v) with { Role = ServerRole.Agent, Nullable = true, NullMeaning = "the server's contact address" },
            S("AGENT_CONTACT_PORT", Ag, SettingType.Integer, R, "Contact port sent to the registrar.",
                o => o.Agent.ContactPort is { } p ? (long)p : null, (o, v) => o.Agent.ContactPort = v is null ? null : Int(v)) with { Role = ServerRole.Agent, Minimum = 1, Maximum = 65535, Nullable = true, NullMeaning = "the server's own port" },
            S("AGENT_IMA_MEASUREMENT_LIST_PATH", Ag, SettingType.Path, R, "The IMA runtime list served when PCR 10 is quoted.",
                o => o.Agent.ImaMeasurementListPath, (o, v) => o.Agent.ImaMeasurementListPath = (string)v!) with { Role = ServerRole.Agent },
            S("AGENT_EVENT_LOG_PATH", Ag, SettingType.Path, R, "The UEFI event log served (base64) when PCR 0 is quoted.",
                o => o.Agent.EventLogPath, (o, v) => o.Agent.EventLogPath = (string)v!) with { Role = ServerRole.Agent },
            S("AGENT_RUN_PAYLOAD_SCRIPT", Ag, SettingType.Boolean, O, "Run autorun.ps1 from a delivered payload; only the operator who starts the server may enable it.",
                o => o.Agent.RunPayloadScript) with { Role = ServerRole.Agent, StartParameters = ["EnablePayloadScript"] },
            S("AGENT_PAYLOAD_SCRIPT_HOST", Ag, SettingType.Path, O, "The PowerShell executable that runs the payload script.",
                o => o.Agent.PayloadScriptHost) with { Role = ServerRole.Agent, Nullable = true, NullMeaning = "pwsh from PATH" },
            S("AGENT_SELF_SIGNED_CERTIFICATE", Ag, SettingType.Boolean, R, "Serve a self-signed TLS certificate and register it as mtls_cert, as Keylime's agents do.",
                o => o.Agent.SelfSignedCertificate, (o, v) => o.Agent.SelfSignedCertificate = (bool)v!) with { Role = ServerRole.Agent, StartParameters = ["AgentSelfSignedCertificate"] },

            // ---- Verifier (spec 001) ----
            S("VERIFIER_QUOTE_INTERVAL_SECONDS", Ver, SettingType.Duration, L, "How often each agent is asked for a quote (Keylime's quote_interval); VERIFIER_QUOTE_SCHEDULE says from when it counts.",
                o => Sec(o.Verifier.QuoteInterval), (o, v) => o.Verifier.QuoteInterval = FromSec(v)) with { Role = ServerRole.Verifier, StartParameters = ["QuoteInterval"], Unit = "seconds", Minimum = 0, Maximum = Day },
            S("VERIFIER_QUOTE_SCHEDULE", Ver, SettingType.Enum, L, "What the quote interval counts from: FixedRate, when the last quote was due (each agent asked every interval); AfterVerdict, the last verdict (Keylime's pacing: interval plus round trip).",
                o => o.Verifier.QuoteSchedule.ToString(), (o, v) => o.Verifier.QuoteSchedule = Enum.Parse<Attestation.Verifier.QuoteSchedule>((string)v!)) with { Role = ServerRole.Verifier, StartParameters = ["QuoteSchedule"], Allowed = Enum.GetNames<Attestation.Verifier.QuoteSchedule>() },
            S("VERIFIER_RETRY_INTERVAL_SECONDS", Ver, SettingType.Number, L, "Base of the retry back-off (Keylime's retry_interval): retry n waits interval^n seconds.",
                o => o.Verifier.RetryInterval, (o, v) => o.Verifier.RetryInterval = Convert.ToDouble(v, CultureInfo.InvariantCulture)) with { Role = ServerRole.Verifier, Minimum = 0.1, Maximum = 3600 },
            S("VERIFIER_MAX_RETRIES", Ver, SettingType.Integer, L, "Retries before an unreachable agent is FAILED (Keylime's max_retries).",
                o => (long)o.Verifier.MaxRetries, (o, v) => o.Verifier.MaxRetries = Int(v)) with { Role = ServerRole.Verifier, Minimum = 0, Maximum = 100 },
            S("VERIFIER_EXPONENTIAL_BACKOFF", Ver, SettingType.Boolean, L, "Exponential back-off (Keylime's exponential_backoff); false retries every retry interval.",
                o => o.Verifier.ExponentialBackoff, (o, v) => o.Verifier.ExponentialBackoff = (bool)v!) with { Role = ServerRole.Verifier },
            S("VERIFIER_REQUEST_TIMEOUT_SECONDS", Ver, SettingType.Duration, R, "Timeout of one request to an agent.",
                o => Sec(o.Verifier.RequestTimeout), (o, v) => o.Verifier.RequestTimeout = FromSec(v)) with { Role = ServerRole.Verifier, Unit = "seconds", Minimum = 1, Maximum = 600 },
            S("VERIFIER_MAX_CONCURRENT_REQUESTS", Ver, SettingType.Integer, R, "How many agents are asked for a quote at the same time.",
                o => (long)o.Verifier.MaxConcurrentRequests, (o, v) => o.Verifier.MaxConcurrentRequests = Int(v)) with { Role = ServerRole.Verifier, Minimum = 1, Maximum = 4096 },
            S("VERIFIER_ID", Ver, SettingType.String, R, "This verifier's id (Keylime's verifier_id).",
                o => o.Verifier.VerifierId, (o, v) => o.Verifier.VerifierId = (string)v!)
                with { Role = ServerRole.Verifier, Extra = v => ((string)v).Length is >= 1 and <= 80 && ((string)v).All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.') ? null : "must be 1-80 characters of A-Z, a-z, 0-9, '.', '_' and '-'" },
            S("VERIFIER_LEASE_DURATION_SECONDS", Ver, SettingType.Duration, R, "On a shared (PostgreSQL) store: how long a verifier's claim on an agent lasts unrenewed; a dead verifier's agents move to the others after it.",
                o => o.Verifier.LeaseDuration is { } d ? Sec(d) : null, (o, v) => o.Verifier.LeaseDuration = v is null ? null : FromSec(v))
                with { Role = ServerRole.Verifier, Unit = "seconds", Minimum = 2, Maximum = Day, Nullable = true, NullMeaning = "three quote intervals, at least 6 s" },
            S("VERIFIER_REVOCATION_WEBHOOKS", Ver, SettingType.List, R, "Webhooks that receive revocation notifications (Keylime's webhook_url), comma-separated http(s) URLs.",
                o => o.Verifier.RevocationWebhooks.Select(u => u.ToString()).ToList(), (o, v) => o.Verifier.RevocationWebhooks = ((IEnumerable<string>)v!).Select(s => new Uri(s)).ToList())
                with { Role = ServerRole.Verifier, StartParameters = ["RevocationWebhook"], Extra = v => ((IEnumerable<string>)v).All(s => Uri.TryCreate(s, UriKind.Absolute, out var u) && u.Scheme is "http" or "https" && u.UserInfo.Length == 0) ? null : "each webhook must be an absolute http or https URL without user information" },
            S("VERIFIER_REQUIRE_AGENT_MTLS", Ver, SettingType.Boolean, R, "Require agents to present the certificate registered as mtls_cert (Keylime's enable_agent_mtls).",
                o => o.Verifier.RequireAgentMtls, (o, v) => o.Verifier.RequireAgentMtls = (bool)v!) with { Role = ServerRole.Verifier },
            S("VERIFIER_CLIENT_CERTIFICATE", Ver, SettingType.Object, O, "The client certificate (with key) the verifier presents to agents.",
                o => o.Verifier.ClientCertificate?.Subject) with { Role = ServerRole.Verifier, StartParameters = ["VerifierClientCertificate"], Nullable = true, NullMeaning = "one issued by the components CA" },

            // ---- KMS (specs 002, 004) ----
            S("KMS_MASTER_KEY", Kms, SettingType.Enum, O, "How the master key is protected (Tpm, Pkcs11, InsecureFile); changing it needs a key migration, not a setting.",
                o => o.Kms.MasterKey.ToString()) with { Role = ServerRole.Kms, StartParameters = ["KmsMasterKey", "KmsSettings"], Allowed = Enum.GetNames<Kms.MasterKeyKind>() },
            S("KMS_MASTER_KEY_TPM", Kms, SettingType.String, O, "The server's own TPM for the Tpm master key (TCTI string).",
                o => o.Kms.MasterKeyTpm) with { Role = ServerRole.Kms, StartParameters = ["KmsMasterKeyTpm", "KmsSettings"], Nullable = true, NullMeaning = "TPM2TOOLS_TCTI or the platform default" },
            S("KMS_MASTER_KEY_PKCS11", Kms, SettingType.Object, O, "The HSM for the Pkcs11 master key.",
                o => o.Kms.MasterKeyPkcs11?.ToString()) with { Role = ServerRole.Kms, StartParameters = ["KmsSettings"], Nullable = true },
            S("KMS_HSM_LUNA_SOURCE", Kms, SettingType.Object, O, "The HSM that serves the hsm-luna key source tier.",
                o => o.Kms.HsmLunaSource?.ToString()) with { Role = ServerRole.Kms, StartParameters = ["KmsSettings"], Nullable = true },
            S("KMS_ACCOUNT", Kms, SettingType.String, R, "CCKM account field of every resource.",
                o => o.Kms.Account, (o, v) => o.Kms.Account = (string)v!) with { Role = ServerRole.Kms, StartParameters = ["KmsSettings"] },
            S("KMS_URI_PREFIX", Kms, SettingType.String, R, "Prefix of CCKM uri fields.",
                o => o.Kms.UriPrefix, (o, v) => o.Kms.UriPrefix = (string)v!) with { Role = ServerRole.Kms, StartParameters = ["KmsSettings"] },
            S("KMS_DEFAULT_COMPARTMENT_ID", Kms, SettingType.String, R, "OCI compartment of keys created without one.",
                o => o.Kms.DefaultCompartmentId, (o, v) => o.Kms.DefaultCompartmentId = (string)v!) with { Role = ServerRole.Kms, StartParameters = ["KmsSettings"] },
            S("KMS_OCI_REGION", Kms, SettingType.String, R, "OCI region part of generated OCIDs.",
                o => o.Kms.OciRegion, (o, v) => o.Kms.OciRegion = (string)v!) with { Role = ServerRole.Kms, StartParameters = ["KmsSettings"] },
            S("KMS_SESSION_LIFETIME_SECONDS", Kms, SettingType.Duration, L, "Lifetime of a vSphere session id.",
                o => Sec(o.Kms.SessionLifetime), (o, v) => o.Kms.SessionLifetime = FromSec(v)) with { Role = ServerRole.Kms, StartParameters = ["KmsSettings"], Unit = "seconds", Minimum = 60, Maximum = Day },
            S("KMS_TOKEN_LIFETIME_SECONDS", Kms, SettingType.Duration, L, "Lifetime of a CipherTrust bearer token (CipherTrust's default 300 s).",
                o => Sec(o.Kms.TokenLifetime), (o, v) => o.Kms.TokenLifetime = FromSec(v)) with { Role = ServerRole.Kms, StartParameters = ["KmsSettings"], Unit = "seconds", Minimum = 30, Maximum = Day },
            S("KMS_PASSWORD_ITERATIONS", Kms, SettingType.Integer, L, "PBKDF2-SHA256 iterations for new user passwords (OWASP 2023: 600,000).",
                o => (long)o.Kms.PasswordIterations, (o, v) => o.Kms.PasswordIterations = Int(v)) with { Role = ServerRole.Kms, StartParameters = ["KmsSettings"], Minimum = 100_000, Maximum = 10_000_000 },
            S("KMS_LOGIN_FREE_FAILURES", Kms, SettingType.Integer, L, "Failed logins a user name, or an address, may have before it is locked out.",
                o => (long)o.Kms.LoginThrottle.FreeFailures, (o, v) => o.Kms.LoginThrottle.FreeFailures = Int(v)) with { Role = ServerRole.Kms, StartParameters = ["KmsSettings"], Minimum = 1, Maximum = 100 },
            S("KMS_LOGIN_FIRST_LOCKOUT_SECONDS", Kms, SettingType.Duration, L, "The first lockout; each further failure doubles it.",
                o => Sec(o.Kms.LoginThrottle.FirstLockout), (o, v) => o.Kms.LoginThrottle.FirstLockout = FromSec(v)) with { Role = ServerRole.Kms, StartParameters = ["KmsSettings"], Unit = "seconds", Minimum = 0.1, Maximum = 3600 },
            S("KMS_LOGIN_MAX_USER_LOCKOUT_SECONDS", Kms, SettingType.Duration, L, "The longest a user name is locked out.",
                o => Sec(o.Kms.LoginThrottle.MaxUserLockout), (o, v) => o.Kms.LoginThrottle.MaxUserLockout = FromSec(v)) with { Role = ServerRole.Kms, StartParameters = ["KmsSettings"], Unit = "seconds", Minimum = 1, Maximum = Day },
            S("KMS_LOGIN_MAX_ADDRESS_LOCKOUT_SECONDS", Kms, SettingType.Duration, L, "The longest an address is locked out.",
                o => Sec(o.Kms.LoginThrottle.MaxAddressLockout), (o, v) => o.Kms.LoginThrottle.MaxAddressLockout = FromSec(v)) with { Role = ServerRole.Kms, StartParameters = ["KmsSettings"], Unit = "seconds", Minimum = 1, Maximum = 7 * Day },
            S("KMS_LOGIN_FORGET_AFTER_SECONDS", Kms, SettingType.Duration, L, "Failures older than this (with no lockout running) are forgotten.",
                o => Sec(o.Kms.LoginThrottle.ForgetAfter), (o, v) => o.Kms.LoginThrottle.ForgetAfter = FromSec(v)) with { Role = ServerRole.Kms, StartParameters = ["KmsSettings"], Unit = "seconds", Minimum = 1, Maximum = 7 * Day },
            S("KMS_VERIFIER", Kms, SettingType.Url, R, "The Keylime verifier the release gate asks; empty: every release is refused.",
                o => o.Kms.Verifier?.ToString(), (o, v) => o.Kms.Verifier = U(v)) with { Role = ServerRole.Kms, StartParameters = ["KmsVerifier", "KmsSettings"], Nullable = true, NullMeaning = "no release" },
            S("KMS_REGISTRAR", Kms, SettingType.Url, R, "The Keylime registrar holding the agents' mTLS certificates.",
                o => o.Kms.Registrar?.ToString(), (o, v) => o.Kms.Registrar = U(v)) with { Role = ServerRole.Kms, StartParameters = ["KmsRegistrar", "KmsSettings"], Nullable = true, NullMeaning = "the verifier's address" },
            S("KMS_KEYLIME_CA_CERTIFICATE", Kms, SettingType.Object, O, "CA that issued the verifier's and registrar's TLS certificates.",
                o => o.Kms.KeylimeCaCertificate?.Subject) with { Role = ServerRole.Kms, StartParameters = ["KmsSettings"], Nullable = true, NullMeaning = "this server's components CA" },
            S("KMS_KEYLIME_CLIENT_CERTIFICATE", Kms, SettingType.Object, O, "Client certificate for the verifier and registrar.",
                o => o.Kms.KeylimeClientCertificate?.Subject) with { Role = ServerRole.Kms, StartParameters = ["KmsSettings"], Nullable = true, NullMeaning = "one issued by the components CA" },
            S("KMS_MAX_ATTESTATION_AGE_SECONDS", Kms, SettingType.Duration, R, "A key release needs a successful attestation at most this old.",
                o => Sec(o.Kms.MaxAttestationAge), (o, v) => o.Kms.MaxAttestationAge = FromSec(v)) with { Role = ServerRole.Kms, StartParameters = ["KmsMaxAttestationAge", "KmsSettings"], Unit = "seconds", Minimum = 1, Maximum = Day },
            S("KMS_REVOCATION_PUBLIC_KEY", Kms, SettingType.Object, O, "Public key (PEM) that signs Keylime revocation notices; empty: notices are refused.",
                o => o.Kms.RevocationPublicKeyPem is null ? null : "(PEM set)") with { Role = ServerRole.Kms, StartParameters = ["KmsRevocationPublicKey", "KmsSettings"], Nullable = true },
            S("KMS_REVOCATION_MAX_AGE_SECONDS", Kms, SettingType.Duration, L, "A revocation notice is honoured only when its event_time is at most this far from now (replays refused).",
                o => Sec(o.Kms.RevocationMaxAge), (o, v) => o.Kms.RevocationMaxAge = FromSec(v)) with { Role = ServerRole.Kms, StartParameters = ["KmsSettings"], Unit = "seconds", Minimum = 10, Maximum = Day },

            // ---- Station (spec 003) ----
            S("STATION_HOOK_TIMEOUT_SECONDS", St, SettingType.Duration, L, "How long one hook script may run before it is stopped and its stage fails (the original's RPI_SB_HOOK_TIMEOUT).",
                o => Sec(o.Station.HookTimeout), (o, v) => o.Station.HookTimeout = FromSec(v)) with { Role = ServerRole.Station, StartParameters = ["StationHookTimeout"], Unit = "seconds", Minimum = 1, Maximum = Day },
            S("STATION_MAX_SCRIPT_BYTES", St, SettingType.Integer, L, "Largest script accepted by save-script and upload-script (413 SCRIPT_TOO_LARGE above).",
                o => (long)o.Station.MaxScriptBytes, (o, v) => o.Station.MaxScriptBytes = Int(v)) with { Role = ServerRole.Station, Minimum = 1024, Maximum = 16 * 1024 * 1024 },
            S("STATION_PUBLIC_DASHBOARD", St, SettingType.Boolean, L, "An anonymous read-only view of devices and states (never logs or keys).",
                o => o.Station.PublicDashboard, (o, v) => o.Station.PublicDashboard = (bool)v!) with { Role = ServerRole.Station, StartParameters = ["StationPublicDashboard"] },
            S("STATION_SCRIPTS_DIRECTORY", St, SettingType.Path, R, "The folder of customisation scripts.",
                o => o.Station.ScriptsDirectory, (o, v) => o.Station.ScriptsDirectory = (string?)v) with { Role = ServerRole.Station, Nullable = true, NullMeaning = "<DataPath>/station/scripts" },
            S("STATION_SCRIPT_RUNNER", St, SettingType.Object, O, "Runs hook scripts (PowerShell, each in a runspace of its own; supplied by Start-ProvisioningServer).",
                o => o.Station.ScriptRunner is null ? null : "powershell") with { Role = ServerRole.Station, Nullable = true, NullMeaning = "no runner: an enabled hook fails its stage" },
            S("STATION_IMAGE_NAME", St, SettingType.String, L, "The image assigned to devices provisioned here, copied into their manufacturing records.",
                o => o.Station.ImageName, (o, v) => o.Station.ImageName = (string?)v) with { Role = ServerRole.Station, Nullable = true, NullMeaning = "none" },
            S("STATION_IMAGE_SHA256", St, SettingType.String, L, "The SHA-256 (hex) of the assigned image, copied into manufacturing records.",
                o => o.Station.ImageSha256, (o, v) => o.Station.ImageSha256 = ((string?)v)?.ToLowerInvariant())
                with { Role = ServerRole.Station, Nullable = true, NullMeaning = "none", RuleText = "must be 64 hexadecimal characters (or empty for none)",
                       Extra = v => ((string)v).Length == 64 && ((string)v).All(char.IsAsciiHexDigit) ? null : "must be 64 hexadecimal characters (or empty for none)" },
            S("STATION_VERIFIER", St, SettingType.Url, R, "The Keylime verifier whose attestation state device details show.",
                o => o.Station.Verifier?.ToString(), (o, v) => o.Station.Verifier = U(v)) with { Role = ServerRole.Station, StartParameters = ["StationVerifier"], Nullable = true, NullMeaning = "none" },
            S("STATION_WATCH_INTERVAL_SECONDS", St, SettingType.Duration, R, "How often the station looks for registrations and the verifier's verdicts.",
                o => Sec(o.Station.WatchInterval), (o, v) => o.Station.WatchInterval = FromSec(v)) with { Role = ServerRole.Station, Unit = "seconds", Minimum = 0.5, Maximum = 3600 },
            S("STATION_IMAGES_DIRECTORY", St, SettingType.Path, R, "The images folder: uploads, hashes and analysis are confined to it.",
                o => o.Station.ImagesDirectory, (o, v) => o.Station.ImagesDirectory = (string?)v) with { Role = ServerRole.Station, Nullable = true, NullMeaning = "<DataPath>/station/images" },
            S("STATION_MAX_IMAGE_BYTES", St, SettingType.Integer, R, "Largest image /upload-image accepts (413 IMAGE_TOO_LARGE above); uploads are streamed to disk, never held in memory.",
                o => o.Station.MaxImageBytes, (o, v) => o.Station.MaxImageBytes = Long(v)) with { Role = ServerRole.Station, Unit = "bytes", Minimum = 1024 * 1024, Maximum = 16L * 1024 * 1024 * 1024 * 1024 },
            S("STATION_FIRMWARE_DIRECTORY", St, SettingType.Path, L, "The firmware catalogue: one folder per device family, each with release files and optional notes.",
                o => o.Station.FirmwareDirectory, (o, v) => o.Station.FirmwareDirectory = (string?)v) with { Role = ServerRole.Station, Nullable = true, NullMeaning = "<DataPath>/station/firmware" },
        ];
    }

    /// <summary>The settings a start parameter sets (for <see cref="ServerOptions.ExplicitSettings"/>).</summary>
    public static IEnumerable<SettingDefinition> ForStartParameter(string parameter) =>
        All.Where(d => d.StartParameters.Contains(parameter, StringComparer.OrdinalIgnoreCase));

    /// <summary>Marks the settings of the given bound start parameters as explicit, so persisted values do not replace them.</summary>
    public static void MarkExplicit(ServerOptions options, IEnumerable<string> boundParameters)
    {
        ArgumentNullException.ThrowIfNull(options);
        foreach (var p in boundParameters)
            foreach (var d in ForStartParameter(p)) options.ExplicitSettings.Add(d.Name);
    }

    /// <summary>The persisted value in its text form, turned back into a checked value.</summary>
    public static (object? Value, SettingError? Error) Parse(SettingDefinition d, string? stored) => d.Check(stored is null ? null : stored);

    /// <summary>
    /// Applies persisted settings to <paramref name="options"/> at server start: each known, settable one whose start parameter
    /// was not given explicitly. Returns what was applied, and warnings for values skipped (unknown name, no longer valid).
    /// </summary>
    public static (IReadOnlyList<string> Applied, IReadOnlyList<string> Skipped) ApplyPersisted(ServerOptions options, IEnumerable<Storage.StoredSetting> stored)
    {
        ArgumentNullException.ThrowIfNull(options);
        var applied = new List<string>();
        var skipped = new List<string>();
        foreach (var s in stored)
        {
            if (s.Name.Contains(':', StringComparison.Ordinal)) continue; // station state kept beside the settings (firmware selection)
            var d = Find(s.Name);
            if (d is null || !d.Settable) { skipped.Add($"{s.Name}: not a setting this version knows"); continue; }
            if (options.ExplicitSettings.Contains(d.Name)) { skipped.Add($"{d.Name}: given as a start parameter, which wins"); continue; }
            var (value, error) = d.Check(s.Value);
            if (error is not null) { skipped.Add($"{error.Message} (stored value ignored)"); continue; }
            d.SetValue(options, value);
            applied.Add(d.Name);
        }
        return (applied, skipped);
    }

    /// <summary>
    /// Every setting with its value in <paramref name="options"/> (a running server's, or defaults with the stored values applied),
    /// its default, where the value came from, and the stored value still waiting for a restart when it differs.
    /// </summary>
    public static IReadOnlyList<ProvisioningOption> Describe(ServerOptions options, IEnumerable<Storage.StoredSetting> stored)
    {
        ArgumentNullException.ThrowIfNull(options);
        var storedBy = stored.Where(s => !s.Name.Contains(':', StringComparison.Ordinal)).GroupBy(s => s.Name, StringComparer.OrdinalIgnoreCase)
            .ToDictionary(g => g.Key, g => g.Last(), StringComparer.OrdinalIgnoreCase);
        return All.Select(d =>
        {
            object? value = d.GetValue(options), pending = null;
            bool isStored = d.Settable && storedBy.TryGetValue(d.Name, out var st) && !options.ExplicitSettings.Contains(d.Name);
            if (isStored && d.Check(storedBy[d.Name].Value) is { Error: null } parsed && SettingDefinition.Format(parsed.Value) != SettingDefinition.Format(value))
                pending = parsed.Value;
            return new ProvisioningOption
            {
                Name = d.Name, Section = d.Section, Value = value, Default = d.Default, Type = d.Type.ToString(), Rule = d.Rule,
                Apply = d.Apply.ToString(), Description = d.Description, Settable = d.Settable, Pending = pending,
                Source = options.ExplicitSettings.Contains(d.Name) ? "start" : isStored ? "stored" : "default",
            };
        }).ToList();
    }

    /// <summary>
    /// Checks every value of <paramref name="changes"/> (all or nothing) against the catalogue: the first refusal is thrown as a
    /// <see cref="SettingException"/>; otherwise the checked values, in the given order.
    /// </summary>
    public static IReadOnlyList<(SettingDefinition Setting, object? Value)> CheckAll(IEnumerable<KeyValuePair<string, object?>> changes)
    {
        var checkedValues = new List<(SettingDefinition, object?)>();
        var seen = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var (name, raw) in changes)
        {
            var d = Find(name) ?? throw new SettingException(new SettingError(name, SettingError.UnknownField, $"{Clip(name)}: not a setting; see GET /options/get or docs/configuration.md", null));
            if (!seen.Add(d.Name)) throw new SettingException(new SettingError(d.Name, SettingError.InvalidValue, $"{d.Name}: given more than once", null));
            var (value, error) = d.Check(raw);
            if (error is not null) throw new SettingException(error);
            checkedValues.Add((d, value));
        }
        return checkedValues;
    }

    private static string Clip(string s) => s.Length <= 64 ? s : s[..64] + "…";

    /// <summary>The configuration reference in Markdown (<c>docs/configuration.md</c> holds this text; a test compares them).</summary>
    public static string ToMarkdown()
    {
        var sb = new StringBuilder();
        foreach (var section in All.GroupBy(d => d.Section))
        {
            sb.Append("## ").Append(section.Key).Append("\n\n");
            sb.Append("| Setting | Type | Default | Rule | Applies | Start parameter | Meaning |\n|---|---|---|---|---|---|---|\n");
            foreach (var d in section)
            {
                string def = SettingDefinition.Format(d.Default) is { Length: > 0 } f ? "`" + f + "`" : Esc(d.NullMeaning ?? "(empty)");
                sb.Append($"| `{d.Name}` | {d.Type}{(d.Unit is null ? "" : " (" + d.Unit + ")")} | {def} | {Esc(d.Rule)} | {d.Apply} | {(d.StartParameters.Count == 0 ? "" : string.Join(", ", d.StartParameters.Select(p => "`-" + p + "`")))} | {Esc(d.Description)} |\n");
            }
            sb.Append('\n');
        }
        return sb.ToString();
    }

    private static string Esc(string s) => s.Replace("|", "\\|", StringComparison.Ordinal).Replace("<", "&lt;", StringComparison.Ordinal).Replace(">", "&gt;", StringComparison.Ordinal);
}
