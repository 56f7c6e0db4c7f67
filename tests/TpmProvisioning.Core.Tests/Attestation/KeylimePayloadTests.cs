using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using TpmProvisioning.Attestation;

namespace TpmProvisioning.Tests.Attestation;

/// <summary>
/// Keylime's bootstrap key and payload: byte-compatibility with Keylime's own crypto (vectors from pyca/cryptography, called
/// exactly as keylime/crypto.py calls it), and the agent's receiver: share matching, refusals, safe zip extraction.
/// </summary>
public sealed class KeylimePayloadTests : IDisposable
{
    // Computed with pyca/cryptography as keylime/crypto.py does: encrypt() with K = 00..1f, IV = 64..73 (the IV is random
    // in Keylime; fixed here), do_hmac(K, agent id), rsa_encrypt(NK, share = c8..e7) with OAEP(MGF1-SHA1, SHA1, no label).
    private const string PyEncrypted = "ZGVmZ2hpamtsbW5vcHFyc7PWOj2NeUL4wpjU5Si2iEVacKe5EC0o3S3qAzOhd+Srz9lj";
    private const string PyHmac = "7591c3fbfeed2961e39b19fb6052a8ec9a0a0b5161ff5cb2b58c75bb0bab64a9861e5c848affd9d843cc9a2d2809f0ee";
    private const string PyOaep = "FRUAcChLv/zxcpYzSUKcSz464ddYo4rI4jM7VcKAXMOhQ7S/IDQKYjKOo8VyJPyaS90MqxyaEpwXsp5Q9HaiWT45VKEFE9/Xp2X9V33PkfQsAyBN86GMdXnAS5TPM0II1+7tr4Fp2x7y+WOOgo5BYdloYNbQy3MzNGHaMv/HIGsew3ZlXODHGYtWjGBk5u1jTKgk/G37gEcJZpu9bDaSIdxBwjezLZZYm0+mIHTV+b1ib1IkoAaIToBXBzqHVvxxScoKgjxSFgUj5ajGaW3OnbwsNQP3e+aTWWzaXoe+lyGMshWJEMGtLLJg2gyF7nwPXf6J8oZuG3nFnXSfZ5g0gQ==";
    private const string PyNkPem = """
        -----BEGIN PRIVATE KEY-----
        MIIEvwIBADANBgkqhkiG9w0BAQEFAASCBKkwggSlAgEAAoIBAQDNjx2Wi+55Nn44
        AHEXT5yoBYIrRnXEZQKHniniM1Uetb3OUurtCNNwNrrcj40s+OUL7F/XV7WaEUHH
        pO86mXOnIYj3CNtQfshXdkzpi7uE1aDO8VYZ0XULehAlke0e6p6jTIorDECIHTum
        cS8lhz/iQjobLOeRp214skQVYXI0kKQtwD3NYpqSUgeIho/9GA2ylHZwV4VhUAul
        WHulADsX4o9gaA4WJxW7vk7fcC7FAXl5M4MfLaGMpD+bIdH6AcuAJW5pSf8fmFai
        pDnQ46yVJqluflEZUaDEtY1pM5Q/2ae1yAp8k6vrvy2ev9c7w9ALsIs6FcZLPdJc
        YFJ+76LtAgMBAAECggEAAkon0Dd6zorW2RTYLaRLYGu/SXAde7SMVKpkWQqtVgw8
        MwIlb8J7aHKTnkVTEz8qffmCD8oAUdkDXI/vwj1XVnM/LVFB8CGZZbABp1BRJGek
        xOlXRi5ZGWmgqGp5s7B1V+hQWa5nQZzhvzbfiZF6GrEWKJtVcP/mbkO+EmbleMRm
        jOrFf6H0RjtfBu51SFSkJWq3VCmbg+9Ew+U1uCi5sUAb3C5DSh56IzGwWMn7Ai3G
        KxTmj2i/t5CtibPWm/bsMfXhUh80N6qQ4rnKo/bhUN4A+5mjNXPNRvR0HKYj2HIH
        3PuewPDK34FM1UhuEnIwGcfFiD0jJPBp3Ks1XreDmQKBgQD9j88IyjfVFVVMF+yy
        MOfeCnd2kVjfyj5c++V3q42cMZdE3iDHIMyRBP7mfTD74M8LS40KI0jC78Xe5/LH
        E/54OsJnU2Gx/3NgmQj3tMpyLbt7zi9CiQ/HYARtJqPl8gn4z9gDcPLc5u7RQhPX
        84d0wy7cwuargQbYP3KMisReKwKBgQDPiSOPWO0VYQ6GuyB0UMYcswhl9oNRlhe/
        ybiWFKUr4ifVR1H7xyUf1Petpt3HhqPuOpn5OdtbWLKBh+rmfxNmmYZZJSdOOR50
        iFEiojpx5prsiaW+OaJh5SMTP6rcY5jePGMlAffYCEKQwqEAYLFLKbDqFA5bSgTm
        GFheLV8PRwKBgQDINllfs2zKkAG+B9YaDYvIQ7N4p+PpMSR0/2F9ULSMdIvhERQI
        p9lfWPZ8wLWA7U4OuSUwsBOv+Ovgyn1kvGDeRmdidvBZQD+2MqBmFxcTeRDk/TVL
        8DXJVAOqvCwGUUuWb2c9sF3UF3TTPr20ctKuW8ARCMRi/4qMDe1BFAFh6QKBgQCN
        KWmvmjwA27iGugd0NnDamogu2oMt3lqfEDVml/pVJAoWDuHb0PQWd8RUMHkPuywL
        4X5TwB/NPUKFyo5jY7ItimWQgy3+DeoCN6qAVTpNuR5Nn77F6evijHnUIO015OTY
        3NhPFsye+9dTIZ9jY2GUj3IPdb7iJzG31H1e6ZuMBwKBgQDeJh3aURPj2rNiP5DU
        TKcft+XjIjLHfzQhe6ywWDb5QdlmC6pzIdxk6BoFeJl+aN6TloKnWCbwiJ6rZPBL
        xTFajY8IuGUVl34+CIQb7Z4wfoyJGMMtHqcxkRbl3RlqR8mcMorsGb/cZuayZrZC
        AaNHCdh6rCF7K2z+qaFFEuMy0w==
        -----END PRIVATE KEY-----
        """;
    private const string AgentId = "D432FBB3-D2F1-4A97-9EF7-75BD81C00000";

    private static readonly byte[] K0 = Enumerable.Range(0, 32).Select(i => (byte)i).ToArray();
    private readonly string dir = Directory.CreateTempSubdirectory("tpmprov-payload-").FullName;
    private readonly RSA nk = RSA.Create(2048);

    public void Dispose()
    {
        nk.Dispose();
        try { Directory.Delete(dir, true); } catch (IOException) { }
    }

    [Fact]
    public void EncryptionHmacAndOaepMatchKeylimesCrypto()
    {
        var iv = Enumerable.Range(100, 16).Select(i => (byte)i).ToArray();
        var plain = Encoding.ASCII.GetBytes("keylime payload ").Concat(new byte[] { 0, 1, 0xff }).ToArray();
        Assert.Equal(PyEncrypted, KeylimePayload.Encrypt(plain, K0, iv));
        Assert.Equal(plain, KeylimePayload.Decrypt(PyEncrypted, K0));
        Assert.Equal(PyHmac, KeylimePayload.Hmac(K0, AgentId));
        using var py = RSA.Create();
        py.ImportFromPem(PyNkPem);
        Assert.Equal(Enumerable.Range(200, 32).Select(i => (byte)i).ToArray(), KeylimePayload.DecryptKeyShare(py, Convert.FromBase64String(PyOaep)));

        // A flipped bit anywhere (IV, ciphertext, tag) fails the GCM check.
        var bytes = Convert.FromBase64String(PyEncrypted);
        foreach (int at in new[] { 0, 16, bytes.Length - 1 })
        {
            var bad = (byte[])bytes.Clone();
            bad[at] ^= 1;
            Assert.Throws<CryptographicException>(() => KeylimePayload.Decrypt(bad, K0));
        }
        Assert.Throws<CryptographicException>(() => KeylimePayload.Decrypt(bytes, K0.Reverse().ToArray()));
    }

    [Fact]
    public void CreateSplitsKeyIntoSharesAndEncryptsThePayload()
    {
        var p = KeylimePayload.Create("hello"u8.ToArray());
        Assert.All(new[] { p.K, p.U, p.V }, b => Assert.Equal(32, b.Length));
        Assert.Equal(p.K, KeylimePayload.Combine(p.U, p.V));
        Assert.NotEqual(p.U, p.V);
        Assert.Equal("hello"u8.ToArray(), KeylimePayload.Decrypt(p.EncryptedPayload!, p.K));
        Assert.Equal(KeylimePayload.Hmac(p.K, AgentId), p.AuthTag(AgentId));
        Assert.Equal(96, p.AuthTag(AgentId).Length);
        Assert.Null(KeylimePayload.Create(null).EncryptedPayload);
        Assert.NotEqual(KeylimePayload.Create(null).K, KeylimePayload.Create(null).K);

        var pem = nk.ExportSubjectPublicKeyInfoPem();
        Assert.Equal(p.U, KeylimePayload.DecryptKeyShare(nk, Convert.FromBase64String(KeylimePayload.EncryptKeyShare(pem, p.U))));
        Assert.Throws<ArgumentException>(() => KeylimePayload.EncryptKeyShare("not a pem", p.U));
    }

    private AgentPayloadReceiver Receiver(bool runScript = false, string? host = null) =>
        new(nk, AgentId, Path.Combine(dir, "secure"), new AgentSettings { RunPayloadScript = runScript, PayloadScriptHost = host });

    private string Share(byte[] share) => KeylimePayload.EncryptKeyShare(nk.ExportSubjectPublicKeyInfoPem(), share);

    private byte[] UBody(KeylimePayload p, byte[]? u = null, string? authTag = null) => Encoding.UTF8.GetBytes(new JsonObject
    {
        ["encrypted_key"] = Share(u ?? p.U),
        ["auth_tag"] = authTag ?? p.AuthTag(AgentId),
        ["payload"] = p.EncryptedPayload,
    }.ToJsonString());

    private byte[] VBody(byte[] v) => Encoding.UTF8.GetBytes(new JsonObject { ["encrypted_key"] = Share(v) }.ToJsonString());

    private static byte[] Zip(params (string Name, string Content)[] entries)
    {
        using var ms = new MemoryStream();
        using (var z = new ZipArchive(ms, ZipArchiveMode.Create, true))
            foreach (var (name, content) in entries)
            {
                using var w = new StreamWriter(z.CreateEntry(name).Open());
                w.Write(content);
            }
        return ms.ToArray();
    }

    [Fact]
    public void UAndVGiveTheKeyAndTheZipPayloadIsExtractedPrivately()
    {
        var p = KeylimePayload.Create(Zip(("config/app.json", "{\"a\":1}"), ("autorun.ps1", "Set-Content ran.txt ran")));
        var r = Receiver();
        Assert.Equal(400, r.Verify("abc").Status);
        Assert.Equal(200, r.ReceiveU(UBody(p)).Status);
        Assert.False(r.HasKey);
        Assert.Equal(400, r.Verify("abc").Status);
        Assert.Equal(200, r.ReceiveV(VBody(p.V)).Status);
        Assert.True(r.HasKey);
        var v = r.Verify("abcXYZ123");
        Assert.Equal(200, v.Status);
        Assert.Equal(KeylimePayload.Hmac(p.K, "abcXYZ123"), v.Value!.Hmac);

        var d = r.LastDelivery!;
        Assert.True(d.Extracted);
        Assert.Null(d.Script); // scripts are off by default
        Assert.Equal("{\"a\":1}", File.ReadAllText(Path.Combine(d.Directory, "unzipped", "config", "app.json")));
        Assert.False(File.Exists(Path.Combine(d.Directory, "unzipped", "ran.txt")));
        if (!OperatingSystem.IsWindows())
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(d.Directory));
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(d.Directory, "unzipped", "autorun.ps1")));
        }
    }

    [Fact]
    public void VBeforeUAndAPlainPayloadWorkToo()
    {
        var p = KeylimePayload.Create("secret bytes"u8.ToArray());
        var r = Receiver();
        Assert.Equal(200, r.ReceiveV(VBody(p.V)).Status);
        Assert.Equal(200, r.ReceiveU(UBody(p)).Status);
        Assert.True(r.HasKey);
        Assert.Equal("secret bytes", File.ReadAllText(Path.Combine(r.SecureDirectory, AgentPayloadReceiver.DecryptedPayloadFile)));
    }

    [Fact]
    public void AWrongUOrVDerivesNothingAndADecoyDoesNotBlockTheRightPair()
    {
        var p = KeylimePayload.Create(null);
        var r = Receiver();
        // Wrong V: HMAC does not match, no key (Keylime answers 200 and keeps the shares).
        Assert.Equal(200, r.ReceiveU(UBody(p)).Status);
        Assert.Equal(200, r.ReceiveV(VBody(RandomNumberGenerator.GetBytes(32))).Status);
        Assert.False(r.HasKey);
        Assert.Equal(400, r.Verify("abc").Status);
        // Wrong U (with a tag for another K) beside it: still nothing.
        var other = KeylimePayload.Create(null);
        Assert.Equal(200, r.ReceiveU(UBody(other, u: other.U)).Status);
        Assert.False(r.HasKey);
        // The right V arrives: the right pair is found among the kept shares.
        Assert.Equal(200, r.ReceiveV(VBody(p.V)).Status);
        Assert.True(r.HasKey);
        Assert.Equal(KeylimePayload.Hmac(p.K, "abc"), r.Verify("abc").Value!.Hmac);

        // A U whose auth_tag was made for another agent id never matches.
        var r2 = Receiver();
        r2.ReceiveU(UBody(p, authTag: KeylimePayload.Hmac(p.K, "someone-else")));
        r2.ReceiveV(VBody(p.V));
        Assert.False(r2.HasKey);
    }

    [Fact]
    public void MalformedBodiesAre400AndChangeNothing()
    {
        var p = KeylimePayload.Create("x"u8.ToArray());
        var r = Receiver();
        string tag = p.AuthTag(AgentId);
        string[] bad =
        [
            "not json", "[]", "{}", "{\"encrypted_key\":5,\"auth_tag\":\"" + tag + "\"}",
            "{\"encrypted_key\":\"%%%\",\"auth_tag\":\"" + tag + "\"}",
            "{\"encrypted_key\":\"" + Convert.ToBase64String(new byte[256]) + "\",\"auth_tag\":\"" + tag + "\"}",
            "{\"encrypted_key\":\"" + Share(new byte[16]) + "\",\"auth_tag\":\"" + tag + "\"}",
            "{\"encrypted_key\":\"" + Share(p.U) + "\"}",
            "{\"encrypted_key\":\"" + Share(p.U) + "\",\"auth_tag\":\"zz" + tag[2..] + "\"}",
            "{\"encrypted_key\":\"" + Share(p.U) + "\",\"auth_tag\":\"" + tag[..90] + "\"}",
            "{\"encrypted_key\":\"" + Share(p.U) + "\",\"auth_tag\":\"" + tag + "\",\"payload\":\"***\"}",
            "{\"encrypted_key\":\"" + Share(p.U) + "\",\"auth_tag\":\"" + tag + "\",\"payload\":\"AAAA\"}",
        ];
        foreach (var b in bad)
        {
            var o = r.ReceiveU(Encoding.UTF8.GetBytes(b));
            Assert.True(o.Status == 400, b);
            Assert.False(string.IsNullOrEmpty(o.Message));
        }
        foreach (var b in new[] { "null", "{\"encrypted_key\":null}", "{\"encrypted_key\":\"" + Share(new byte[31]) + "\"}" })
            Assert.Equal(400, r.ReceiveV(Encoding.UTF8.GetBytes(b)).Status);
        // None of those was kept: the right V alone derives nothing.
        Assert.Equal(200, r.ReceiveV(VBody(p.V)).Status);
        Assert.False(r.HasKey);
        Assert.False(Directory.Exists(r.SecureDirectory));
        foreach (var c in new[] { null, "", "a b", "abc!", new string('a', 1025) }) Assert.Equal(400, r.Verify(c).Status);
    }

    [Theory]
    [InlineData("../evil.txt")]
    [InlineData("a/../../evil.txt")]
    [InlineData("/tmp/evil.txt")]
    [InlineData("..\\evil.txt")]
    public void ZipSlipIsRefusedAndNothingLandsOutside(string entry)
    {
        var p = KeylimePayload.Create(Zip(("fine.txt", "ok"), (entry, "pwned")));
        var r = Receiver();
        r.ReceiveU(UBody(p));
        var o = r.ReceiveV(VBody(p.V));
        Assert.Equal(400, o.Status);
        Assert.Contains("outside", o.Message);
        Assert.False(Directory.Exists(Path.Combine(r.SecureDirectory, AgentPayloadReceiver.UnzippedFolder)));
        Assert.False(File.Exists(Path.Combine(dir, "evil.txt")));
        Assert.False(File.Exists(Path.Combine(r.SecureDirectory, "evil.txt")));
        Assert.False(File.Exists("/tmp/evil.txt") && File.ReadAllText("/tmp/evil.txt") == "pwned");
        Assert.Empty(Directory.GetDirectories(r.SecureDirectory)); // the staging folder is gone
    }

    [Fact]
    public void ZipBombsSymlinksAndDuplicatesAreRefused()
    {
        using var bomb = new MemoryStream();
        using (var z = new ZipArchive(bomb, ZipArchiveMode.Create, true))
        {
            using var s = z.CreateEntry("zeros.bin", CompressionLevel.SmallestSize).Open();
            var chunk = new byte[1024 * 1024];
            for (int i = 0; i < 65; i++) s.Write(chunk);
        }
        Assert.Contains("more than", Deliver(bomb.ToArray()).Message);

        using var link = new MemoryStream();
        using (var z = new ZipArchive(link, ZipArchiveMode.Create, true))
        {
            var e = z.CreateEntry("link");
            e.ExternalAttributes = unchecked((int)(0xA1FFu << 16));
            using var w = new StreamWriter(e.Open());
            w.Write("/etc/passwd");
        }
        Assert.Contains("symbolic link", Deliver(link.ToArray()).Message);
        Assert.Contains("twice", Deliver(Zip(("a.txt", "1"), ("a.txt", "2"))).Message);
        Assert.Contains("entries", Deliver(Zip(Enumerable.Range(0, AgentPayloadReceiver.MaxZipEntries + 1).Select(i => ($"f{i}", "")).ToArray())).Message);
    }

    private AttestationOutcome<EmptyResults> Deliver(byte[] payload)
    {
        var p = KeylimePayload.Create(payload);
        var r = Receiver();
        r.ReceiveU(UBody(p));
        var o = r.ReceiveV(VBody(p.V));
        Assert.Equal(400, o.Status);
        Assert.False(Directory.Exists(Path.Combine(r.SecureDirectory, AgentPayloadReceiver.UnzippedFolder)));
        return o;
    }

    [Fact]
    public async Task AnEnabledScriptWithAMissingHostFailsWithoutFailingTheDelivery()
    {
        var p = KeylimePayload.Create(Zip(("autorun.ps1", "exit 3")));
        var r = Receiver(runScript: true, host: Path.Combine(dir, "no-such-pwsh"));
        r.ReceiveU(UBody(p));
        Assert.Equal(200, r.ReceiveV(VBody(p.V)).Status);
        Assert.NotNull(r.LastDelivery!.Script);
        Assert.Equal(-1, await r.LastDelivery.Script!);
    }
}
