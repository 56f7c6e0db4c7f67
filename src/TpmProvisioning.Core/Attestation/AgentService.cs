using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Attestation;

/// <summary>Settings of the Keylime agent surface.</summary>
public sealed class AgentSettings
{
    /// <summary>The agent's id (a UUID); null derives a UUID from the EK (see <see cref="AgentService.AgentIdFromEk"/>).</summary>
    public string? AgentId { get; set; }
    /// <summary>
    /// The TPM, as a tpm2-tools TCTI string (<c>swtpm:host=127.0.0.1,port=2321</c>, <c>device:/dev/tpmrm0</c>); null reads
    /// <c>TPM2TOOLS_TCTI</c>, else uses <c>device:/dev/tpmrm0</c> when that exists (see <see cref="AgentService.ResolveTpm"/>).
    /// </summary>
    public string? Tpm { get; set; }
    /// <summary>Which EK to use (and whose certificate to send).</summary>
    public EkKind EkKind { get; set; } = EkKind.Rsa2048;
    /// <summary>
    /// A persistent AK to reuse (for example one provisioned at the factory). Null: the agent uses the AK it persisted on an
    /// earlier start (remembered in <c>agent_data.json</c> under its state folder, reused while the TPM still holds the same
    /// public area there), else creates one and persists it at a free handle from <see cref="AgentService.AutoAkHandleFirst"/>,
    /// so a restart registers the same AK again.
    /// </summary>
    public uint? AkHandle { get; set; }
    /// <summary>The registrar to register with at start (for example <c>https://registrar:8891</c>); null skips registration.</summary>
    public Uri? Registrar { get; set; }
    /// <summary>The CA (PEM file) the registrar's TLS certificate chains to; null uses the system store.</summary>
    public string? RegistrarCaCertificatePath { get; set; }
    /// <summary>Contact address sent to the registrar.</summary>
    public string? ContactIp { get; set; }
    /// <summary>Contact port sent to the registrar; null sends the server's own port.</summary>
    public int? ContactPort { get; set; }
    /// <summary>The IMA runtime list served when PCR 10 is quoted.</summary>
    public string ImaMeasurementListPath { get; set; } = "/sys/kernel/security/ima/ascii_runtime_measurements";
    /// <summary>The UEFI event log served (base64) when PCR 0 is quoted.</summary>
    public string EventLogPath { get; set; } = "/sys/kernel/security/tpm0/binary_bios_measurements";
    /// <summary>
    /// Run <c>autorun.ps1</c> from a delivered zip payload (Keylime's <c>autorun.sh</c>), in PowerShell, once the bootstrap
    /// key is derived. Off by default: only an operator who trusts the tenant enables it.
    /// </summary>
    public bool RunPayloadScript { get; set; }
    /// <summary>The PowerShell executable that runs the payload script; null is <c>pwsh</c> from PATH.</summary>
    public string? PayloadScriptHost { get; set; }
    /// <summary>
    /// Serve a self-signed TLS certificate (kept in <c>agent/mtls/</c> under the data path) and register it as <c>mtls_cert</c>,
    /// as Keylime's agents do, so Keylime's verifier and tenant trust it with their default set-up. Off: the certificate is
    /// issued by the components CA, which Keylime trusts only with that CA in its <c>trusted_server_ca</c>.
    /// </summary>
    public bool SelfSignedCertificate { get; set; }
}

/// <summary>The agent's self-signed TLS certificate (<see cref="AgentSettings.SelfSignedCertificate"/>).</summary>
public static class AgentSelfSignedCertificate
{
    public const string FileName = "server.pfx";

    /// <summary>
    /// Loads the agent's self-signed certificate from <paramref name="directory"/> while it is valid for 30 more days and names
    /// <paramref name="address"/>; else makes one (RSA 2048, SHA-256, serverAuth and clientAuth, SAN: the address, 127.0.0.1,
    /// localhost; no key usage, so OpenSSL takes it as its own issuer, as it does rust-keylime's) and keeps it (0600).
    /// </summary>
    public static X509Certificate2 LoadOrCreate(string directory, System.Net.IPAddress address, string commonName = "keylime-agent")
    {
        Storage.PrivateFiles.CreateFolder(directory);
        var path = Path.Combine(directory, FileName);
        if (File.Exists(path))
        {
            try
            {
                var existing = X509CertificateLoader.LoadPkcs12FromFile(path, null, X509KeyStorageFlags.Exportable);
                bool names = existing.Extensions.OfType<X509SubjectAlternativeNameExtension>().Any(e => e.EnumerateIPAddresses().Contains(address))
                    || address.Equals(System.Net.IPAddress.Any) || address.Equals(System.Net.IPAddress.IPv6Any);
                if (existing.Subject == existing.Issuer && existing.NotAfter > DateTime.Now.AddDays(30) && names) return existing;
                existing.Dispose();
            }
            catch (CryptographicException) { }
        }
        using var key = RSA.Create(2048);
        var req = new CertificateRequest(new X500DistinguishedName("CN=" + commonName), key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(System.Net.IPAddress.Loopback);
        if (!address.Equals(System.Net.IPAddress.Loopback) && !address.Equals(System.Net.IPAddress.Any) && !address.Equals(System.Net.IPAddress.IPv6Any)) san.AddIpAddress(address);
        san.AddDnsName("localhost");
        req.CertificateExtensions.Add(san.Build());
        req.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(new OidCollection { new Oid("1.3.6.1.5.5.7.3.1"), new Oid("1.3.6.1.5.5.7.3.2") }, false));
        req.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(req.PublicKey, false));
        var now = DateTimeOffset.UtcNow;
        using var cert = req.CreateSelfSigned(now.AddMinutes(-5), now.AddYears(2));
        var pfx = cert.Export(X509ContentType.Pkcs12);
        Storage.PrivateFiles.WriteAllBytes(path, pfx);
        return X509CertificateLoader.LoadPkcs12(pfx, null, X509KeyStorageFlags.Exportable);
    }
}

/// <summary><c>GET /v2.1/agent/info</c>'s results.</summary>
public sealed record AgentInfo
{
    [JsonPropertyName("agent_uuid")] public required string AgentUuid { get; init; }
    [JsonPropertyName("tpm_hash_alg")] public required string TpmHashAlg { get; init; }
    [JsonPropertyName("tpm_enc_alg")] public required string TpmEncAlg { get; init; }
    [JsonPropertyName("tpm_sign_alg")] public required string TpmSignAlg { get; init; }
    [JsonPropertyName("ak_handle")] public required uint AkHandle { get; init; }
}

/// <summary><c>GET /v2.1/keys/pubkey</c>'s results.</summary>
public sealed record AgentPublicKey
{
    [JsonPropertyName("pubkey")] public required string Pubkey { get; init; }
}

/// <summary>A quote as <c>/quotes/integrity</c> and <c>/quotes/identity</c> answer it.</summary>
public sealed record AgentQuote
{
    [JsonPropertyName("quote")] public required string Quote { get; init; }
    [JsonPropertyName("hash_alg")] public required string HashAlg { get; init; }
    [JsonPropertyName("enc_alg")] public required string EncAlg { get; init; }
    [JsonPropertyName("sign_alg")] public required string SignAlg { get; init; }
    [JsonPropertyName("pubkey")] [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public string? Pubkey { get; init; }
    [JsonPropertyName("boottime")] public required long Boottime { get; init; }
    [JsonPropertyName("ima_measurement_list")] [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public string? ImaMeasurementList { get; init; }
    [JsonPropertyName("ima_measurement_list_entry")] [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public int? ImaMeasurementListEntry { get; init; }
    [JsonPropertyName("mb_measurement_list")] [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public string? MbMeasurementList { get; init; }
}

/// <summary>
/// Spec 001's agent: holds one connection to the TPM (swtpm and unmanaged TPMs take one at a time), an EK and an AK, and the
/// NK (an RSA key whose PEM digest is extended into PCR 16 so identity quotes bind it); answers quotes in Keylime's format.
/// </summary>
public sealed partial class AgentService : IDisposable
{
    /// <summary>Keylime's data PCR: the NK's digest is measured here.</summary>
    public const int DataPcr = 16;
    /// <summary>The IMA PCR.</summary>
    public const int ImaPcr = 10;

    private readonly SemaphoreSlim _gate = new(1, 1);
    /// <summary>The open TPM when the agent holds its connection (a resource-managed device); null when it opens one per operation.</summary>
    private readonly TpmDevice? _held;
    private readonly string _tcti;
    private readonly AgentSettings _settings;
    private readonly RSA _nk;
    private readonly uint _akHandle;
    private readonly TpmPublic _ak;

    private AgentService(TpmDevice? held, string tcti, AgentSettings settings, RSA nk, uint akHandle, TpmPublic ak, byte[] ekPublic, byte[]? ekCert, string agentId, AgentPayloadReceiver payloads)
    {
        Payloads = payloads;
        _held = held;
        _tcti = tcti;
        _settings = settings;
        _nk = nk;
        _akHandle = akHandle;
        _ak = ak;
        EkPublic = ekPublic;
        EkCertificate = ekCert;
        AgentId = agentId;
        NkPublicPem = nk.ExportSubjectPublicKeyInfoPem() + "\n";
    }

    public string AgentId { get; }
    public byte[] EkPublic { get; }
    public byte[] AkPublic => _ak.ToTpm2B();
    public TpmPublic Ak => _ak;
    public uint AkHandle => _akHandle;
    public byte[]? EkCertificate { get; }
    /// <summary>The bootstrap key exchange and payload delivery (<c>keys/ukey</c>, <c>keys/vkey</c>, <c>keys/verify</c>).</summary>
    public AgentPayloadReceiver Payloads { get; }
    /// <summary>The NK's public key, PEM (SubjectPublicKeyInfo), as <c>keys/pubkey</c> serves it.</summary>
    public string NkPublicPem { get; }

    /// <summary>First handle the agent persists its own AK at: the one default of the module (New-TpmProvisioning, New-TpmAttestationKey, Register-AttestationAgent).</summary>
    public const uint AutoAkHandleFirst = TpmProvisioning.Provisioning.DeviceProvisioning.DefaultAkHandleSearchStart;
    /// <summary>Last handle of that range.</summary>
    public const uint AutoAkHandleLast = 0x810000FF;
    /// <summary>The file under the state folder that remembers the persisted AK (as rust-keylime's <c>agent_data.json</c>).</summary>
    public const string AgentDataFileName = "agent_data.json";

    /// <summary>
    /// The TPM connection the agent uses: <paramref name="configured"/>, else <c>TPM2TOOLS_TCTI</c>, else
    /// <c>device:/dev/tpmrm0</c> when that device exists; throws <see cref="TpmUnavailableException"/> when none applies.
    /// </summary>
    public static string ResolveTpm(string? configured)
    {
        if (!string.IsNullOrWhiteSpace(configured)) return configured;
        var env = Environment.GetEnvironmentVariable("TPM2TOOLS_TCTI");
        if (!string.IsNullOrWhiteSpace(env)) return env;
        if (File.Exists("/dev/tpmrm0")) return "device:/dev/tpmrm0";
        throw new TpmUnavailableException("No TPM given and none found: pass -Tpm (for example swtpm:host=127.0.0.1,port=2321), set TPM2TOOLS_TCTI, or run where /dev/tpmrm0 exists.");
    }

    /// <summary>
    /// Opens the TPM, makes the EK (transient), reuses the persistent AK at <see cref="AgentSettings.AkHandle"/> or the one
    /// remembered under <paramref name="stateDirectory"/> (else creates and persists one), makes the NK, resets PCR 16 and
    /// extends SHA-x(NK PEM) into it in every active bank. Payloads go to <c>secure/</c> under <paramref name="stateDirectory"/>.
    /// Throws <see cref="TpmUnavailableException"/> when the TPM cannot be opened or used.
    /// </summary>
    public static AgentService Start(AgentSettings settings, string stateDirectory, Action<string>? log = null)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentException.ThrowIfNullOrEmpty(stateDirectory);
        string tcti = ResolveTpm(settings.Tpm);
        TpmDevice tpm;
        try { tpm = TpmDevice.Open(tcti); }
        catch (Exception ex) when (ex is IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException or TpmException or ArgumentException or InvalidOperationException or NotSupportedException)
        {
            throw new TpmUnavailableException($"The TPM at '{tcti}' cannot be opened: {ex.Message}", ex);
        }
        uint ek = 0, ak = 0;
        RSA? nk = null;
        try
        {
            var ekObj = tpm.CreateEk(settings.EkKind);
            ek = ekObj.Handle;
            var ekCert = tpm.ReadEkCertificateDer(settings.EkKind);
            TpmPublic akPub;
            if (settings.AkHandle is { } h)
            {
                ak = h;
                akPub = tpm.ReadPublic(h).Object.Public;
                if (!akPub.IsRestrictedSigningKey(out var why))
                    throw new InvalidOperationException($"The AK at 0x{h:X8} is not a restricted signing key: {why}.");
            }
            else
            {
                (ak, akPub) = PersistedAk(tpm, stateDirectory, log);
            }
            nk = RSA.Create(2048);
            var pem = nk.ExportSubjectPublicKeyInfoPem() + "\n";
            var banks = tpm.GetPcrBanks().Banks.Where(b => b.Count > 0 && TpmHash.IsSupported(b.Hash)).Select(b => (b.Hash, TpmHash.Hash(b.Hash, Encoding.UTF8.GetBytes(pem)))).ToArray();
            // As Keylime's agent does: PCR 16 starts from zero, so a verifier can expect exactly H(0 || H(pubkey PEM)).
            tpm.PcrReset(DataPcr);
            if (banks.Length > 0) tpm.PcrExtend(DataPcr, banks);
            string id = settings.AgentId ?? AgentIdFromEk(ekObj.Public.ToTpm2B());
            var receiver = new AgentPayloadReceiver(nk, id, Path.Combine(stateDirectory, "secure"), settings, log);
            // The EK is made again (same seed, same key) when a registration needs it; the AK is persistent.
            tpm.TryFlush(ek);
            ek = 0;
            bool hold = HoldsConnection(tcti);
            if (!hold) tpm.Dispose();
            return new AgentService(hold ? tpm : null, tcti, settings, nk, ak, akPub, ekObj.Public.ToTpm2B(), ekCert, id, receiver);
        }
        catch (Exception ex)
        {
            if (ek != 0) tpm.TryFlush(ek);
            nk?.Dispose();
            tpm.Dispose();
            if (ex is TpmException or IOException or System.Net.Sockets.SocketException or TpmFormatException)
                throw new TpmUnavailableException($"The TPM at '{tcti}' failed while preparing the agent's keys: {ex.Message}", ex);
            throw;
        }
    }

    private sealed record AgentData
    {
        [JsonPropertyName("ak_handle")] public uint AkHandle { get; init; }
        [JsonPropertyName("ak_tpm")] public string AkTpm { get; init; } = "";
    }

    /// <summary>
    /// The AK remembered in <c>agent_data.json</c> when the TPM still holds that public area at that handle; otherwise a new
    /// AK persisted at the first free handle of the agent's range and remembered.
    /// </summary>
    private static (uint Handle, TpmPublic Public) PersistedAk(TpmDevice tpm, string stateDirectory, Action<string>? log)
    {
        var file = Path.Combine(stateDirectory, AgentDataFileName);
        if (File.Exists(file))
        {
            try
            {
                var data = System.Text.Json.JsonSerializer.Deserialize<AgentData>(File.ReadAllText(file));
                if (data is { AkHandle: >= AutoAkHandleFirst and <= AutoAkHandleLast } && tpm.GetHandles(TpmHandle.HrPersistent).Contains(data.AkHandle))
                {
                    var there = tpm.ReadPublic(data.AkHandle).Object;
                    if (Convert.ToBase64String(there.Public.ToTpm2B()) == data.AkTpm && there.Public.IsRestrictedSigningKey(out _))
                    {
                        log?.Invoke($"Reusing the agent's AK persisted at 0x{data.AkHandle:X8}");
                        return (data.AkHandle, there.Public);
                    }
                }
                log?.Invoke($"The AK remembered in {AgentDataFileName} is no longer in the TPM; creating a new one");
            }
            catch (System.Text.Json.JsonException) { log?.Invoke($"{AgentDataFileName} is unreadable; creating a new AK"); }
        }
        var handle = tpm.FindFreePersistentHandle(AutoAkHandleFirst, AutoAkHandleLast)
            ?? throw new InvalidOperationException($"No free persistent handle from 0x{AutoAkHandleFirst:X8} to 0x{AutoAkHandleLast:X8} for the agent's AK.");
        var created = tpm.CreateAk().Key;
        TpmObject persisted;
        try { persisted = tpm.PersistObject(created.Handle, handle); }
        finally { tpm.TryFlush(created.Handle); }
        AgentPayloadReceiver.CreatePrivateDirectory(stateDirectory);
        Pki.ComponentCa.WriteSecretFile(file, System.Text.Json.JsonSerializer.Serialize(new AgentData { AkHandle = handle, AkTpm = Convert.ToBase64String(persisted.Public.ToTpm2B()) }));
        log?.Invoke($"Created the agent's AK and persisted it at 0x{handle:X8}");
        return (handle, persisted.Public);
    }

    public AgentSettings Settings => _settings;

    private string HashAlgName => AlgName(_ak.Scheme.HashAlg == TpmAlgId.Null ? _ak.NameAlg : _ak.Scheme.HashAlg);
    private string EncAlgName => _ak.IsRsa ? "rsa" : "ecc";
    private string SignAlgName => _ak.Scheme.Scheme switch { TpmAlgId.RsaSsa => "rsassa", TpmAlgId.RsaPss => "rsapss", TpmAlgId.EcDsa => "ecdsa", TpmAlgId.EcSchnorr => "ecschnorr", _ => _ak.IsRsa ? "rsassa" : "ecdsa" };

    private static string AlgName(TpmAlgId a) => a switch { TpmAlgId.Sha1 => "sha1", TpmAlgId.Sha256 => "sha256", TpmAlgId.Sha384 => "sha384", TpmAlgId.Sha512 => "sha512", _ => a.ToString().ToLowerInvariant() };

    public AgentInfo Info() => new() { AgentUuid = AgentId, TpmHashAlg = HashAlgName, TpmEncAlg = EncAlgName, TpmSignAlg = SignAlgName, AkHandle = _akHandle };

    [GeneratedRegex("^[A-Za-z0-9]{1,20}$")]
    private static partial Regex NonceRegex();

    /// <summary>True for a nonce Keylime's tenant and verifier send: up to 20 characters of [A-Za-z0-9].</summary>
    /// <summary>
    /// The default agent id: a UUID (version 8, RFC 9562) from the SHA-256 of the EK's TPM2B_PUBLIC, so it is stable for a
    /// TPM and accepted by registrars that require UUIDs.
    /// </summary>
    public static string AgentIdFromEk(byte[] ekTpm2b)
    {
        var h = SHA256.HashData(ekTpm2b).AsSpan(0, 16).ToArray();
        h[6] = (byte)((h[6] & 0x0F) | 0x80);
        h[8] = (byte)((h[8] & 0x3F) | 0x80);
        return new Guid(h, bigEndian: true).ToString();
    }

    public static bool IsValidNonce(string? nonce) => nonce is not null && NonceRegex().IsMatch(nonce);

    /// <summary>
    /// Parses Keylime's PCR mask (<c>0x10401</c>, hex with or without 0x); null when malformed or beyond PCR 23. <c>0x0</c> is
    /// valid: Keylime's verifier sends it when the policy names no PCR (the agent still quotes PCR 16).
    /// </summary>
    public static uint? ParseMask(string? mask)
    {
        if (string.IsNullOrEmpty(mask)) return null;
        var s = mask.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? mask[2..] : mask;
        if (s.Length is 0 or > 6 || !uint.TryParse(s, System.Globalization.NumberStyles.AllowHexSpecifier, System.Globalization.CultureInfo.InvariantCulture, out var m)) return null;
        return m > 0xFFFFFF ? null : m;
    }

    /// <summary>
    /// <c>/quotes/integrity</c>: quotes the PCRs of <paramref name="mask"/> in the AK's hash bank over <paramref name="nonce"/>;
    /// adds the IMA list from line <paramref name="imaEntry"/> when PCR 10 is quoted and the UEFI event log when PCR 0 is.
    /// </summary>
    public async Task<AttestationOutcome<AgentQuote>> IntegrityQuoteAsync(string? nonce, string? mask, string? partial, string? imaEntry, CancellationToken ct = default)
    {
        if (!IsValidNonce(nonce)) return AttestationOutcome<AgentQuote>.Fail(400, "nonce: must be 1-20 characters of [A-Za-z0-9]");
        if (ParseMask(mask) is not { } m) return AttestationOutcome<AgentQuote>.Fail(400, "mask: must be a hex PCR mask such as 0x10401 (PCRs 0-23)");
        if (partial is not (null or "0" or "1")) return AttestationOutcome<AgentQuote>.Fail(400, "partial: must be 0 or 1");
        int entry = 0;
        if (imaEntry is not null && (!int.TryParse(imaEntry, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out entry)))
            return AttestationOutcome<AgentQuote>.Fail(400, "ima_ml_entry: must be a line number");

        // PCR 16 (where the NK is measured) is always quoted, as rust-keylime's agent does: Keylime's verifier refuses a pull-mode
        // quote without it (missing_pcr_16) while refusing PCR 16 in a policy, so it is never in the mask it sends.
        var q = await QuoteAsync(nonce!, m | (1u << DataPcr), ct).ConfigureAwait(false);
        string? ima = null;
        int? imaStart = null;
        if ((m & (1u << ImaPcr)) != 0)
        {
            ima = ReadImaList(entry, out var start);
            if (ima is not null) imaStart = start;
        }
        string? mb = null;
        if ((m & 1u) != 0 && File.Exists(_settings.EventLogPath))
        {
            try { mb = Convert.ToBase64String(await File.ReadAllBytesAsync(_settings.EventLogPath, ct).ConfigureAwait(false)); }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { mb = null; }
        }
        return AttestationOutcome<AgentQuote>.Ok(q with
        {
            Pubkey = partial == "1" ? null : NkPublicPem,
            ImaMeasurementList = ima,
            ImaMeasurementListEntry = imaStart,
            MbMeasurementList = mb,
        });
    }

    /// <summary><c>/quotes/identity</c>: a quote of PCR 16 (where the NK is measured) over <paramref name="nonce"/>, with the NK.</summary>
    public async Task<AttestationOutcome<AgentQuote>> IdentityQuoteAsync(string? nonce, CancellationToken ct = default)
    {
        if (!IsValidNonce(nonce)) return AttestationOutcome<AgentQuote>.Fail(400, "nonce: must be 1-20 characters of [A-Za-z0-9]");
        var q = await QuoteAsync(nonce!, 1u << DataPcr, ct).ConfigureAwait(false);
        return AttestationOutcome<AgentQuote>.Ok(q with { Pubkey = NkPublicPem });
    }

    private async Task<AgentQuote> QuoteAsync(string nonce, uint mask, CancellationToken ct)
    {
        var bank = _ak.Scheme.HashAlg == TpmAlgId.Null ? _ak.NameAlg : _ak.Scheme.HashAlg;
        var selection = PcrSelection.FromBitmask(bank, mask);
        var ev = await WithTpmAsync(tpm => tpm.GetIntegrityQuote(_akHandle, Encoding.ASCII.GetBytes(nonce), selection), ct).ConfigureAwait(false);
        return new AgentQuote
        {
            Quote = ev.ToKeylimeString(),
            HashAlg = AlgName(bank),
            EncAlg = EncAlgName,
            SignAlg = SignAlgName,
            Boottime = BootTime,
        };
    }

    /// <summary>
    /// The boot time as a Unix epoch in seconds, constant for one boot (Keylime's verifier resets its IMA state when it changes):
    /// <c>btime</c> of <c>/proc/stat</c> on Linux, else now minus the uptime, taken once per process.
    /// </summary>
    public static long BootTime => s_bootTime.Value;

    private static readonly Lazy<long> s_bootTime = new(ReadBootTime);

    public static long ReadBootTime()
    {
        try
        {
            if (File.Exists("/proc/stat"))
                foreach (var line in File.ReadLines("/proc/stat"))
                    if (line.StartsWith("btime ", StringComparison.Ordinal)
                        && long.TryParse(line.AsSpan(6).Trim(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var bt) && bt > 0)
                        return bt;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { }
        return DateTimeOffset.UtcNow.ToUnixTimeSeconds() - Environment.TickCount64 / 1000;
    }

    private string? ReadImaList(int fromLine, out int start)
    {
        start = fromLine;
        try
        {
            if (!File.Exists(_settings.ImaMeasurementListPath)) return null;
            var sb = new StringBuilder();
            int n = 0;
            foreach (var line in File.ReadLines(_settings.ImaMeasurementListPath))
            {
                if (n++ < fromLine) continue;
                sb.Append(line).Append('\n');
            }
            if (fromLine > n) start = n;
            return sb.ToString();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>
    /// True when the agent keeps its TPM connection open: a device or TBS connection, where the OS resource manager shares the
    /// TPM. swtpm and the simulator serve one client at a time, so there the agent connects per operation and other tools
    /// (tpm2_pcrextend, a second session) can use the TPM between quotes.
    /// </summary>
    public static bool HoldsConnection(string tcti) =>
        !(tcti.StartsWith("swtpm", StringComparison.OrdinalIgnoreCase) || tcti.StartsWith("mssim", StringComparison.OrdinalIgnoreCase));

    private async Task<T> WithTpmAsync<T>(Func<TpmDevice, T> op, CancellationToken ct)
    {
        await _gate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (_held is not null) return op(_held);
            using var tpm = TpmDevice.Open(_tcti);
            return op(tpm);
        }
        finally { _gate.Release(); }
    }

    /// <summary>Registers with and activates at the registrar: the EK is made for the activation and flushed after it.</summary>
    public async Task RegisterAsync(RegistrarClient registrar, AgentIdentity contact, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(registrar);
        var blob = await registrar.RegisterAsync(contact with { AgentId = AgentId }, EkPublic, AkPublic, EkCertificate, ct).ConfigureAwait(false);
        string tag = await WithTpmAsync(tpm =>
        {
            var ek = tpm.CreateEk(_settings.EkKind);
            try
            {
                var keys = new AgentTpmKeys { EkHandle = ek.Handle, AkHandle = _akHandle, EkPublic = EkPublic, AkPublic = AkPublic, EkCertificate = EkCertificate };
                return RegistrarClient.SolveChallenge(tpm, keys, AgentId, blob);
            }
            finally { tpm.TryFlush(ek.Handle); }
        }, ct).ConfigureAwait(false);
        await registrar.ActivateAsync(AgentId, tag, ct).ConfigureAwait(false);
    }

    public void Dispose()
    {
        _gate.Wait();
        try
        {
            _held?.Dispose();
            _nk.Dispose();
        }
        finally { _gate.Release(); }
    }
}

/// <summary>The agent cannot use its TPM: none configured or found, or it cannot be opened or fails preparing the keys.</summary>
public sealed class TpmUnavailableException : Exception
{
    public TpmUnavailableException(string message, Exception? inner = null) : base(message, inner) { }
}
