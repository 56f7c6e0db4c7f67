using System.Formats.Asn1;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using TpmProvisioning.Pki;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tpm;
using TpmProvisioning.Tpm.Simulator;

namespace TpmProvisioning.Tests.Provisioning;

/// <summary>
/// End to end on a real swtpm over HTTPS: our client on our TPM code, the same flow driven by tpm2-tools, and a credential
/// made for one TPM that another cannot activate.
/// </summary>
public sealed class ProvisioningEndToEndTests : IClassFixture<SwtpmFixture>, IAsyncLifetime
{
    private const uint ToolsEk = 0x81010100;
    private const uint ToolsAk = 0x81000B20;
    private readonly SwtpmFixture tpm;
    private TestServer s = null!;

    public ProvisioningEndToEndTests(SwtpmFixture fixture)
    {
        tpm = fixture;
        tpm.FlushTransients();
    }

    public async Task InitializeAsync()
    {
        var root = X509Certificate2.CreateFromPem(File.ReadAllText(tpm.Swtpm.ManufacturerRootPath));
        var issuer = X509Certificate2.CreateFromPem(File.ReadAllText(tpm.Swtpm.ManufacturerIssuerPath));
        s = await TestServer.StartAsync([(root, issuer)]);
    }

    public async Task DisposeAsync()
    {
        using (var dev = tpm.Open())
        {
            foreach (var h in dev.GetHandles(TpmHandle.HrPersistent).Where(h => h is >= 0x81000002 and <= 0x8100FFFF or ToolsEk))
                dev.EvictPersistent(h);
        }
        await s.DisposeAsync();
    }

    private static X509Chain ChainTo(X509Certificate2 ca)
    {
        var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(ca);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.VerificationFlags = X509VerificationFlags.IgnoreWrongUsage;
        return chain;
    }

    [Fact]
    public async Task OurClientProvisionsTheSwtpmOverHttps()
    {
        using var client = new ProvisioningClient(new ProvisioningClientOptions { Server = new Uri(s.Url), CaCertificate = s.ServerCa });
        using var dev = tpm.Open();
        var result = await client.ProvisionAsync(dev, new DeviceIdentity("door-controller", "DC-0001", "Contoso", "4.0.2"), s.Key.Key,
            new DeviceProvisioningOptions { TpmCaCertificate = s.TpmCa });

        Assert.Equal("DC-0001", result.Serial);
        Assert.Equal(new Uri(s.Url).GetLeftPart(UriPartial.Authority), result.Server);
        Assert.Equal(0x81000002u, result.AkHandle);
        var ak = dev.ReadPublic(result.AkHandle).Object;
        Assert.Equal(Convert.ToHexString(ak.Name), result.AkName);
        Assert.True(ak.Public.IsRestrictedSigningKey(out _));
        using (var chain = ChainTo(s.TpmCa)) Assert.True(chain.Build(result.AkCertificate));
        Assert.Equal(KeyIdentity.FromTpmPublic(ak.Public), KeyIdentity.FromSubjectPublicKeyInfo(result.AkCertificate.PublicKey.ExportSubjectPublicKeyInfo()));
        Assert.Equal(Convert.ToHexString(SHA256.HashData(dev.ReadEkCertificateDer(EkKind.Rsa2048)!)), result.EkThumbprint);
        Assert.Empty(dev.GetHandles(TpmHandle.HrTransient));

        var rec = Assert.Single(await s.Store.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery { Serial = "DC-0001" }));
        Assert.Equal(result.EkThumbprint, rec.EkFingerprint);
        Assert.Equal(result.AkCertificate.SerialNumber, rec.AkCertificateSerial);
        Assert.Equal(result.AkName, rec.AkName);

        // A second device on the same TPM (same EK) is another serial bound to a known EK: 409, and the client leaves the TPM as it was.
        var before = dev.GetHandles(TpmHandle.HrPersistent);
        var ex = await Assert.ThrowsAsync<ProvisioningRequestException>(() => client.ProvisionAsync(dev,
            new DeviceIdentity("door-controller", "DC-0002", "Contoso", "4.0.2"), s.Key.Key));
        Assert.Equal(HttpStatusCode.Conflict, ex.StatusCode);
        Assert.Equal("ek_cert: this EK is already bound to another device", ex.ServerMessage);
        Assert.Equal(before, dev.GetHandles(TpmHandle.HrPersistent));
        Assert.Empty(dev.GetHandles(TpmHandle.HrTransient));
    }

    [Fact]
    public async Task ARerunFindsThePersistedAkAndChangesNothingUnlessReplacing()
    {
        using var client = new ProvisioningClient(new ProvisioningClientOptions { Server = new Uri(s.Url), CaCertificate = s.ServerCa });
        using var dev = tpm.Open();
        var device = new DeviceIdentity("door-controller", "DC-RERUN", "Contoso", "1");
        var first = await client.ProvisionAsync(dev, device, s.Key.Key, new DeviceProvisioningOptions { TpmCaCertificate = s.TpmCa, ExistingAk = ExistingAkPolicy.Reuse });
        Assert.False(first.AlreadyProvisioned);
        var persisted = dev.GetHandles(TpmHandle.HrPersistent);

        // Again: the persisted AK is sent, the server returns its certificate, nothing is persisted, recorded or left loaded.
        var again = await client.ProvisionAsync(dev, device, s.Key.Key, new DeviceProvisioningOptions { TpmCaCertificate = s.TpmCa, ExistingAk = ExistingAkPolicy.Reuse });
        Assert.True(again.AlreadyProvisioned);
        Assert.Equal(first.AkHandle, again.AkHandle);
        Assert.Equal(first.AkName, again.AkName);
        Assert.Equal(first.AkCertificate.RawData, again.AkCertificate.RawData);
        Assert.Equal(persisted, dev.GetHandles(TpmHandle.HrPersistent));
        Assert.Empty(dev.GetHandles(TpmHandle.HrTransient));
        Assert.Equal(1, await s.Store.CountManufacturingRecordsAsync());

        // Replacing: a new AK at the old one's handle, a new certificate and record; still one AK.
        var replaced = await client.ProvisionAsync(dev, device, s.Key.Key, new DeviceProvisioningOptions { TpmCaCertificate = s.TpmCa, ExistingAk = ExistingAkPolicy.Replace });
        Assert.False(replaced.AlreadyProvisioned);
        Assert.Equal(first.AkHandle, replaced.AkHandle);
        Assert.NotEqual(first.AkName, replaced.AkName);
        Assert.Equal(persisted, dev.GetHandles(TpmHandle.HrPersistent));
        Assert.Equal(replaced.AkName, Convert.ToHexString(dev.ReadPublic(replaced.AkHandle).Object.Name));
        Assert.Empty(dev.GetHandles(TpmHandle.HrTransient));
        Assert.Equal(2, await s.Store.CountManufacturingRecordsAsync());
    }

    [Fact]
    public async Task TheNamespacedRouteAndAnEccAkSentAsSubjectPublicKeyInfo()
    {
        using var client = new ProvisioningClient(new ProvisioningClientOptions { Server = new Uri(s.Url), CaCertificate = s.ServerCa, Namespace = "default" });
        Assert.EndsWith("/api/v1/namespaces/default/api/tpm/tpm/provision", client.Endpoint.AbsoluteUri);
        using var dev = tpm.Open();
        var result = await client.ProvisionAsync(dev, new DeviceIdentity("door-controller", "DC-ECC", "Contoso", "1"), s.Key.Key,
            new DeviceProvisioningOptions { AkTemplate = TpmTemplates.AkEccP256, SendAkAsSubjectPublicKeyInfo = true, AkHandle = 0x81000B30, TpmCaCertificate = s.TpmCa });
        Assert.Equal(0x81000B30u, result.AkHandle);
        Assert.Equal("ECC", result.AkCertificate.PublicKey.Oid.FriendlyName);
    }

    [Fact]
    public async Task AClientThatDoesNotTrustTheServerCertificateStopsBeforeSendingAnything()
    {
        using var otherCa = ECDsa.Create();
        var req = new CertificateRequest("CN=Someone else", otherCa, HashAlgorithmName.SHA256);
        using var foreignCa = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        using var client = new ProvisioningClient(new ProvisioningClientOptions { Server = new Uri(s.Url), CaCertificate = foreignCa });
        using var dev = tpm.Open();
        await Assert.ThrowsAsync<HttpRequestException>(() => client.ProvisionAsync(dev, new DeviceIdentity("door-controller", "DC-T", "Contoso", "1"), s.Key.Key));
        Assert.Equal(0, await s.Store.CountManufacturingRecordsAsync());
        Assert.Empty(dev.GetHandles(TpmHandle.HrTransient));
    }

    [Fact]
    public async Task Tpm2ToolsActivatesOurCredentialBundleAndSoDoesOurTpmCode()
    {
        using var tmp = new TempDir();
        // Device side with tpm2-tools: EK and AK (persisted so separate tool runs can use them), EK certificate from NV.
        tpm.Tools("tpm2_createek", "-G", "rsa", "-c", "0x" + ToolsEk.ToString("x"), "-u", tmp["ek.pub"]);
        tpm.Tools("tpm2_createak", "-C", "0x" + ToolsEk.ToString("x"), "-c", tmp["ak.ctx"], "-G", "rsa", "-g", "sha256", "-s", "rsassa", "-u", tmp["ak.pub"], "-n", tmp["ak.name"]);
        tpm.Tools("tpm2_evictcontrol", "-C", "o", "-c", tmp["ak.ctx"], "0x" + ToolsAk.ToString("x"));
        tpm.Tools("tpm2_nvread", "-C", "o", "-o", tmp["ek.nv"], "0x01c00002");
        var nv = File.ReadAllBytes(tmp["ek.nv"]);
        AsnDecoder.ReadEncodedValue(nv, AsnEncodingRules.DER, out _, out _, out int certLength); // NV areas may be padded
        var ekCert = nv[..certLength];

        var ekPub = TpmPublic.ParseTpm2B(File.ReadAllBytes(tmp["ek.pub"]));
        var akPub2b = File.ReadAllBytes(tmp["ak.pub"]);
        var akPub = TpmPublic.ParseTpm2B(akPub2b);
        var identity = new DeviceIdentity("tools-device", "TOOLS-01", "Contoso", "1");

        // The CSR: our ASN.1, signed by the AK through tpm2_hash (ticket) and tpm2_sign.
        var info = AkCsr.BuildRequestInfo(akPub, identity);
        File.WriteAllBytes(tmp["csrinfo.bin"], info);
        tpm.Tools("tpm2_hash", "-C", "o", "-g", "sha256", "-t", tmp["ticket.bin"], "-o", tmp["digest.bin"], tmp["csrinfo.bin"]);
        tpm.Tools("tpm2_sign", "-c", "0x" + ToolsAk.ToString("x"), "-g", "sha256", "-s", "rsassa", "-d", "-t", tmp["ticket.bin"], "-o", tmp["sig.bin"], tmp["digest.bin"]);
        var csr = AkCsr.ToPem(AkCsr.Assemble(info, File.ReadAllBytes(tmp["sig.bin"])));

        // The request exactly in the spec's shape, with the spec's Authorization header beside it.
        var json = JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["ak_pub_key"] = Convert.ToBase64String(akPub2b),
            ["api_key"] = s.Key.Key,
            ["csr"] = csr,
            ["device"] = new Dictionary<string, string> { ["name"] = identity.Name, ["serial"] = identity.Serial, ["vendor"] = identity.Vendor, ["version"] = identity.Version },
            ["ek_cert"] = Convert.ToBase64String(ekCert),
            ["ek_pub_key"] = Convert.ToBase64String(ekPub.ToSubjectPublicKeyInfo()),
        });
        var (status, body, _) = await s.PostAsync(json, authorization: "APIToken console-token");
        Assert.True(status == HttpStatusCode.OK, body);
        var resp = JsonSerializer.Deserialize(body, ProvisioningJsonContext.Default.ProvisioningResponse)!;

        // tpm2_activatecredential reads credential_bundle as it is.
        File.WriteAllBytes(tmp["cred.out"], Convert.FromBase64String(resp.CredentialBundle));
        tpm.Tools("tpm2_startauthsession", "--policy-session", "-S", tmp["session.ctx"]);
        tpm.Tools("tpm2_policysecret", "-S", tmp["session.ctx"], "-c", "e");
        tpm.Tools("tpm2_activatecredential", "-c", "0x" + ToolsAk.ToString("x"), "-C", "0x" + ToolsEk.ToString("x"),
            "-i", tmp["cred.out"], "-o", tmp["secret.bin"], "-P", "session:" + tmp["session.ctx"]);
        tpm.Tools("tpm2_flushcontext", tmp["session.ctx"]);
        var secret = File.ReadAllBytes(tmp["secret.bin"]);
        Assert.Equal(32, secret.Length);

        // Our TPM code recovers the same secret from the same bundle.
        using (var dev = tpm.Open())
        {
            var blob = Credential.FromTpm2ToolsFile(Convert.FromBase64String(resp.CredentialBundle));
            Assert.Equal(secret, dev.ActivateCredential(ToolsEk, ToolsAk, blob));
        }

        var der = ProvisioningEnvelope.Open(secret, Convert.FromBase64String(resp.EncryptedAkCert), Convert.FromBase64String(resp.Nonce));
        using var cert = X509CertificateLoader.LoadCertificate(der);
        using (var chain = ChainTo(s.TpmCa)) Assert.True(chain.Build(cert));
        Assert.Equal(KeyIdentity.FromTpmPublic(akPub), KeyIdentity.FromSubjectPublicKeyInfo(cert.PublicKey.ExportSubjectPublicKeyInfo()));
        Assert.Equal(SHA256.HashData(ekCert), AkCertificateProfile.ReadEkCertificateSha256(cert));
        var rec = Assert.Single(await s.Store.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery()));
        Assert.Equal(Convert.ToHexString(File.ReadAllBytes(tmp["ak.name"])), rec.AkName); // the server's AK Name is tpm2-tools'
    }

    [Fact]
    public async Task ACredentialMadeForOneTpmCannotBeActivatedByAnother()
    {
        // TPM A is the fixture's; TPM B a freshly provisioned swtpm (its own seeds, hence its own EK).
        using var other = SwtpmInstance.Start(new SwtpmOptions { StateMode = SwtpmStateMode.Fresh });
        byte[] ekCertA;
        TpmPublic ekPubA;
        using (var devA = tpm.Open())
        {
            ekCertA = devA.ReadEkCertificateDer(EkKind.Rsa2048)!;
            var ek = devA.CreateEk(EkKind.Rsa2048);
            devA.FlushContext(ek.Handle);
            ekPubA = ek.Public;
        }

        using var devB = TpmDevice.Open(other.ConnectionString);
        var ekB = devB.CreateEk(EkKind.Rsa2048);
        var akB = devB.CreateAk().Key;
        try
        {
            Assert.NotEqual(ekPubA.Modulus, ekB.Public.Modulus);
            // B presents A's genuine EK certificate with its own AK: the server cannot tell, and answers.
            var identity = new DeviceIdentity("cloned-device", "CLONE-1", "Contoso", "1");
            var csr = AkCsr.Create(akB.Public, identity, m => devB.SignWithRestrictedKey(akB.Handle, m).Signature);
            var (status, body, _) = await s.PostAsync(new ProvisioningRequest
            {
                ApiKey = s.Key.Key,
                AkPubKey = Convert.ToBase64String(new TpmWriter().B2(akB.PublicBytes).ToArray()),
                Csr = AkCsr.ToPem(csr),
                EkCert = Convert.ToBase64String(ekCertA),
                EkPubKey = Convert.ToBase64String(ekPubA.ToSubjectPublicKeyInfo()),
                Device = new ProvisioningDevice { Name = identity.Name, Serial = identity.Serial, Vendor = identity.Vendor, Version = identity.Version },
            });
            Assert.Equal(HttpStatusCode.OK, status);
            var resp = JsonSerializer.Deserialize(body, ProvisioningJsonContext.Default.ProvisioningResponse)!;
            var blob = Credential.FromTpm2ToolsFile(Convert.FromBase64String(resp.CredentialBundle));
            // But only A's EK can open the seed, and A does not hold B's AK: the certificate stays sealed.
            var ex = Assert.Throws<TpmException>(() => devB.ActivateCredential(ekB.Handle, akB.Handle, blob));
            Assert.Equal(TpmCc.ActivateCredential, ex.Command);
        }
        finally
        {
            devB.FlushContext(akB.Handle);
            devB.FlushContext(ekB.Handle);
        }
    }
}
