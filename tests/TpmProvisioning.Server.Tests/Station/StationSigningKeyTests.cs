using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Net.Pkcs11Interop.Common;
using Net.Pkcs11Interop.HighLevelAPI;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Kms;
using TpmProvisioning.Pki;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Storage;
using TpmProvisioning.Tpm;
using TpmProvisioning.Tpm.Simulator;

namespace TpmProvisioning.Tests.Station;

/// <summary>
/// A SoftHSM2 token of this test process (SOFTHSM2_CONF is read once per process, when the module is first loaded) with an
/// EC P-256 key generated inside it and a CA certificate signed inside it.
/// </summary>
public static class StationSoftHsm
{
    public const string Module = "/usr/lib/softhsm/libsofthsm2.so";
    public const string Token = "station-ca";
    public const string Pin = "pin-7Hq2-station-93";
    public const string KeyLabel = "tpm-ca-hsm";

    private static readonly Lazy<(string Dir, X509Certificate2 Certificate)> s_state = new(() =>
    {
        var dir = System.IO.Directory.CreateTempSubdirectory("tpmprov-station-hsm-").FullName;
        System.IO.Directory.CreateDirectory(Path.Combine(dir, "tokens"));
        var conf = Path.Combine(dir, "softhsm2.conf");
        File.WriteAllText(conf, $"directories.tokendir = {dir}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n");
        // The module reads the native environment, which Environment.SetEnvironmentVariable does not change on Unix.
        Environment.SetEnvironmentVariable("SOFTHSM2_CONF", conf);
        if (setenv("SOFTHSM2_CONF", conf, 1) != 0) throw new InvalidOperationException("setenv failed");
        var psi = new ProcessStartInfo("softhsm2-util", ["--init-token", "--free", "--label", Token, "--pin", Pin, "--so-pin", "56781234"])
        { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.Environment["SOFTHSM2_CONF"] = conf;
        using (var p = Process.Start(psi)!)
        {
            p.WaitForExit();
            if (p.ExitCode != 0) throw new InvalidOperationException(p.StandardError.ReadToEnd());
        }
        var settings = new Pkcs11Settings { LibraryPath = Module, TokenLabel = Token, Pin = Pin };
        var point = Pkcs11Token.Run(settings, session =>
        {
            var f = Pkcs11Token.Factories.ObjectAttributeFactory;
            byte[] p256 = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
            var pub = new List<IObjectAttribute>
            {
                f.Create(CKA.CKA_TOKEN, true), f.Create(CKA.CKA_PRIVATE, false), f.Create(CKA.CKA_VERIFY, true),
                f.Create(CKA.CKA_LABEL, KeyLabel), f.Create(CKA.CKA_ID, new byte[] { 0xCA, 0x01 }), f.Create(CKA.CKA_EC_PARAMS, p256),
            };
            var priv = new List<IObjectAttribute>
            {
                f.Create(CKA.CKA_TOKEN, true), f.Create(CKA.CKA_PRIVATE, true), f.Create(CKA.CKA_SIGN, true), f.Create(CKA.CKA_SENSITIVE, true),
                f.Create(CKA.CKA_EXTRACTABLE, false), f.Create(CKA.CKA_LABEL, KeyLabel), f.Create(CKA.CKA_ID, new byte[] { 0xCA, 0x01 }),
            };
            session.GenerateKeyPair(Pkcs11Token.Factories.MechanismFactory.Create(CKM.CKM_EC_KEY_PAIR_GEN), pub, priv, out var pubHandle, out _);
            return session.GetAttributeValue(pubHandle, [CKA.CKA_EC_POINT])[0].GetValueAsByteArray();
        });
        // CKA_EC_POINT is a DER OCTET STRING around the uncompressed point 04 || X || Y.
        var q = point[^65..];
        using var ec = ECDsa.Create(new ECParameters { Curve = ECCurve.NamedCurves.nistP256, Q = new ECPoint { X = q[1..33], Y = q[33..] } });
        using var signer = new Pkcs11CertificateSigner(settings, KeyLabel, null, ec.ExportSubjectPublicKeyInfo());
        var cert = TpmCa.CreateSelfSigned(signer, "CN=HSM TPM CA, O=Contoso", TimeSpan.FromDays(365));
        return (dir, cert);
    });

    [System.Runtime.InteropServices.DllImport("libc", CharSet = System.Runtime.InteropServices.CharSet.Ansi)]
    private static extern int setenv(string name, string value, int overwrite);

    /// <summary>The CA certificate of the token's key (made by a signature inside the token).</summary>
    public static X509Certificate2 Certificate => s_state.Value.Certificate;
    public static string TokenDirectory => s_state.Value.Dir;
}

/// <summary>One swtpm device and one station server (Provisioning + Station) whose master key is a key file, started once for the class.</summary>
public sealed class SigningKeyServerFixture : IAsyncLifetime
{
    public SwtpmInstance Tpm { get; } = SwtpmInstance.Start(new SwtpmOptions { StateMode = SwtpmStateMode.Fresh });
    public StationTestServer Server { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        _ = StationSoftHsm.Certificate; // the token exists before the server loads the module
        var root = X509Certificate2.CreateFromPem(File.ReadAllText(Tpm.ManufacturerRootPath));
        var issuer = X509Certificate2.CreateFromPem(File.ReadAllText(Tpm.ManufacturerIssuerPath));
        Server = await StationTestServer.StartAsync(root, issuer, o => o.Station.MasterKey = new KmsSettings { MasterKey = MasterKeyKind.InsecureFile });
    }

    public async Task DisposeAsync()
    {
        if (Server is not null) await Server.DisposeAsync();
        Tpm.Dispose();
    }
}

/// <summary>
/// Signing keys, the HSM and secrets at rest on a real server: a SoftHSM2 key registered, discovered, its PIN stored sealed,
/// activated while the server runs, and a swtpm device's AK certificate signed inside the token; PEM keys checked and sealed;
/// plaintext secrets migrated until none is left in the database file or its WAL. Every refusal is the error object and
/// changes nothing.
/// </summary>
public sealed class StationSigningKeyTests : IClassFixture<SigningKeyServerFixture>
{
    private readonly SigningKeyServerFixture _f;
    private StationTestServer S => _f.Server;

    public StationSigningKeyTests(SigningKeyServerFixture f) => _f = f;

    private static string J(object o) => JsonSerializer.Serialize(o);
    private static JsonElement Json(string body) => StationTestServer.Json(body);

    private async Task<DeviceProvisioningResult> ProvisionAsync(X509Certificate2 expectedCa)
    {
        using var client = new ProvisioningClient(new ProvisioningClientOptions { Server = new Uri(S.Url), CaCertificate = S.ServerCa });
        using var dev = TpmDevice.Open(_f.Tpm.ConnectionString);
        return await client.ProvisionAsync(dev, new DeviceIdentity("door-controller", "SK-0001", "Contoso", "4.0.2"), S.Key.Key,
            new DeviceProvisioningOptions { TpmCaCertificate = expectedCa, ReplaceAkHandle = true });
    }

    private static bool SignedBy(X509Certificate2 cert, X509Certificate2 ca)
    {
        var bc = new Org.BouncyCastle.X509.X509CertificateParser().ReadCertificate(cert.RawData);
        var issuer = new Org.BouncyCastle.X509.X509CertificateParser().ReadCertificate(ca.RawData);
        try { bc.Verify(issuer.GetPublicKey()); return true; }
        catch (Exception) { return false; }
    }

    private async Task<string> KeysAsync()
    {
        var r = await S.GetAsync("/options/keys");
        Assert.Equal(HttpStatusCode.OK, r.Status);
        return r.Body;
    }

    private async Task<byte[]> RawDatabaseAsync()
    {
        var db = Path.Combine(S.DataPath, "tpmprovisioning.db");
        var bytes = new List<byte>();
        foreach (var f in new[] { db, db + "-wal" })
        {
            if (!File.Exists(f)) continue;
            await using var fs = new FileStream(f, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            using var ms = new MemoryStream();
            await fs.CopyToAsync(ms);
            bytes.AddRange(ms.ToArray());
        }
        return bytes.ToArray();
    }

    /// <summary>Every run of 12 or more letters and digits of a secret (a PEM body survives JSON escaping in such runs).</summary>
    private static IEnumerable<string> Fragments(string secret) =>
        Regex.Matches(secret.Replace("-----BEGIN", "").Replace("-----END", ""), "[A-Za-z0-9]{12,}").Select(m => m.Value).Where(v => !v.Contains("PRIVATE", StringComparison.Ordinal));

    /// <summary>
    /// Asserts no fragment of <paramref name="secret"/> is in the raw bytes. A PEM private key also holds its public key, which the
    /// stored certificate carries too: fragments found in <paramref name="publicTexts"/> are not secret.
    /// </summary>
    private static void AssertAbsent(byte[] raw, string secret, string what, params string[] publicTexts)
    {
        var text = Encoding.Latin1.GetString(raw);
        var fragments = Fragments(secret).Where(f => !publicTexts.Any(p => p.Contains(f, StringComparison.Ordinal))).ToList();
        if (secret.Length > 64) Assert.True(fragments.Count >= 3, $"{what}: too few private fragments to check");
        foreach (var frag in fragments.Append(secret.Length < 64 ? secret : secret[..0]).Where(x => x.Length > 0))
            Assert.False(text.Contains(frag, StringComparison.Ordinal), $"{what} appears in the raw database or its WAL");
    }

    private static (string CertPem, string KeyPem) NewCa(string subject, Func<AsymmetricAlgorithm> make, bool ca = true)
    {
        using var key = make();
        CertificateRequest req = key switch
        {
            ECDsa ec => new CertificateRequest(subject, ec, HashAlgorithmName.SHA256),
            RSA rsa => new CertificateRequest(subject, rsa, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1),
            _ => throw new ArgumentException(null, nameof(make)),
        };
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(ca, false, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(ca ? X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.DigitalSignature : X509KeyUsageFlags.DigitalSignature, true));
        using var cert = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddYears(2));
        string keyPem = key switch { ECDsa ec => ec.ExportPkcs8PrivateKeyPem(), RSA rsa => rsa.ExportPkcs8PrivateKeyPem(), _ => "" };
        return (cert.ExportCertificatePem(), keyPem);
    }

    [Fact]
    public async Task AnHsmKeyRegisteredDiscoveredAndActivatedSignsTheNextAkCertificateInsideTheToken()
    {
        var hsmCert = StationSoftHsm.Certificate;
        string hsmCertPem = hsmCert.ExportCertificatePem();
        var before = await KeysAsync();
        Assert.Equal("builtin", Json(before).GetProperty("activeKeyId").GetString());

        // A missing module, a relative path, a module that is not a PKCS#11 library: the error object, nothing stored.
        foreach (var (module, code) in new[] { ("/nonexistent/libpkcs11.so", "PKCS11_MODULE_NOT_FOUND"), ("libsofthsm2.so", "PKCS11_MODULE_INVALID"), ("/usr/lib/../lib/softhsm/libsofthsm2.so", "PKCS11_MODULE_INVALID") })
        {
            var bad = await S.PostJsonAsync("/options/keys/register-pkcs11", J(new { label = "hsm", module, token_label = StationSoftHsm.Token, key_label = StationSoftHsm.KeyLabel, certificate = hsmCertPem }));
            Assert.Equal(code, StationTestServer.ErrorCode(bad, HttpStatusCode.BadRequest));
        }
        // A shared library that is not a PKCS#11 module (it has no C_GetFunctionList): the error object too.
        var notPkcs11 = Path.Combine(System.Runtime.InteropServices.RuntimeEnvironment.GetRuntimeDirectory(), "libSystem.Native.so");
        Assert.True(File.Exists(notPkcs11), notPkcs11);
        var notModule = await S.PostJsonAsync("/options/pkcs11-discover", J(new { module = notPkcs11 }));
        bool othersMayWrite = (File.GetUnixFileMode(notPkcs11) & (UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) != 0;
        Assert.Equal(othersMayWrite ? "PKCS11_MODULE_INVALID" : "PKCS11_ERROR", StationTestServer.ErrorCode(notModule, HttpStatusCode.BadRequest));
        Assert.Equal(before, await KeysAsync());

        // Register: module, token, key and its CA certificate. Not active yet.
        var reg = await S.PostJsonAsync("/options/keys/register-pkcs11", J(new { label = "hsm", module = StationSoftHsm.Module, token_label = StationSoftHsm.Token, key_label = StationSoftHsm.KeyLabel, certificate = hsmCertPem }));
        Assert.Equal(HttpStatusCode.Created, reg.Status);
        var regJson = Json(reg.Body);
        Assert.Equal("pkcs11", regJson.GetProperty("location").GetString());
        Assert.False(regJson.GetProperty("active").GetBoolean());
        Assert.Equal(Convert.ToHexString(SHA256.HashData(hsmCert.RawData)), regJson.GetProperty("fingerprint").GetString());

        // Discovery without a PIN: the token and its public key.
        var disc = await S.PostJsonAsync("/options/pkcs11-discover", J(new { module = StationSoftHsm.Module }));
        Assert.True(disc.Status == HttpStatusCode.OK, disc.Body);
        var token = Json(disc.Body).GetProperty("tokens").EnumerateArray().Single(t => t.GetProperty("label").GetString() == StationSoftHsm.Token);
        Assert.False(token.GetProperty("pinConfigured").GetBoolean());
        Assert.Contains(token.GetProperty("objects").EnumerateArray(), o => o.GetProperty("class").GetString() == "public-key" && o.GetProperty("label").GetString() == StationSoftHsm.KeyLabel);
        Assert.Equal(HttpStatusCode.BadRequest, (await S.PostJsonAsync("/options/pkcs11-discover", J(new { module = "/nonexistent/x.so" }))).Status);

        // Without a stored PIN the key cannot be activated; a wrong PIN is refused and nothing is stored.
        Assert.Equal("PKCS11_PIN_MISSING", StationTestServer.ErrorCode(await S.PostJsonAsync("/options/keys/activate", J(new { id = "hsm" })), HttpStatusCode.Conflict));
        var wrong = await S.PostJsonAsync("/options/set-pkcs11-pin", J(new { module = StationSoftHsm.Module, token_label = StationSoftHsm.Token, pin = "not-the-pin-000" }));
        Assert.Equal("PKCS11_PIN_REFUSED", StationTestServer.ErrorCode(wrong, HttpStatusCode.BadRequest));
        var missing = await S.PostJsonAsync("/options/set-pkcs11-pin", J(new { module = "/nonexistent/libpkcs11.so", token_label = StationSoftHsm.Token, pin = StationSoftHsm.Pin }));
        Assert.Equal("PKCS11_MODULE_NOT_FOUND", StationTestServer.ErrorCode(missing, HttpStatusCode.BadRequest));
        var pinStatus = await S.GetAsync("/options/pkcs11-pin-status?module=" + Uri.EscapeDataString(StationSoftHsm.Module));
        Assert.False(Json(pinStatus.Body).GetProperty("configured").GetBoolean());
        Assert.DoesNotContain(StationSoftHsm.Pin, wrong.Body + missing.Body + pinStatus.Body);

        // The right PIN is stored sealed: never returned, not in the raw database or its WAL.
        var set = await S.PostJsonAsync("/options/set-pkcs11-pin", J(new { module = StationSoftHsm.Module, token_label = StationSoftHsm.Token, pin = StationSoftHsm.Pin }));
        Assert.True(set.Status == HttpStatusCode.OK, set.Body);
        pinStatus = await S.GetAsync("/options/pkcs11-pin-status");
        var pinTok = Json(pinStatus.Body).GetProperty("tokens").EnumerateArray().Single(t => t.GetProperty("module").GetString() == StationSoftHsm.Module);
        Assert.True(pinTok.GetProperty("wrapped").GetBoolean());
        Assert.DoesNotContain(StationSoftHsm.Pin, set.Body + pinStatus.Body);
        AssertAbsent(await RawDatabaseAsync(), StationSoftHsm.Pin, "the PKCS#11 PIN");
        Assert.DoesNotContain(StationSoftHsm.Pin, string.Join("\n", S.Host.RecentLog(500).Select(e => e.Message + e.Exception)));

        // With the PIN, discovery logs in and sees the private key (never its value).
        disc = await S.PostJsonAsync("/options/pkcs11-discover", J(new { module = StationSoftHsm.Module }));
        token = Json(disc.Body).GetProperty("tokens").EnumerateArray().Single(t => t.GetProperty("label").GetString() == StationSoftHsm.Token);
        Assert.True(token.GetProperty("loggedIn").GetBoolean());
        Assert.Contains(token.GetProperty("objects").EnumerateArray(), o => o.GetProperty("class").GetString() == "private-key" && o.GetProperty("id").GetString() == "CA01");

        var status = await S.GetAsync("/options/pkcs11-status");
        var mod = Json(status.Body).GetProperty("modules").EnumerateArray().Single(x => x.GetProperty("module").GetString() == StationSoftHsm.Module);
        Assert.True(mod.GetProperty("loaded").GetBoolean());
        Assert.Contains(StationSoftHsm.Token, mod.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()));

        // The builtin TPM CA signs while the HSM key is only registered.
        var first = await ProvisionAsync(S.TpmCa);
        Assert.True(SignedBy(first.AkCertificate, S.TpmCa));

        // Activated on the running server: the next AK certificate is signed inside the token.
        var act = await S.PostJsonAsync("/options/keys/activate", J(new { id = "hsm" }));
        Assert.Equal(HttpStatusCode.OK, act.Status);
        Assert.Equal("hsm", Json(await KeysAsync()).GetProperty("activeKeyId").GetString());
        var second = await ProvisionAsync(hsmCert);
        Assert.True(SignedBy(second.AkCertificate, hsmCert));
        Assert.False(SignedBy(second.AkCertificate, S.TpmCa));
        Assert.Equal(hsmCert.SubjectName.Name, second.AkCertificate.IssuerName.Name);

        // The active key cannot be removed; back to the builtin CA, the next certificate is the TPM CA's again.
        Assert.Equal("KEY_ACTIVE", StationTestServer.ErrorCode(await S.PostJsonAsync("/options/keys/remove", J(new { id = "hsm" })), HttpStatusCode.Conflict));
        Assert.Equal(HttpStatusCode.OK, (await S.PostJsonAsync("/options/keys/activate", J(new { id = "builtin" }))).Status);
        var third = await ProvisionAsync(S.TpmCa);
        Assert.True(SignedBy(third.AkCertificate, S.TpmCa));

        // The cmdlets' client reads the same answers back into the engine's types.
        using var client = new TpmProvisioning.Station.StationClient(new TpmProvisioning.Station.StationClientOptions { Server = new Uri(S.Url), Token = S.Token, CaCertificate = S.ServerCa });
        var listed = (await client.GetSigningKeysAsync()).Single(k => k.Label == "hsm");
        Assert.Equal("pkcs11", listed.Location);
        Assert.Equal(StationSoftHsm.Module, listed.Pkcs11Module);
        Assert.False(listed.Active);
        var found = (await client.DiscoverPkcs11Async(StationSoftHsm.Module)).Single(t => t.Label == StationSoftHsm.Token);
        Assert.True(found.LoggedIn);
        Assert.Contains(found.Objects, o => o.Class == "private-key" && o.Label == StationSoftHsm.KeyLabel && o.KeyType == "EC");
        Assert.Contains(await client.GetPkcs11PinStatusAsync(), p => p.Module == StationSoftHsm.Module && p.Token == StationSoftHsm.Token && p.Wrapped);
        Assert.Contains(await client.GetPkcs11StatusAsync(), m => m.Module == StationSoftHsm.Module && m.Loaded);
        var validation = await client.ValidateKeyAsync(null, null, new TpmProvisioning.Station.Pkcs11KeyRequest
        {
            Module = StationSoftHsm.Module, TokenLabel = StationSoftHsm.Token, KeyId = "CA01", CertificatePem = hsmCertPem,
        });
        Assert.True(validation.Valid);
        Assert.Contains("verifies", validation.Message);
        var refused = await Assert.ThrowsAsync<TpmProvisioning.Station.StationRequestException>(() => client.SetPkcs11PinAsync(StationSoftHsm.Module, StationSoftHsm.Token, null, "wrong-pin-0000"));
        Assert.Equal("PKCS11_PIN_REFUSED", refused.Code);
        // The refused PIN did not replace the stored one: the key still activates and signs.
        Assert.Equal("hsm", (await client.SigningKeyOperationAsync("activate", "hsm")).Label);
        Assert.Equal("builtin", (await client.SigningKeyOperationAsync("activate", "builtin")).Label);
    }

    [Fact]
    public async Task BadPemKeysAreRefusedWithTheErrorObjectAndChangeNothing()
    {
        var (goodCert, goodKey) = NewCa("CN=Plant CA", () => ECDsa.Create(ECCurve.NamedCurves.nistP256));
        var (_, otherKey) = NewCa("CN=Other", () => ECDsa.Create(ECCurve.NamedCurves.nistP256));
        var (rsa1024Cert, rsa1024Key) = NewCa("CN=Weak CA", () => RSA.Create(1024));
        var (leafCert, leafKey) = NewCa("CN=Not a CA", () => ECDsa.Create(ECCurve.NamedCurves.nistP256), ca: false);
        var (p521Cert, p521Key) = NewCa("CN=P521 CA", () => ECDsa.Create(ECCurve.NamedCurves.nistP521));
        var before = await KeysAsync();
        var rows = (await S.Store.ListSigningKeysAsync()).Count;

        var cases = new (string Cert, string Key, string Code)[]
        {
            (goodCert, "garbage", "INVALID_KEY"),
            (goodCert, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "INVALID_KEY"),
            ("not a certificate", goodKey, "INVALID_CERTIFICATE"),
            (goodCert, otherKey, "KEY_CERTIFICATE_MISMATCH"),
            (rsa1024Cert, rsa1024Key, "INVALID_KEY"),
            (goodCert, rsa1024Key, "INVALID_KEY"),
            (leafCert, leafKey, "INVALID_CERTIFICATE"),
            (p521Cert, p521Key, "INVALID_KEY"),
        };
        foreach (var (cert, key, code) in cases)
        {
            Assert.Equal(code, StationTestServer.ErrorCode(await S.PostJsonAsync("/options/upload-key", J(new { label = "bad", certificate = cert, key })), HttpStatusCode.BadRequest));
            Assert.Equal(code, StationTestServer.ErrorCode(await S.PostJsonAsync("/options/validate-key", J(new { type = "pem", certificate = cert, key })), HttpStatusCode.BadRequest));
        }
        // Bad labels and bodies.
        Assert.Equal("INVALID_PARAMETER", StationTestServer.ErrorCode(await S.PostJsonAsync("/options/upload-key", J(new { label = "../x", certificate = goodCert, key = goodKey })), HttpStatusCode.BadRequest));
        Assert.Equal("INVALID_PARAMETER", StationTestServer.ErrorCode(await S.PostJsonAsync("/options/upload-key", J(new { label = "builtin", certificate = goodCert, key = goodKey })), HttpStatusCode.BadRequest));
        Assert.Equal("INVALID_JSON", StationTestServer.ErrorCode(await S.PostJsonAsync("/options/upload-key", "{not json"), HttpStatusCode.BadRequest));
        Assert.Equal("KEY_NOT_FOUND", StationTestServer.ErrorCode(await S.PostJsonAsync("/options/keys/activate", J(new { id = "nope" })), HttpStatusCode.NotFound));
        Assert.Equal("KEY_ACTIVE", StationTestServer.ErrorCode(await S.PostJsonAsync("/options/keys/remove", J(new { id = "builtin" })), HttpStatusCode.Conflict));
        Assert.Equal("METHOD_NOT_ALLOWED", StationTestServer.ErrorCode(await S.GetAsync("/options/upload-key"), HttpStatusCode.MethodNotAllowed));
        Assert.Equal(HttpStatusCode.Unauthorized, (await S.PostJsonAsync("/options/upload-key", J(new { label = "x", certificate = goodCert, key = goodKey }), auth: false)).Status);
        Assert.Equal(before, await KeysAsync());
        Assert.Equal(rows, (await S.Store.ListSigningKeysAsync()).Count);

        // The good pair validates and uploads, sealed; a second upload under the same label is a conflict.
        var ok = await S.PostJsonAsync("/options/validate-key", J(new { type = "pem", certificate = goodCert, key = goodKey }));
        Assert.True(Json(ok.Body).GetProperty("valid").GetBoolean());
        var up = await S.PostJsonAsync("/options/upload-key", J(new { label = "plant", certificate = goodCert, key = goodKey }));
        Assert.Equal(HttpStatusCode.Created, up.Status);
        Assert.Equal("pem-wrapped", Json(up.Body).GetProperty("location").GetString());
        Assert.DoesNotContain("PRIVATE KEY", up.Body + await KeysAsync());
        Assert.Equal("KEY_EXISTS", StationTestServer.ErrorCode(await S.PostJsonAsync("/options/upload-key", J(new { label = "plant", certificate = goodCert, key = goodKey })), HttpStatusCode.Conflict));
        Assert.Equal(HttpStatusCode.OK, (await S.PostJsonAsync("/options/keys/remove", J(new { id = "plant" }))).Status);
    }

    [Fact]
    public async Task MigrateSecretsWrapsEveryPlaintextSecretAndLeavesNoneInTheDatabaseFiles()
    {
        // Stored before a master key existed: a PEM signing key, a PKCS#11 PIN, a verifier tenant's revocation_key and V.
        var (legacyCert, legacyKey) = NewCa("CN=Legacy CA", () => RSA.Create(2048));
        using var legacyCertObj = X509Certificate2.CreateFromPem(legacyCert);
        var now = DateTimeOffset.UtcNow;
        Assert.True(await S.Store.InsertSigningKeyAsync(new SigningKeyRecord
        {
            Label = "legacy", Kind = SigningKeyKind.Pem, Algorithm = "RSA", KeySize = 2048, Fingerprint = Convert.ToHexString(SHA256.HashData(legacyCertObj.RawData)),
            CertificatePem = legacyCert, PrivateKey = legacyKey, Created = now, Updated = now,
        }));
        const string legacyPin = "legacy-pin-Zq81xW";
        await S.Store.UpsertPkcs11PinAsync(new Pkcs11PinRecord { Module = "/opt/legacy/libpkcs11.so", Token = "legacy", Pin = legacyPin, Updated = now });
        using var revocation = RSA.Create(2048);
        string revocationPem = revocation.ExportPkcs8PrivateKeyPem();
        string v = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));
        Assert.True(await S.Store.InsertVerifierAgentAsync(new VerifierAgentRecord
        {
            AgentId = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000", Config = new VerifierAgentConfig { RevocationKey = revocationPem, V = v, Ip = "127.0.0.1", Port = 9002 },
        }));
        // And one uploaded now, sealed at once.
        var (newCert, newKey) = NewCa("CN=New CA", () => ECDsa.Create(ECCurve.NamedCurves.nistP384));
        Assert.Equal(HttpStatusCode.Created, (await S.PostJsonAsync("/options/upload-key", J(new { label = "fresh", certificate = newCert, key = newKey }))).Status);

        var status = Json((await S.GetAsync("/options/encryption-status")).Body);
        string masterKeyId = status.GetProperty("masterKeyId").GetString()!;
        Assert.Matches("^[0-9a-f]{16}$", masterKeyId);
        long Plain(JsonElement s, string kind) => s.GetProperty("kinds").EnumerateArray().Single(k => k.GetProperty("kind").GetString() == kind).GetProperty("plaintext").GetInt64();
        long WrappedBy(JsonElement s, string kind, string id) =>
            s.GetProperty("kinds").EnumerateArray().Single(k => k.GetProperty("kind").GetString() == kind).GetProperty("wrappedBy").TryGetProperty(id, out var n) ? n.GetInt64() : 0;
        Assert.Equal(1, Plain(status, "signing-keys"));
        Assert.Equal(1, Plain(status, "pkcs11-pins"));
        Assert.Equal(1, Plain(status, "verifier-revocation-keys"));
        Assert.Equal(1, Plain(status, "verifier-v"));
        Assert.True(WrappedBy(status, "signing-keys", masterKeyId) >= 1);
        Assert.True(status.GetProperty("totalPlaintext").GetInt64() >= 4);

        var bad = await S.PostJsonAsync("/options/migrate-secrets", J(new { target = "everything" }));
        Assert.Equal("INVALID_PARAMETER", StationTestServer.ErrorCode(bad, HttpStatusCode.BadRequest));

        var migrate = await S.PostJsonAsync("/options/migrate-secrets", J(new { target = "all" }));
        Assert.Equal(HttpStatusCode.OK, migrate.Status);
        var m = Json(migrate.Body);
        Assert.True(m.GetProperty("totalWrapped").GetInt64() >= 4);
        Assert.Equal(0, m.GetProperty("status").GetProperty("totalPlaintext").GetInt64());

        status = Json((await S.GetAsync("/options/encryption-status")).Body);
        Assert.Equal(0, status.GetProperty("totalPlaintext").GetInt64());
        Assert.Equal(1, WrappedBy(status, "verifier-revocation-keys", masterKeyId));
        Assert.Equal(1, WrappedBy(status, "verifier-v", masterKeyId));
        Assert.True(WrappedBy(status, "pkcs11-pins", masterKeyId) >= 1);

        // Idempotent: nothing left to wrap.
        var again = Json((await S.PostJsonAsync("/options/migrate-secrets", "{}")).Body);
        Assert.Equal(0, again.GetProperty("totalWrapped").GetInt64());
        Assert.True(again.GetProperty("alreadyWrapped").GetInt64() >= 4);

        // No secret in the raw database file or its WAL.
        var raw = await RawDatabaseAsync();
        AssertAbsent(raw, legacyKey, "the legacy PEM signing key", legacyCert);
        AssertAbsent(raw, newKey, "the uploaded PEM signing key", newCert);
        AssertAbsent(raw, legacyPin, "the legacy PKCS#11 PIN");
        AssertAbsent(raw, revocationPem, "the verifier's revocation_key");
        AssertAbsent(raw, v, "the verifier's V");

        // The sealed secrets still open: the legacy key activates (its seal opens with the master key), and the verifier's row reads back.
        Assert.Equal(HttpStatusCode.OK, (await S.PostJsonAsync("/options/keys/activate", J(new { id = "legacy" }))).Status);
        Assert.Equal(HttpStatusCode.OK, (await S.PostJsonAsync("/options/keys/activate", J(new { id = "builtin" }))).Status);
        var agent = await S.Store.GetVerifierAgentAsync("d432fbb3-d2f1-4a97-9ef7-75bd81c00000");
        Assert.StartsWith(SecretSealer.Prefix, agent!.Config.RevocationKey);
        Assert.Equal(9002, agent.Config.Port);

        var audit = await S.Store.QueryAuditAsync(new AuditQuery { Action = "station.secrets.migrate" });
        Assert.Contains(audit, a => a.Outcome == AuditOutcome.Success && a.Detail!.Contains(masterKeyId, StringComparison.Ordinal));
        Assert.DoesNotContain(audit, a => a.Detail!.Contains(legacyPin, StringComparison.Ordinal));
    }
}
