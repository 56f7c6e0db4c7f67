using System.Diagnostics;
using System.Security.Cryptography;
using Net.Pkcs11Interop.Common;
using TpmProvisioning.Kms;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Kms;

/// <summary>The master key sealed to a real (software) TPM, cross-checked with tpm2-tools.</summary>
public sealed class TpmSealedMasterKeyTests(FastSwtpmFixture tpm) : IClassFixture<FastSwtpmFixture>, IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("tpmprov-mk-").FullName;

    [Fact]
    public void TheSealedKeyUnsealsToTheSameKeyAndTpm2ToolsUnsealsItToo()
    {
        var w = new TpmSealedMasterKey(_dir, tpm.ConnectionString);
        var first = w.LoadOrCreate();
        Assert.Equal(32, first.Length);
        Assert.Equal(first, w.LoadOrCreate());
        var text = File.ReadAllText(w.Path);
        Assert.DoesNotContain(Convert.ToBase64String(first), text);

        // Independent check: tpm2_createprimary (ecc256 default template) + tpm2_load + tpm2_unseal yield the same bytes.
        var blob = System.Text.Json.JsonDocument.Parse(text).RootElement;
        byte[] Sized(byte[] b) => [(byte)(b.Length >> 8), (byte)b.Length, .. b];
        File.WriteAllBytes(Path.Combine(_dir, "seal.pub"), Sized(Convert.FromBase64String(blob.GetProperty("Public").GetString()!)));
        File.WriteAllBytes(Path.Combine(_dir, "seal.priv"), Sized(Convert.FromBase64String(blob.GetProperty("Private").GetString()!)));
        string ctx = Path.Combine(_dir, "p.ctx"), obj = Path.Combine(_dir, "o.ctx"), outFile = Path.Combine(_dir, "out.bin");
        var psi = new ProcessStartInfo("bash", ["-c", $"tpm2_createprimary -C o -G ecc256 -c {ctx} >/dev/null && tpm2_load -C {ctx} -u {_dir}/seal.pub -r {_dir}/seal.priv -c {obj} >/dev/null && tpm2_flushcontext -t && tpm2_unseal -c {obj} -o {outFile}; rc=$?; tpm2_flushcontext -t; exit $rc"])
        { RedirectStandardError = true, RedirectStandardOutput = true };
        psi.Environment["TPM2TOOLS_TCTI"] = tpm.ConnectionString;
        using (var p = Process.Start(psi)!)
        {
            var err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            Assert.True(p.ExitCode == 0, err);
        }
        tpm.FlushTransients();
        Assert.Equal(first, File.ReadAllBytes(outFile));
    }

    [Fact]
    public async Task AStoreSetUpWithOneMasterKeyRefusesAnother()
    {
        using var store = await SqliteStore.OpenAsync(Path.Combine(_dir, "db.sqlite"));
        using (var e = await KmsEngine.OpenAsync(store, new TpmSealedMasterKey(_dir, tpm.ConnectionString)))
            await e.CreateProviderAsync("p", "k", RandomNumberGenerator.GetBytes(32), new KmsCaller("t"));
        using (var again = await KmsEngine.OpenAsync(store, new TpmSealedMasterKey(_dir, tpm.ConnectionString)))
            Assert.Equal(32, (await again.DeriveDataKeyAsync("p", "x")).Length);
        var ex = await Assert.ThrowsAsync<KmsException>(() => KmsEngine.OpenAsync(store, new InsecureFileMasterKey(Path.Combine(_dir, "other"))));
        Assert.Equal(KmsErrorKind.Unavailable, ex.Kind);
        // A tampered sealed blob does not load.
        var w = new TpmSealedMasterKey(_dir, tpm.ConnectionString);
        File.WriteAllText(w.Path, File.ReadAllText(w.Path).Replace("\"Private\":\"A", "\"Private\":\"B"));
        Assert.ThrowsAny<Exception>(() => w.LoadOrCreate());
    }

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }
}

/// <summary>SoftHSM2 tokens in a scratch directory, created once per test process (SOFTHSM2_CONF is process-wide).</summary>
public static class SoftHsm
{
    public const string Library = "/usr/lib/softhsm/libsofthsm2.so";
    public const string Pin = "1234";
    private static readonly Lazy<string> s_dir = new(() =>
    {
        var dir = Directory.CreateTempSubdirectory("tpmprov-softhsm-").FullName;
        Directory.CreateDirectory(Path.Combine(dir, "tokens"));
        var conf = Path.Combine(dir, "softhsm2.conf");
        File.WriteAllText(conf, $"directories.tokendir = {dir}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n");
        // The module reads the native environment, which Environment.SetEnvironmentVariable does not change on Unix.
        Environment.SetEnvironmentVariable("SOFTHSM2_CONF", conf);
        if (setenv("SOFTHSM2_CONF", conf, 1) != 0) throw new InvalidOperationException("setenv failed");
        foreach (var label in new[] { "kms-master", "luna" })
        {
            var psi = new ProcessStartInfo("softhsm2-util", ["--init-token", "--free", "--label", label, "--pin", Pin, "--so-pin", "5678"]) { RedirectStandardOutput = true, RedirectStandardError = true };
            psi.Environment["SOFTHSM2_CONF"] = conf;
            using var p = Process.Start(psi)!;
            p.WaitForExit();
            if (p.ExitCode != 0) throw new InvalidOperationException(p.StandardError.ReadToEnd());
        }
        return dir;
    });

    [System.Runtime.InteropServices.DllImport("libc", CharSet = System.Runtime.InteropServices.CharSet.Ansi)]
    private static extern int setenv(string name, string value, int overwrite);

    public static Pkcs11Settings Token(string label, string pin = Pin)
    {
        _ = s_dir.Value;
        return new Pkcs11Settings { LibraryPath = Library, TokenLabel = label, Pin = pin };
    }
}

public sealed class Pkcs11Tests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("tpmprov-p11-").FullName;

    [Fact]
    public void TheHsmWrappedMasterKeyRoundTripsAndAWrongPinIsAClearError()
    {
        var w = new Pkcs11MasterKey(_dir, SoftHsm.Token("kms-master"));
        var key = w.LoadOrCreate();
        Assert.Equal(32, key.Length);
        Assert.Equal(key, w.LoadOrCreate());
        Assert.DoesNotContain(Convert.ToBase64String(key), File.ReadAllText(w.Path));
        var ex = Assert.Throws<KmsException>(() => new Pkcs11MasterKey(_dir, SoftHsm.Token("kms-master", "0000")).LoadOrCreate());
        Assert.Contains("PIN", ex.Message);
        Assert.Throws<KmsException>(() => new Pkcs11MasterKey(_dir, SoftHsm.Token("no-such-token")).LoadOrCreate());
    }

    [Fact]
    public async Task AnHsmLunaVersionTakesTheHsmKeysMaterialWrappedOut()
    {
        var luna = SoftHsm.Token("luna");
        var material = RandomNumberGenerator.GetBytes(32);
        Pkcs11Token.Run(luna, session =>
        {
            var f = Pkcs11Token.Factories.ObjectAttributeFactory;
            session.CreateObject([f.Create(CKA.CKA_CLASS, CKO.CKO_SECRET_KEY), f.Create(CKA.CKA_KEY_TYPE, CKK.CKK_AES), f.Create(CKA.CKA_VALUE, material),
                f.Create(CKA.CKA_LABEL, "src-" + Path.GetFileName(_dir)), f.Create(CKA.CKA_TOKEN, true), f.Create(CKA.CKA_SENSITIVE, true), f.Create(CKA.CKA_EXTRACTABLE, true)]);
            session.CreateObject([f.Create(CKA.CKA_CLASS, CKO.CKO_SECRET_KEY), f.Create(CKA.CKA_KEY_TYPE, CKK.CKK_AES), f.Create(CKA.CKA_VALUE, RandomNumberGenerator.GetBytes(32)),
                f.Create(CKA.CKA_LABEL, "locked-" + Path.GetFileName(_dir)), f.Create(CKA.CKA_TOKEN, true), f.Create(CKA.CKA_SENSITIVE, true), f.Create(CKA.CKA_EXTRACTABLE, false)]);
            return 0;
        });
        using var store = await SqliteStore.OpenAsync(Path.Combine(_dir, "db.sqlite"));
        using var engine = await KmsEngine.OpenAsync(store, new InsecureFileMasterKey(_dir), new KmsSettings { HsmLunaSource = luna });
        var key = await engine.CreateKeyAsync("k", null, new KmsCaller("t"));
        var v = await engine.AddVersionAsync(key.Id, false, "src-" + Path.GetFileName(_dir), "hsm-luna", new KmsCaller("t"));
        Assert.Equal("EXTERNAL", v.Origin);
        Assert.Equal("hsm-luna", v.KeyMaterialOrigin);
        Assert.True(v.IsPrimary);
        Assert.Equal(material, (await engine.GetVersionMaterialAsync(key.Id, null)).Material);
        var ex = await Assert.ThrowsAsync<KmsException>(() => engine.AddVersionAsync(key.Id, false, "locked-" + Path.GetFileName(_dir), "hsm-luna", new KmsCaller("t")));
        Assert.Contains("not extractable", ex.Message);
        ex = await Assert.ThrowsAsync<KmsException>(() => engine.AddVersionAsync(key.Id, false, "absent", "hsm-luna", new KmsCaller("t")));
        Assert.Equal("source_key_identifier", ex.Field);
        Assert.Equal(2, (await engine.ListVersionsAsync(key.Id)).Count);
    }

    [Fact]
    public void AesKeyWrapMatchesRfc3394()
    {
        // RFC 3394 section 4.6: 256-bit key data with a 256-bit KEK.
        var kek = Convert.FromHexString("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F");
        var data = Convert.FromHexString("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F");
        var wrapped = Convert.FromHexString("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21");
        Assert.Equal(wrapped, AesKeyWrap.Wrap(kek, data));
        Assert.Equal(data, AesKeyWrap.Unwrap(kek, wrapped));
        wrapped[5] ^= 1;
        Assert.Throws<CryptographicException>(() => AesKeyWrap.Unwrap(kek, wrapped));
    }

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }
}

/// <summary>Secrets kept in text columns are sealed to their row and field, and open only with the same master key.</summary>
public sealed class SecretSealerTests
{
    [Fact]
    public void ASealedSecretOpensOnlyForItsRowWithItsKey()
    {
        var key = RandomNumberGenerator.GetBytes(32);
        using var sealer = new SecretSealer(key, "test");
        const string pem = "-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----\n";
        var sealedPem = sealer.Seal(pem, "verifier_agents/a/revocation_key")!;
        Assert.StartsWith(SecretSealer.Prefix, sealedPem);
        Assert.DoesNotContain("PRIVATE KEY", sealedPem);
        Assert.NotEqual(sealedPem, sealer.Seal(pem, "verifier_agents/a/revocation_key")); // fresh nonce each time
        Assert.Equal(pem, sealer.Open(sealedPem, "verifier_agents/a/revocation_key"));
        Assert.Equal(sealedPem, sealer.Seal(sealedPem, "verifier_agents/a/revocation_key")); // never sealed twice
        Assert.Throws<KmsException>(() => sealer.Open(sealedPem, "verifier_agents/b/revocation_key"));
        using (var other = new SecretSealer(RandomNumberGenerator.GetBytes(32), "other"))
            Assert.Throws<KmsException>(() => other.Open(sealedPem, "verifier_agents/a/revocation_key"));
        // Stored before sealing existed, or nothing to seal: returned as it is.
        Assert.Equal(pem, sealer.Open(pem, "verifier_agents/a/revocation_key"));
        Assert.Null(sealer.Seal(null, "x"));
        Assert.Equal("", sealer.Seal("", "x"));
        Assert.Throws<KmsException>(() => sealer.Open(SecretSealer.Prefix + "not base64!", "x"));
    }
}
