using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.RegularExpressions;
using Net.Pkcs11Interop.Common;
using Net.Pkcs11Interop.HighLevelAPI;
using TpmProvisioning.Kms;
using TpmProvisioning.Pki;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Station;

/// <summary>A TPM CA signing key as the surfaces show it: never the key itself.</summary>
public sealed record ProvisioningSigningKey
{
    /// <summary>The key's label (its id on the wire); <c>builtin</c> is the TPM CA of the data path.</summary>
    public required string Label { get; init; }
    /// <summary><c>file</c> (the built-in CA's key file), <c>pem</c> (plaintext in the store), <c>pem-wrapped</c> (sealed with the master key) or <c>pkcs11</c>.</summary>
    public required string Location { get; init; }
    public required string Algorithm { get; init; }
    public int KeySize { get; init; }
    /// <summary>SHA-256 of the CA certificate, upper-case hex.</summary>
    public required string Fingerprint { get; init; }
    public string Subject { get; init; } = "";
    public DateTimeOffset NotAfter { get; init; }
    public bool Active { get; init; }
    public bool Wrapped { get; init; }
    /// <summary>The id of the master key that wraps the private key, or null.</summary>
    public string? WrapKeyId { get; init; }
    public string? Pkcs11Module { get; init; }
    public string? Pkcs11Token { get; init; }
    public string? Pkcs11Key { get; init; }
    public DateTimeOffset? Added { get; init; }
}

/// <summary>The result of checking a key without storing it.</summary>
public sealed record SigningKeyValidation
{
    public bool Valid { get; init; }
    public string Type { get; init; } = "pem";
    public string? Algorithm { get; init; }
    public int KeySize { get; init; }
    public string? Fingerprint { get; init; }
    public string? Subject { get; init; }
    public string Message { get; init; } = "";
}

/// <summary>An object in a PKCS#11 token (never a secret value).</summary>
public sealed record Pkcs11ObjectInfo(string Class, string? Label, string? Id, string? KeyType);

/// <summary>A token of a PKCS#11 module with what discovery saw in it.</summary>
public sealed record Pkcs11TokenInfo
{
    public required string Module { get; init; }
    public ulong Slot { get; init; }
    public required string Label { get; init; }
    public string? Model { get; init; }
    public string? Manufacturer { get; init; }
    public string? SerialNumber { get; init; }
    /// <summary>False for an empty slot's uninitialised token (SoftHSM always offers one).</summary>
    public bool Initialized { get; init; }
    public bool PinConfigured { get; init; }
    /// <summary>True when the stored PIN logged in, so private objects are listed too.</summary>
    public bool LoggedIn { get; init; }
    public IReadOnlyList<Pkcs11ObjectInfo> Objects { get; init; } = [];
}

/// <summary>Readiness of one PKCS#11 module the station uses.</summary>
public sealed record Pkcs11ModuleStatus
{
    public required string Module { get; init; }
    public bool Exists { get; init; }
    public bool Loaded { get; init; }
    public string? Error { get; init; }
    public IReadOnlyList<string> Tokens { get; init; } = [];
    public IReadOnlyList<string> Keys { get; init; } = [];
}

/// <summary>Whether a PIN is stored for a token (never the PIN).</summary>
public sealed record Pkcs11PinStatus(string Module, string Token, bool Configured, bool Wrapped, string? WrapKeyId, DateTimeOffset Updated);

/// <summary>What <c>register-pkcs11</c> and <c>validate-key</c> take for an HSM key.</summary>
public sealed record Pkcs11KeyRequest
{
    public string? Label { get; init; }
    public string? Module { get; init; }
    public string? TokenLabel { get; init; }
    public ulong? Slot { get; init; }
    public string? KeyLabel { get; init; }
    public string? KeyId { get; init; }
    public string? CertificatePem { get; init; }
}

/// <summary>
/// The TPM CA signing keys of a station (spec 003 options/keys): PEM keys kept in the store (sealed with the master key when
/// one exists), keys inside PKCS#11 tokens (registered by module, token and key; their PINs sealed), which one is active, and
/// the resolution of the active key for each provisioning request (cached until it changes). The built-in TPM CA of the data
/// path is the default active key. Bad input is a <see cref="StationException"/> and changes nothing.
/// </summary>
public sealed partial class SigningKeyService : IDisposable
{
    public const string BuiltinLabel = "builtin";
    private const int MaxPemChars = 64 * 1024;

    private readonly IStore _store;
    private readonly string _tpmCaDirectory;
    private readonly Func<SecretKeyRing> _openRing;
    private readonly object _ringGate = new();
    private SecretKeyRing? _ring;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly List<TpmCa> _retired = [];
    private volatile CachedCa? _cache;

    /// <param name="ring">Opens the master keys when first needed (a TPM-sealed key talks to the TPM); retried after a failure.</param>
    public SigningKeyService(IStore store, string tpmCaDirectory, Func<SecretKeyRing> ring)
    {
        _store = store ?? throw new ArgumentNullException(nameof(store));
        _tpmCaDirectory = tpmCaDirectory ?? throw new ArgumentNullException(nameof(tpmCaDirectory));
        ArgumentNullException.ThrowIfNull(ring);
        _openRing = ring;
    }

    public IStore Store => _store;

    /// <summary>The master keys (opened on first use).</summary>
    public SecretKeyRing Ring
    {
        get
        {
            // Opened once; a failure (a TPM that is busy, an HSM that is away) is not kept, so the next call tries again.
            try { lock (_ringGate) return _ring ??= _openRing(); }
            catch (Exception ex) when (ex is KmsException or IOException or Tpm.TpmException or Pkcs11Exception or CryptographicException)
            {
                throw new StationException(503, "MASTER_KEY_UNAVAILABLE", "the master key cannot be loaded: " + ex.Message);
            }
        }
    }

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", RegexOptions.CultureInvariant)]
    private static partial Regex LabelPattern();

    internal static string SecretRow(string label) => $"station_signing_keys/{label}/private_key";
    internal static string PinRow(string module, string token) => $"station_pkcs11_pins/{module}/{token}";

    private static string CheckLabel(string? label, string field = "label")
    {
        if (string.IsNullOrEmpty(label)) throw new StationException(400, "INVALID_PARAMETER", $"{field}: required");
        if (!LabelPattern().IsMatch(label))
            throw new StationException(400, "INVALID_PARAMETER", $"{field}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", $"Received: {Clip(label)}");
        return label;
    }

    private static string Clip(string s) => s.Length <= 64 ? s : s[..64] + "…";

    // ------------------------------------------------------------------ listing

    /// <summary>The built-in CA (when the data path has one) and every stored key, the active one marked.</summary>
    public async Task<IReadOnlyList<ProvisioningSigningKey>> ListAsync(CancellationToken ct = default)
    {
        var rows = await _store.ListSigningKeysAsync(ct).ConfigureAwait(false);
        var list = new List<ProvisioningSigningKey>();
        if (Builtin(!rows.Any(r => r.Active)) is { } b) list.Add(b);
        list.AddRange(rows.Select(Describe));
        return list;
    }

    private ProvisioningSigningKey? Builtin(bool active)
    {
        var certPath = Path.Combine(_tpmCaDirectory, TpmCa.CertFileName);
        if (!File.Exists(certPath)) return null;
        using var cert = X509Certificate2.CreateFromPem(File.ReadAllText(certPath));
        var (alg, size) = Algorithm(cert.PublicKey.ExportSubjectPublicKeyInfo());
        return new ProvisioningSigningKey
        {
            Label = BuiltinLabel, Location = "file", Algorithm = alg, KeySize = size, Fingerprint = Convert.ToHexString(SHA256.HashData(cert.RawData)),
            Subject = cert.Subject, NotAfter = cert.NotAfter.ToUniversalTime(), Active = active, Wrapped = false,
        };
    }

    private static ProvisioningSigningKey Describe(SigningKeyRecord r)
    {
        using var cert = X509Certificate2.CreateFromPem(r.CertificatePem);
        bool wrapped = r.Kind == SigningKeyKind.Pem && SecretSealer.IsSealed(r.PrivateKey);
        return new ProvisioningSigningKey
        {
            Label = r.Label,
            Location = r.Kind == SigningKeyKind.Pkcs11 ? "pkcs11" : wrapped ? "pem-wrapped" : "pem",
            Algorithm = r.Algorithm, KeySize = r.KeySize, Fingerprint = r.Fingerprint, Subject = cert.Subject, NotAfter = cert.NotAfter.ToUniversalTime(),
            Active = r.Active, Wrapped = wrapped, WrapKeyId = wrapped ? r.WrapKeyId : null,
            Pkcs11Module = r.Pkcs11Module, Pkcs11Token = r.Pkcs11Token, Pkcs11Key = r.Pkcs11KeyLabel ?? r.Pkcs11KeyId, Added = r.Created,
        };
    }

    public async Task<ProvisioningSigningKey> GetAsync(string label, CancellationToken ct = default)
    {
        if (label == BuiltinLabel)
            return Builtin(await _store.GetActiveSigningKeyStampAsync(ct).ConfigureAwait(false) is null)
                ?? throw new StationException(404, "KEY_NOT_FOUND", "the data path has no built-in TPM CA");
        var r = await _store.GetSigningKeyAsync(CheckLabel(label), ct).ConfigureAwait(false)
            ?? throw new StationException(404, "KEY_NOT_FOUND", $"no signing key labelled '{label}'");
        return Describe(r);
    }

    private static (string Algorithm, int Size) Algorithm(byte[] spki)
    {
        var info = Org.BouncyCastle.Asn1.X509.SubjectPublicKeyInfo.GetInstance(spki);
        string alg = info.Algorithm.Algorithm.Id;
        if (alg == "1.2.840.10045.2.1")
        {
            string curve = Org.BouncyCastle.Asn1.DerObjectIdentifier.GetInstance(info.Algorithm.Parameters).Id;
            return curve switch
            {
                "1.2.840.10045.3.1.7" => ("EC", 256),
                "1.3.132.0.34" => ("EC", 384),
                "1.3.132.0.35" => ("EC", 521),
                _ => ("EC", 0),
            };
        }
        if (alg == "1.2.840.113549.1.1.1")
        {
            using var rsa = RSA.Create();
            rsa.ImportSubjectPublicKeyInfo(spki, out _);
            return ("RSA", rsa.KeySize);
        }
        return (alg, 0);
    }

    // ------------------------------------------------------------------ PEM keys

    /// <summary>
    /// Checks a CA certificate: parseable PEM, a CA (basicConstraints cA, keyCertSign when keyUsage is present), inside its
    /// validity, with an allowed key (RSA ≥ 2048, EC P-256 or P-384).
    /// </summary>
    private static X509Certificate2 ParseCaCertificate(string? pem)
    {
        if (string.IsNullOrWhiteSpace(pem)) throw new StationException(400, "INVALID_PARAMETER", "certificate: a PEM CA certificate is required");
        if (pem.Length > MaxPemChars) throw new StationException(400, "INVALID_CERTIFICATE", $"certificate: at most {MaxPemChars} characters");
        X509Certificate2 cert;
        try { cert = X509Certificate2.CreateFromPem(pem); }
        catch (Exception ex) when (ex is CryptographicException or ArgumentException)
        {
            throw new StationException(400, "INVALID_CERTIFICATE", "certificate: not a PEM X.509 certificate");
        }
        try
        {
            if (cert.Extensions.OfType<X509BasicConstraintsExtension>().FirstOrDefault() is not { CertificateAuthority: true })
                throw new StationException(400, "INVALID_CERTIFICATE", "certificate: not a CA certificate (basicConstraints cA is not set)");
            if (cert.Extensions.OfType<X509KeyUsageExtension>().FirstOrDefault() is { } ku && !ku.KeyUsages.HasFlag(X509KeyUsageFlags.KeyCertSign))
                throw new StationException(400, "INVALID_CERTIFICATE", "certificate: its keyUsage does not allow keyCertSign");
            var now = DateTime.UtcNow;
            if (cert.NotAfter.ToUniversalTime() < now || cert.NotBefore.ToUniversalTime() > now)
                throw new StationException(400, "INVALID_CERTIFICATE", $"certificate: not valid now (valid {cert.NotBefore.ToUniversalTime():u} to {cert.NotAfter.ToUniversalTime():u})");
            var (alg, size) = Algorithm(cert.PublicKey.ExportSubjectPublicKeyInfo());
            if (!AllowedKey(alg, size)) throw new StationException(400, "INVALID_KEY", $"certificate: its {alg}-{size} key is not allowed (RSA of at least 2048 bits, EC P-256 or P-384)");
            return cert;
        }
        catch
        {
            cert.Dispose();
            throw;
        }
    }

    private static bool AllowedKey(string alg, int size) => alg == "RSA" ? size >= 2048 : alg == "EC" && size is 256 or 384;

    /// <summary>Opens a PEM private key and checks it is an allowed key belonging to <paramref name="cert"/>.</summary>
    private static TpmCa OpenPem(X509Certificate2 cert, string? keyPem, string description)
    {
        if (string.IsNullOrWhiteSpace(keyPem)) throw new StationException(400, "INVALID_PARAMETER", "key: a PEM private key is required");
        if (keyPem.Length > MaxPemChars) throw new StationException(400, "INVALID_KEY", $"key: at most {MaxPemChars} characters");
        if (keyPem.Contains("ENCRYPTED", StringComparison.Ordinal))
            throw new StationException(400, "INVALID_KEY", "key: an encrypted PEM key is not accepted; upload it decrypted over this TLS connection, the station seals it with its master key");
        FileCertificateSigner signer;
        try { signer = FileCertificateSigner.FromPem(keyPem, description); }
        catch (Exception ex) when (ex is CryptographicException or ArgumentException)
        {
            throw new StationException(400, "INVALID_KEY", "key: " + (ex.Message.Contains("2048", StringComparison.Ordinal) ? ex.Message : "not a readable PEM RSA or EC private key"));
        }
        var (alg, size) = Algorithm(signer.SubjectPublicKeyInfo);
        if (!AllowedKey(alg, size))
        {
            signer.Dispose();
            throw new StationException(400, "INVALID_KEY", $"key: {alg}-{size} is not allowed (RSA of at least 2048 bits, EC P-256 or P-384)");
        }
        try { return TpmCa.FromSigner(cert, signer); }
        catch (CryptographicException)
        {
            signer.Dispose();
            throw new StationException(400, "KEY_CERTIFICATE_MISMATCH", "key: it is not the private key of the certificate");
        }
    }

    /// <summary>Checks a PEM key and its CA certificate without storing anything.</summary>
    public static SigningKeyValidation ValidatePem(string? certificatePem, string? keyPem)
    {
        using var cert = ParseCaCertificate(certificatePem);
        using var ca = OpenPem(cert, keyPem, "validate");
        var (alg, size) = Algorithm(cert.PublicKey.ExportSubjectPublicKeyInfo());
        return new SigningKeyValidation
        {
            Valid = true, Type = "pem", Algorithm = alg, KeySize = size, Fingerprint = Convert.ToHexString(SHA256.HashData(cert.RawData)), Subject = cert.Subject,
            Message = "the key is an allowed CA key and belongs to the certificate",
        };
    }

    /// <summary>Stores a PEM CA key with its certificate (sealed when a master key exists); it is not activated.</summary>
    public async Task<ProvisioningSigningKey> UploadAsync(string? label, string? certificatePem, string? keyPem, CancellationToken ct = default)
    {
        CheckLabel(label);
        if (label == BuiltinLabel) throw new StationException(400, "INVALID_PARAMETER", $"label: '{BuiltinLabel}' names the built-in TPM CA");
        using var cert = ParseCaCertificate(certificatePem);
        using (OpenPem(cert, keyPem, "upload")) { }
        var (alg, size) = Algorithm(cert.PublicKey.ExportSubjectPublicKeyInfo());
        string stored = keyPem!.Trim() + "\n";
        string? wrapId = null;
        var ring = Ring;
        if (ring.CanSeal)
        {
            stored = ring.Seal(stored, SecretRow(label!));
            wrapId = ring.PrimaryId;
        }
        var now = DateTimeOffset.UtcNow;
        var record = new SigningKeyRecord
        {
            Label = label!, Kind = SigningKeyKind.Pem, Algorithm = alg, KeySize = size, Fingerprint = Convert.ToHexString(SHA256.HashData(cert.RawData)),
            CertificatePem = cert.ExportCertificatePem(), PrivateKey = stored, WrapKeyId = wrapId, Created = now, Updated = now,
        };
        if (!await _store.InsertSigningKeyAsync(record, ct).ConfigureAwait(false))
            throw new StationException(409, "KEY_EXISTS", $"a signing key labelled '{label}' exists; remove it first or choose another label");
        return Describe(record);
    }

    /// <summary>Seals a stored plaintext PEM key with the master key (a key already sealed is left as it is).</summary>
    public async Task<ProvisioningSigningKey> WrapAsync(string? label, CancellationToken ct = default)
    {
        CheckLabel(label);
        var r = await _store.GetSigningKeyAsync(label!, ct).ConfigureAwait(false)
            ?? throw new StationException(404, "KEY_NOT_FOUND", $"no signing key labelled '{label}'");
        if (r.Kind != SigningKeyKind.Pem || r.PrivateKey is null)
            throw new StationException(400, "NOT_A_PEM_KEY", $"'{label}' lives in a PKCS#11 token; only PEM keys are wrapped");
        if (SecretSealer.IsSealed(r.PrivateKey)) return Describe(r);
        var ring = Ring;
        if (!ring.CanSeal) throw new StationException(409, "NO_MASTER_KEY", "the server has no master key to wrap with; start it with -MasterKey Tpm, Pkcs11 or InsecureFile");
        var sealedKey = ring.Seal(r.PrivateKey, SecretRow(r.Label));
        await _store.ReplaceSigningKeySecretAsync(r.Label, r.PrivateKey, sealedKey, ring.PrimaryId, ct).ConfigureAwait(false);
        await _store.ScrubAsync(ct).ConfigureAwait(false);
        return Describe((await _store.GetSigningKeyAsync(r.Label, ct).ConfigureAwait(false))!);
    }

    // ------------------------------------------------------------------ activation

    /// <summary>Makes a key the active one after proving it signs (a PKCS#11 key needs its PIN stored); <c>builtin</c> returns to the data path's CA.</summary>
    public async Task<ProvisioningSigningKey> ActivateAsync(string? label, CancellationToken ct = default)
    {
        CheckLabel(label);
        if (label == BuiltinLabel)
        {
            if (Builtin(true) is null) throw new StationException(404, "KEY_NOT_FOUND", "the data path has no built-in TPM CA");
            await _store.ActivateSigningKeyAsync(null, ct).ConfigureAwait(false);
            return Builtin(true)!;
        }
        var r = await _store.GetSigningKeyAsync(label!, ct).ConfigureAwait(false)
            ?? throw new StationException(404, "KEY_NOT_FOUND", $"no signing key labelled '{label}'");
        using (await OpenRecordAsync(r, ct).ConfigureAwait(false)) { }
        if (!await _store.ActivateSigningKeyAsync(r.Label, ct).ConfigureAwait(false))
            throw new StationException(404, "KEY_NOT_FOUND", $"no signing key labelled '{label}'");
        return Describe((await _store.GetSigningKeyAsync(r.Label, ct).ConfigureAwait(false))!);
    }

    /// <summary>Removes a stored key that is not active.</summary>
    public async Task RemoveAsync(string? label, CancellationToken ct = default)
    {
        CheckLabel(label);
        if (label == BuiltinLabel) throw new StationException(409, "KEY_ACTIVE", "the built-in TPM CA cannot be removed");
        var r = await _store.GetSigningKeyAsync(label!, ct).ConfigureAwait(false)
            ?? throw new StationException(404, "KEY_NOT_FOUND", $"no signing key labelled '{label}'");
        if (r.Active || !await _store.RemoveSigningKeyAsync(r.Label, ct).ConfigureAwait(false))
            throw new StationException(409, "KEY_ACTIVE", $"'{label}' is the active signing key; activate another first");
        await _store.ScrubAsync(ct).ConfigureAwait(false);
    }

    /// <summary>A CA over a stored key, proven to sign; a <see cref="StationException"/> when it cannot be opened.</summary>
    private async Task<TpmCa> OpenRecordAsync(SigningKeyRecord r, CancellationToken ct)
    {
        var cert = X509Certificate2.CreateFromPem(r.CertificatePem);
        try
        {
            if (r.Kind == SigningKeyKind.Pem)
            {
                string pem;
                try { pem = Ring.Open(r.PrivateKey ?? "", SecretRow(r.Label)); }
                catch (KmsException ex) { throw new StationException(409, "KEY_SEAL_UNREADABLE", $"'{r.Label}': its sealed key does not open with this server's master key ({ex.Message})"); }
                return OpenPem(cert, pem, $"store:{r.Label}");
            }
            var settings = await TokenSettingsAsync(r.Pkcs11Module!, r.Pkcs11Token!, null, ct).ConfigureAwait(false);
            var signer = new Pkcs11CertificateSigner(settings, r.Pkcs11KeyLabel, r.Pkcs11KeyId, cert.PublicKey.ExportSubjectPublicKeyInfo());
            RunToken(() => { signer.SelfTest(); return 0; }, settings);
            return TpmCa.FromSigner(cert, signer);
        }
        catch
        {
            cert.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The CA that signs the next AK certificate: <paramref name="builtin"/> while no stored key is active, else the active key
    /// (loaded once and kept until the active key, its row or its token's PIN changes).
    /// </summary>
    public async Task<TpmCa> ResolveAsync(TpmCa builtin, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(builtin);
        var stamp = await _store.GetActiveSigningKeyStampAsync(ct).ConfigureAwait(false);
        if (stamp is null) return builtin;
        string key = $"{stamp.Value.Label}|{stamp.Value.UpdatedMs}";
        var cached = _cache;
        if (cached is not null && cached.Key == key && await FullStampAsync(key, cached.Module, cached.Token, ct).ConfigureAwait(false) == cached.Full)
            return cached.Ca;
        await _gate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var r = await _store.GetSigningKeyAsync(stamp.Value.Label, ct).ConfigureAwait(false)
                ?? throw new SigningKeyUnavailableException($"the active key '{stamp.Value.Label}' was removed");
            key = $"{r.Label}|{r.Updated.ToUnixTimeMilliseconds()}";
            string full = await FullStampAsync(key, r.Pkcs11Module, r.Pkcs11Token, ct).ConfigureAwait(false);
            if (_cache is { } c && c.Full == full) return c.Ca;
            TpmCa ca;
            try { ca = await OpenRecordAsync(r, ct).ConfigureAwait(false); }
            catch (StationException ex) { throw new SigningKeyUnavailableException($"'{r.Label}': {ex.Message}", ex); }
            if (_cache is not null) lock (_retired) _retired.Add(_cache.Ca); // a request may still be signing with it
            _cache = new CachedCa(key, full, r.Pkcs11Module, r.Pkcs11Token, ca);
            return ca;
        }
        finally { _gate.Release(); }
    }

    private sealed record CachedCa(string Key, string Full, string? Module, string? Token, TpmCa Ca);

    /// <summary>A key's row stamp, and for a PKCS#11 key its token's PIN row stamp too.</summary>
    private async Task<string> FullStampAsync(string key, string? module, string? token, CancellationToken ct)
    {
        if (module is null || token is null) return key;
        var pin = await _store.GetPkcs11PinAsync(module, token, ct).ConfigureAwait(false);
        return $"{key}|pin:{pin?.Updated.ToUnixTimeMilliseconds()}:{pin?.Pin.GetHashCode()}";
    }

    // ------------------------------------------------------------------ PKCS#11

    /// <summary>A module path the station may load: absolute, canonical, an existing regular file that others cannot write.</summary>
    public static string CheckModule(string? module)
    {
        if (string.IsNullOrWhiteSpace(module)) throw new StationException(400, "INVALID_PARAMETER", "module: the absolute path of a PKCS#11 module is required");
        if (module.Length > 4096 || module.Any(char.IsControl) || !Path.IsPathFullyQualified(module) || Path.GetFullPath(module) != module)
            throw new StationException(400, "PKCS11_MODULE_INVALID", "module: must be an absolute, canonical file path", $"Received: {Clip(module)}");
        if (!File.Exists(module)) throw new StationException(400, "PKCS11_MODULE_NOT_FOUND", $"module: no file at {module}");
        if (!OperatingSystem.IsWindows() && (File.GetUnixFileMode(module) & (UnixFileMode.OtherWrite | UnixFileMode.GroupWrite)) != 0)
            throw new StationException(400, "PKCS11_MODULE_INVALID", $"module: {module} is writable by others than its owner; the station does not load it");
        return module;
    }

    /// <summary>Runs a token operation, turning token failures into the station's errors.</summary>
    private static T RunToken<T>(Func<T> op, Pkcs11Settings? settings = null)
    {
        try { return op(); }
        catch (StationException) { throw; }
        catch (KmsException ex) when (ex.Message.Contains("PIN", StringComparison.Ordinal))
        {
            throw new StationException(400, "PKCS11_PIN_REFUSED", $"the token refused the PIN{(settings is null ? "" : $" of '{settings.TokenLabel}'")}");
        }
        catch (KmsException ex) when (ex.Message.Contains("No PKCS#11 token", StringComparison.Ordinal))
        {
            throw new StationException(400, "PKCS11_TOKEN_NOT_FOUND", ex.Message);
        }
        catch (KmsException ex) when (ex.Message.Contains("has no private key", StringComparison.Ordinal))
        {
            throw new StationException(400, "PKCS11_KEY_NOT_FOUND", ex.Message);
        }
        catch (CryptographicException ex)
        {
            throw new StationException(400, "KEY_CERTIFICATE_MISMATCH", ex.Message);
        }
        catch (Exception ex) when (ex is KmsException or Pkcs11Exception or Net.Pkcs11Interop.Common.UnmanagedException or DllNotFoundException or EntryPointNotFoundException
                                       or BadImageFormatException or LibraryArchitectureException or InvalidOperationException or ArgumentException)
        {
            throw new StationException(400, "PKCS11_ERROR", "the PKCS#11 module failed: " + ex.Message);
        }
    }

    /// <summary>The tokens present in a module's slots.</summary>
    private static List<(ulong Slot, ITokenInfo Info)> Tokens(string module) => RunToken(() => Pkcs11Token.WithLibrary(module, lib =>
        lib.GetSlotList(SlotsType.WithTokenPresent).Select(s => (s.SlotId, s.GetTokenInfo())).ToList()));

    private static string ResolveToken(string module, string? tokenLabel, ulong? slot)
    {
        var tokens = Tokens(module);
        if (!string.IsNullOrEmpty(tokenLabel))
        {
            if (!tokens.Any(t => t.Info.Label.Trim() == tokenLabel)) throw new StationException(400, "PKCS11_TOKEN_NOT_FOUND", $"token_label: no token '{tokenLabel}' in {module}");
            return tokenLabel;
        }
        if (slot is { } id)
            return tokens.FirstOrDefault(t => t.Slot == id).Info?.Label.Trim() ?? throw new StationException(400, "PKCS11_TOKEN_NOT_FOUND", $"slot: no token in slot {id} of {module}");
        throw new StationException(400, "INVALID_PARAMETER", "token_label or slot: required");
    }

    private async Task<Pkcs11Settings> TokenSettingsAsync(string module, string token, string? pin, CancellationToken ct)
    {
        if (pin is null)
        {
            var stored = await _store.GetPkcs11PinAsync(module, token, ct).ConfigureAwait(false)
                ?? throw new StationException(409, "PKCS11_PIN_MISSING", $"no PIN is stored for token '{token}'; set it with /options/set-pkcs11-pin");
            try { pin = Ring.Open(stored.Pin, PinRow(module, token)); }
            catch (KmsException ex) { throw new StationException(409, "KEY_SEAL_UNREADABLE", $"the stored PIN of '{token}' does not open with this server's master key ({ex.Message})"); }
        }
        return new Pkcs11Settings { LibraryPath = module, TokenLabel = token, Pin = pin };
    }

    private static string? KeyIdHex(string? id)
    {
        if (string.IsNullOrEmpty(id)) return null;
        if (id.Length > 128 || id.Length % 2 != 0 || !id.All(Uri.IsHexDigit)) throw new StationException(400, "INVALID_PARAMETER", "key_id: the CKA_ID as hex (an even number of hex digits, at most 128)");
        return id.ToUpperInvariant();
    }

    private static string? KeyLabel(string? label)
    {
        if (string.IsNullOrEmpty(label)) return null;
        if (label.Length > 128 || label.Any(char.IsControl)) throw new StationException(400, "INVALID_PARAMETER", "key_label: at most 128 printable characters");
        return label;
    }

    /// <summary>Checks an HSM key: module, token, certificate; with a stored PIN, a signature inside the token that verifies with the certificate.</summary>
    public async Task<SigningKeyValidation> ValidatePkcs11Async(Pkcs11KeyRequest request, CancellationToken ct = default)
    {
        var (module, token, keyLabel, keyId, cert) = CheckPkcs11Request(request);
        using (cert)
        {
            var (alg, size) = Algorithm(cert.PublicKey.ExportSubjectPublicKeyInfo());
            string message = "module and token found; no PIN is stored, so the key was not tried";
            if (await _store.GetPkcs11PinAsync(module, token, ct).ConfigureAwait(false) is not null)
            {
                var settings = await TokenSettingsAsync(module, token, null, ct).ConfigureAwait(false);
                using var signer = new Pkcs11CertificateSigner(settings, keyLabel, keyId, cert.PublicKey.ExportSubjectPublicKeyInfo());
                RunToken(() => { signer.SelfTest(); return 0; }, settings);
                message = "the token signed a probe that verifies with the certificate";
            }
            return new SigningKeyValidation
            {
                Valid = true, Type = "pkcs11", Algorithm = alg, KeySize = size, Fingerprint = Convert.ToHexString(SHA256.HashData(cert.RawData)), Subject = cert.Subject, Message = message,
            };
        }
    }

    private static (string Module, string Token, string? KeyLabel, string? KeyId, X509Certificate2 Cert) CheckPkcs11Request(Pkcs11KeyRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var module = CheckModule(request.Module);
        var keyLabel = KeyLabel(request.KeyLabel);
        var keyId = KeyIdHex(request.KeyId);
        if (keyLabel is null && keyId is null) throw new StationException(400, "INVALID_PARAMETER", "key_label or key_id: required");
        var cert = ParseCaCertificate(request.CertificatePem);
        try
        {
            var token = ResolveToken(module, request.TokenLabel, request.Slot);
            return (module, token, keyLabel, keyId, cert);
        }
        catch
        {
            cert.Dispose();
            throw;
        }
    }

    /// <summary>Registers a key inside a PKCS#11 token with its CA certificate (not activated; with a stored PIN it is tried first).</summary>
    public async Task<ProvisioningSigningKey> RegisterPkcs11Async(Pkcs11KeyRequest request, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        CheckLabel(request.Label);
        if (request.Label == BuiltinLabel) throw new StationException(400, "INVALID_PARAMETER", $"label: '{BuiltinLabel}' names the built-in TPM CA");
        await ValidatePkcs11Async(request, ct).ConfigureAwait(false);
        var (module, token, keyLabel, keyId, cert) = CheckPkcs11Request(request);
        using (cert)
        {
            var (alg, size) = Algorithm(cert.PublicKey.ExportSubjectPublicKeyInfo());
            var now = DateTimeOffset.UtcNow;
            var record = new SigningKeyRecord
            {
                Label = request.Label!, Kind = SigningKeyKind.Pkcs11, Algorithm = alg, KeySize = size, Fingerprint = Convert.ToHexString(SHA256.HashData(cert.RawData)),
                CertificatePem = cert.ExportCertificatePem(), Pkcs11Module = module, Pkcs11Token = token, Pkcs11KeyLabel = keyLabel, Pkcs11KeyId = keyId,
                Created = now, Updated = now,
            };
            if (!await _store.InsertSigningKeyAsync(record, ct).ConfigureAwait(false))
                throw new StationException(409, "KEY_EXISTS", $"a signing key labelled '{request.Label}' exists; remove it first or choose another label");
            return Describe(record);
        }
    }

    /// <summary>The tokens of a module and their objects (private ones too when a stored PIN logs in). Never a secret value.</summary>
    public async Task<IReadOnlyList<Pkcs11TokenInfo>> DiscoverAsync(string? module, CancellationToken ct = default)
    {
        var path = CheckModule(module);
        var tokens = Tokens(path);
        var pins = (await _store.ListPkcs11PinsAsync(ct).ConfigureAwait(false)).Where(p => p.Module == path).ToDictionary(p => p.Token, StringComparer.Ordinal);
        var result = new List<Pkcs11TokenInfo>();
        foreach (var (slot, info) in tokens)
        {
            string label = info.Label.Trim();
            string? pin = null;
            if (pins.TryGetValue(label, out var stored))
            {
                try { pin = Ring.Open(stored.Pin, PinRow(path, label)); }
                catch (KmsException) { pin = null; }
            }
            bool initialized = info.TokenFlags.TokenInitialized;
            var (objects, loggedIn) = !initialized ? (new List<Pkcs11ObjectInfo>(), false) : RunToken(() => Pkcs11Token.WithLibrary(path, lib =>
            {
                var s = lib.GetSlotList(SlotsType.WithTokenPresent).First(x => x.SlotId == slot);
                using var session = s.OpenSession(SessionType.ReadOnly);
                bool login = false;
                if (pin is not null)
                {
                    try { session.Login(CKU.CKU_USER, pin); login = true; }
                    catch (Pkcs11Exception ex) when (ex.RV == CKR.CKR_USER_ALREADY_LOGGED_IN) { login = true; }
                    catch (Pkcs11Exception) { login = false; }
                }
                try { return (ListObjects(session), login); }
                finally { if (login) try { session.Logout(); } catch (Pkcs11Exception) { } }
            }));
            result.Add(new Pkcs11TokenInfo
            {
                Module = path, Slot = slot, Label = label, Model = info.Model?.Trim(), Manufacturer = info.ManufacturerId?.Trim(), SerialNumber = info.SerialNumber?.Trim(),
                Initialized = initialized, PinConfigured = stored is not null, LoggedIn = loggedIn, Objects = objects,
            });
        }
        return result;
    }

    private static List<Pkcs11ObjectInfo> ListObjects(ISession session)
    {
        var f = Pkcs11Token.Factories.ObjectAttributeFactory;
        var list = new List<Pkcs11ObjectInfo>();
        foreach (var (cls, name) in new[] { (CKO.CKO_PRIVATE_KEY, "private-key"), (CKO.CKO_PUBLIC_KEY, "public-key"), (CKO.CKO_CERTIFICATE, "certificate") })
        {
            foreach (var h in session.FindAllObjects([f.Create(CKA.CKA_CLASS, cls)]))
            {
                var attrs = session.GetAttributeValue(h, cls == CKO.CKO_CERTIFICATE ? [CKA.CKA_LABEL, CKA.CKA_ID] : [CKA.CKA_LABEL, CKA.CKA_ID, CKA.CKA_KEY_TYPE]);
                string? label = attrs[0].CannotBeRead ? null : attrs[0].GetValueAsString();
                var id = attrs[1].CannotBeRead ? null : attrs[1].GetValueAsByteArray();
                string? type = null;
                if (attrs.Count > 2 && !attrs[2].CannotBeRead)
                    type = (CKK)attrs[2].GetValueAsUlong() switch { CKK.CKK_EC => "EC", CKK.CKK_RSA => "RSA", var k => k.ToString() };
                list.Add(new Pkcs11ObjectInfo(name, label, id is { Length: > 0 } ? Convert.ToHexString(id) : null, type));
            }
        }
        return list;
    }

    /// <summary>Readiness of every module the station's keys and PINs name.</summary>
    public async Task<IReadOnlyList<Pkcs11ModuleStatus>> StatusAsync(CancellationToken ct = default)
    {
        var keys = (await _store.ListSigningKeysAsync(ct).ConfigureAwait(false)).Where(k => k.Kind == SigningKeyKind.Pkcs11).ToList();
        var pins = await _store.ListPkcs11PinsAsync(ct).ConfigureAwait(false);
        var modules = keys.Select(k => k.Pkcs11Module!).Concat(pins.Select(p => p.Module)).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal);
        var result = new List<Pkcs11ModuleStatus>();
        foreach (var m in modules)
        {
            bool exists = File.Exists(m);
            IReadOnlyList<string> tokens = [];
            string? error = null;
            bool loaded = false;
            if (exists)
            {
                try { tokens = Tokens(CheckModule(m)).Where(t => t.Info.TokenFlags.TokenInitialized).Select(t => t.Info.Label.Trim()).ToList(); loaded = true; }
                catch (StationException ex) { error = ex.Message; }
            }
            else error = "the module file does not exist";
            result.Add(new Pkcs11ModuleStatus
            {
                Module = m, Exists = exists, Loaded = loaded, Error = error, Tokens = tokens,
                Keys = keys.Where(k => k.Pkcs11Module == m).Select(k => k.Label + (k.Active ? " (active)" : "")).ToList(),
            });
        }
        return result;
    }

    public async Task<IReadOnlyList<Pkcs11PinStatus>> PinStatusAsync(CancellationToken ct = default) =>
        (await _store.ListPkcs11PinsAsync(ct).ConfigureAwait(false))
            .Select(p => new Pkcs11PinStatus(p.Module, p.Token, true, SecretSealer.IsSealed(p.Pin), SecretSealer.IsSealed(p.Pin) ? p.WrapKeyId : null, p.Updated)).ToList();

    /// <summary>
    /// Stores a token's PIN sealed with the master key after it logs in (a refused PIN stores nothing); an empty PIN removes it.
    /// Returns whether a PIN is now stored.
    /// </summary>
    public async Task<bool> SetPinAsync(string? module, string? tokenLabel, ulong? slot, string? pin, CancellationToken ct = default)
    {
        var path = CheckModule(module);
        var token = ResolveToken(path, tokenLabel, slot);
        if (string.IsNullOrEmpty(pin))
        {
            await _store.RemovePkcs11PinAsync(path, token, ct).ConfigureAwait(false);
            return false;
        }
        if (pin.Length > 256 || pin.Any(char.IsControl)) throw new StationException(400, "INVALID_PARAMETER", "pin: at most 256 printable characters");
        var ring = Ring;
        if (!ring.CanSeal) throw new StationException(409, "NO_MASTER_KEY", "the server has no master key to seal the PIN with; start it with -MasterKey Tpm, Pkcs11 or InsecureFile");
        var settings = new Pkcs11Settings { LibraryPath = path, TokenLabel = token, Pin = pin };
        RunToken(() => Pkcs11Token.Run(settings, _ => 0), settings);
        await _store.UpsertPkcs11PinAsync(new Pkcs11PinRecord
        {
            Module = path, Token = token, Pin = ring.Seal(pin, PinRow(path, token)), WrapKeyId = ring.PrimaryId, Updated = DateTimeOffset.UtcNow,
        }, ct).ConfigureAwait(false);
        return true;
    }

    public void Dispose()
    {
        _cache?.Ca.Dispose();
        lock (_retired)
        {
            foreach (var ca in _retired) ca.Dispose();
            _retired.Clear();
        }
        lock (_ringGate) _ring?.Dispose();
        _gate.Dispose();
    }
}
