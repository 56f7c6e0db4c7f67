using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using TpmProvisioning.Pki;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Provisioning;

/// <summary>The provisioning service with software EKs and AKs: every check, every status, and no stored change on rejection.</summary>
public sealed class ProvisioningServiceTests : IAsyncLifetime
{
    private ProvisioningHarness h = null!;

    public async Task InitializeAsync() => h = await ProvisioningHarness.CreateAsync();
    public async Task DisposeAsync() => await h.DisposeAsync();

    private static X509Chain ChainTo(X509Certificate2 root)
    {
        var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(root);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.VerificationFlags = X509VerificationFlags.IgnoreWrongUsage;
        return chain;
    }

    /// <summary>Runs a request that must be refused and asserts its status, message and that nothing stored changed.</summary>
    private async Task<ProvisioningOutcome> AssertRejected(ProvisioningRequest request, int status, string message, ProvisioningCallInfo? call = null)
    {
        var before = await h.SnapshotAsync();
        var outcome = await h.Service.ProvisionAsync(request, call);
        Assert.Equal(status, outcome.Status);
        Assert.False(outcome.Succeeded);
        Assert.Null(outcome.Response);
        Assert.Contains(message, outcome.Error);
        Assert.Equal(before, await h.SnapshotAsync());
        var audit = (await h.Store.QueryAuditAsync(new AuditQuery { Action = ProvisioningService.AuditAction, Limit = 1 })).Single();
        Assert.Contains(status.ToString(), audit.Detail);
        return outcome;
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public async Task ProvisionsADeviceWhoseEkAloneOpensTheCertificate(bool akAsSpki, bool eccAk)
    {
        using var dev = h.NewDevice(eccAk: eccAk);
        var outcome = await h.Service.ProvisionAsync(dev.Request(h.Key.Key, akAsSpki), new ProvisioningCallInfo { Source = "10.0.0.7" });
        Assert.True(outcome.Succeeded, outcome.Error);

        // The bundle is a tpm2-tools credential file; the sealed certificate is ciphertext || 16-byte tag.
        var bundle = Convert.FromBase64String(outcome.Response!.CredentialBundle);
        Assert.Equal(0xBADCC0DEu, System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(bundle));
        Assert.Equal(12, Convert.FromBase64String(outcome.Response.Nonce).Length);
        Assert.Equal(outcome.AkCertificate!.Length + 16, Convert.FromBase64String(outcome.Response.EncryptedAkCert).Length);

        using var cert = dev.Open(outcome.Response);
        Assert.Equal(outcome.AkCertificate, cert.RawData);
        using (var chain = ChainTo(h.Ca.Certificate)) Assert.True(chain.Build(cert), string.Join(",", chain.ChainStatus.Select(s => s.Status)));
        Assert.Equal(KeyIdentity.FromTpmPublic(dev.Ak.Public), KeyIdentity.FromSubjectPublicKeyInfo(cert.PublicKey.ExportSubjectPublicKeyInfo()));
        Assert.Equal("CN=sensor-01, SERIALNUMBER=SN-0001, O=Contoso", cert.Subject);
        Assert.Equal("SN-0001", AkCertificateProfile.ReadSubjectSerial(cert));
        Assert.Equal(SHA256.HashData(dev.EkCertificate), AkCertificateProfile.ReadEkCertificateSha256(cert));
        Assert.Equal("1.0", AkCertificateProfile.ReadDeviceVersion(cert));

        // The record, and an audit entry naming the key id but never the key.
        var rec = Assert.Single(await h.Store.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery()));
        Assert.Equal(("SN-0001", "Contoso", "sensor-01", "1.0"), (rec.Serial, rec.Vendor, rec.DeviceName, rec.DeviceVersion));
        Assert.Equal(dev.EkFingerprint, rec.EkFingerprint);
        Assert.Equal(cert.SerialNumber, rec.AkCertificateSerial);
        Assert.Equal(Convert.ToHexString(dev.Ak.Name), rec.AkName);
        Assert.Equal(cert.RawData, rec.AkCertificate);
        Assert.Equal(h.Key.Info.KeyId, rec.ApiKeyId);
        var audit = (await h.Store.QueryAuditAsync(new AuditQuery { Action = ProvisioningService.AuditAction })).Single();
        Assert.Equal(AuditOutcome.Success, audit.Outcome);
        Assert.Equal(h.Key.Info.KeyId, audit.Actor);
        Assert.Equal("10.0.0.7", audit.Source);
        Assert.Equal("Contoso/SN-0001", audit.Target);
        Assert.DoesNotContain(h.Key.Key, audit.Detail);
    }

    [Fact]
    public async Task AnotherEkCannotOpenTheCertificate()
    {
        using var dev = h.NewDevice();
        using var other = h.NewDevice("SN-0002");
        var outcome = await h.Service.ProvisionAsync(dev.Request(h.Key.Key));
        Assert.True(outcome.Succeeded, outcome.Error);
        var blob = Credential.FromTpm2ToolsFile(Convert.FromBase64String(outcome.Response!.CredentialBundle));
        Assert.ThrowsAny<Exception>(() => Credential.ActivateWithSoftwareEk(other.EkPublic, other.EkKey, dev.Ak.Name, blob.IdObject, blob.EncryptedSecret));
        // The right EK with another AK's Name fails the integrity check too.
        Assert.ThrowsAny<CryptographicException>(() => Credential.ActivateWithSoftwareEk(dev.EkPublic, dev.EkKey, other.Ak.Name, blob.IdObject, blob.EncryptedSecret));
        // A tampered ciphertext fails GCM's tag.
        var secret = Credential.ActivateWithSoftwareEk(dev.EkPublic, dev.EkKey, dev.Ak.Name, blob.IdObject, blob.EncryptedSecret);
        var sealedCert = Convert.FromBase64String(outcome.Response.EncryptedAkCert);
        sealedCert[10] ^= 1;
        Assert.ThrowsAny<CryptographicException>(() => ProvisioningEnvelope.Open(secret, sealedCert, Convert.FromBase64String(outcome.Response.Nonce)));
    }

    [Fact]
    public async Task TheSameDeviceEkAndAkAgainReturnTheSameCertificateAndWriteNothing()
    {
        using var dev = h.NewDevice();
        var first = await h.Service.ProvisionAsync(dev.Request(h.Key.Key));
        Assert.True(first.Succeeded, first.Error);
        Assert.False(first.AlreadyProvisioned);
        var before = await h.SnapshotAsync();

        var again = await h.Service.ProvisionAsync(dev.Request(h.Key.Key));
        Assert.True(again.Succeeded, again.Error);
        Assert.True(again.AlreadyProvisioned);
        // The same certificate, sealed afresh for the same AK under the same EK; no record, binding or key changed.
        using (var cert = dev.Open(again.Response!)) Assert.Equal(first.AkCertificate, cert.RawData);
        Assert.NotEqual(first.Response!.CredentialBundle, again.Response!.CredentialBundle);
        Assert.Equal(before, await h.SnapshotAsync());
        Assert.Equal(1, await h.Store.CountManufacturingRecordsAsync());
        var audit = await h.Store.QueryAuditAsync(new AuditQuery { Action = ProvisioningService.AuditAction, Limit = 1 });
        Assert.Contains("already provisioned", audit[0].Detail);
    }

    [Fact]
    public async Task TheSameDeviceWithTheSameEkAndANewAkIsProvisionedAgain()
    {
        using var dev = h.NewDevice();
        var first = await h.Service.ProvisionAsync(dev.Request(h.Key.Key));
        Assert.True(first.Succeeded, first.Error);
        var oldAk = dev.Ak;
        dev.Ak = SoftwareAttestationKey.CreateRsa();
        try
        {
            var again = await h.Service.ProvisionAsync(dev.Request(h.Key.Key));
            Assert.True(again.Succeeded, again.Error);
            Assert.False(again.AlreadyProvisioned);
            Assert.NotEqual(first.AkCertificate, again.AkCertificate);
            Assert.Equal(2, await h.Store.CountManufacturingRecordsAsync());
            var audit = await h.Store.QueryAuditAsync(new AuditQuery { Action = ProvisioningService.AuditAction, Limit = 1 });
            Assert.Contains("reprovisioned", audit[0].Detail);
        }
        finally { oldAk.Dispose(); }
    }

    [Fact]
    public async Task ASecondEkForAKnownSerialIsAConflict()
    {
        using var first = h.NewDevice();
        Assert.True((await h.Service.ProvisionAsync(first.Request(h.Key.Key))).Succeeded);
        using var impostor = h.NewDevice(); // same serial, another TPM
        await AssertRejected(impostor.Request(h.Key.Key), 409, "device.serial: 'SN-0001' of vendor 'Contoso' is already bound to another EK");
    }

    [Fact]
    public async Task AnEkAlreadyBoundToAnotherSerialIsAConflict()
    {
        using var dev = h.NewDevice();
        Assert.True((await h.Service.ProvisionAsync(dev.Request(h.Key.Key))).Succeeded);
        var req = dev.Request(h.Key.Key);
        req.Device!.Serial = "SN-9999";
        await AssertRejected(req, 409, "ek_cert: this EK is already bound to another device");
    }

    [Fact]
    public async Task AnEkCertificateFromAnUntrustedCaIsRefused()
    {
        using var rogue = new TestManufacturer("Rogue Fab");
        using var dev = h.NewDevice();
        dev.EkCertificate = rogue.IssueEkCertificate(dev.EkKey.ExportSubjectPublicKeyInfo());
        await AssertRejected(dev.Request(h.Key.Key), 400, "ek_cert: does not chain to a trusted TPM manufacturer root");
    }

    [Fact]
    public async Task AnExpiredEkCertificateIsRefused()
    {
        using var dev = h.NewDevice();
        dev.EkCertificate = h.Manufacturer.IssueEkCertificate(dev.EkKey.ExportSubjectPublicKeyInfo(), DateTimeOffset.UtcNow.AddHours(-1));
        await AssertRejected(dev.Request(h.Key.Key), 400, "ek_cert: it or a certificate in its chain is outside its validity period");
    }

    [Fact]
    public async Task AnEkPublicKeyThatIsNotTheCertificatesIsRefused()
    {
        using var dev = h.NewDevice();
        using var otherEk = RSA.Create(2048);
        var req = dev.Request(h.Key.Key);
        req.EkPubKey = Convert.ToBase64String(otherEk.ExportSubjectPublicKeyInfo());
        await AssertRejected(req, 400, "ek_pub_key: does not match the EK certificate's public key");
    }

    [Fact]
    public async Task EkPublicKeyAsTpm2bPublicIsAcceptedWhenItIsTheCertificatesKey()
    {
        using var dev = h.NewDevice();
        var req = dev.Request(h.Key.Key);
        req.EkPubKey = Convert.ToBase64String(dev.EkPublic.ToTpm2B());
        var outcome = await h.Service.ProvisionAsync(req);
        Assert.True(outcome.Succeeded, outcome.Error);
        using var _ = dev.Open(outcome.Response!);
    }

    [Fact]
    public async Task ACsrSignedByAnotherKeyIsRefused()
    {
        using var dev = h.NewDevice();
        using var stranger = SoftwareAttestationKey.CreateRsa();
        var req = dev.Request(h.Key.Key);
        req.Csr = AkCsr.ToPem(AkCsr.Create(stranger.Public, dev.Identity, m => stranger.Sign(m)));
        await AssertRejected(req, 400, "csr: its public key is not the AK (ak_pub_key)");
    }

    [Fact]
    public async Task ACsrWithABadSignatureIsRefused()
    {
        using var dev = h.NewDevice();
        var der = AkCsr.Create(dev.Ak.Public, dev.Identity, m => dev.Ak.Sign(m));
        der[^5] ^= 0x40; // inside the signature value
        var req = dev.Request(h.Key.Key);
        req.Csr = Convert.ToBase64String(der); // base64 DER form
        await AssertRejected(req, 400, "csr: signature does not verify");
    }

    [Theory]
    [InlineData(TpmaObject.Restricted, "restricted missing")]
    [InlineData(TpmaObject.FixedTpm, "fixedTPM missing")]
    [InlineData(TpmaObject.FixedParent, "fixedParent missing")]
    [InlineData(TpmaObject.SensitiveDataOrigin, "sensitiveDataOrigin missing")]
    public async Task AnAkWithoutTheAttestationAttributesIsRefused(TpmaObject cleared, string problem)
    {
        using var dev = h.NewDevice();
        var weak = dev.Ak.Public.Clone();
        weak.Attributes &= ~cleared;
        var req = dev.Request(h.Key.Key);
        req.AkPubKey = Convert.ToBase64String(weak.ToTpm2B());
        var o = await AssertRejected(req, 400, "ak_pub_key: not a restricted signing key fit for attestation");
        Assert.Contains(problem, o.Error);
    }

    [Fact]
    public async Task AnAkWithASymmetricCipherIsRefusedAndNoCertificateIsIssued()
    {
        using var dev = h.NewDevice();
        var forged = dev.Ak.Public.Clone();
        forged.Symmetric = TpmSymmetricDef.Aes128Cfb;
        var req = dev.Request(h.Key.Key);
        req.AkPubKey = Convert.ToBase64String(forged.ToTpm2B());
        var o = await AssertRejected(req, 400, "ak_pub_key: not a restricted signing key fit for attestation");
        Assert.Contains("symmetric must be TPM_ALG_NULL", o.Error);
    }

    [Theory]
    [InlineData("name", "senso", "device.name: must be at least 6 characters")]
    [InlineData("name", null, "device.name: required")]
    [InlineData("version", "", "device.version: must not be empty")]
    [InlineData("serial", "", "device.serial: must not be empty")]
    [InlineData("vendor", null, "device.vendor: required")]
    [InlineData("serial", "SN\n1", "device.serial: must not contain control characters")]
    [InlineData("name", "      ", "device.name: must not be blank")]
    [InlineData("name", "LONG", "device.name: must be at most 1024 characters")]
    public async Task DeviceFieldLimitsAreTheSpecs(string field, string? value, string message)
    {
        using var dev = h.NewDevice();
        var req = dev.Request(h.Key.Key);
        if (value == "LONG") value = new string('x', 1025);
        switch (field)
        {
            case "name": req.Device!.Name = value; break;
            case "version": req.Device!.Version = value; break;
            case "serial": req.Device!.Serial = value; break;
            case "vendor": req.Device!.Vendor = value; break;
        }
        await AssertRejected(req, 400, message);
    }

    [Fact]
    public async Task LimitsAtTheEdgesAreAccepted()
    {
        var h2 = h;
        await h2.Service.ApiKeys.UpdateAsync(h2.Key.Info.KeyId, vendors: ["*"]);
        using var dev = new SoftwareDevice(h2.Manufacturer, new DeviceIdentity("sixchr", new string('S', 1024), new string('V', 1024), "1"));
        var outcome = await h2.Service.ProvisionAsync(dev.Request(h2.Key.Key));
        Assert.True(outcome.Succeeded, outcome.Error);
    }

    [Theory]
    [InlineData("ek_cert", "not base64!", "ek_cert: not valid base64")]
    [InlineData("ek_cert", "AAECAwQ=", "ek_cert: not DER")]
    [InlineData("ek_cert", "MAMCAQE=", "ek_cert: not a DER X.509 certificate")]
    [InlineData("ek_pub_key", "%%%", "ek_pub_key: not valid base64")]
    [InlineData("ek_pub_key", "MAMCAQE=", "ek_pub_key: not a DER SubjectPublicKeyInfo")]
    [InlineData("ak_pub_key", "AAQAAQAL", "ak_pub_key: neither a DER SubjectPublicKeyInfo nor a TPM2B_PUBLIC")]
    [InlineData("ak_pub_key", "MAMCAQE=", "ak_pub_key: not a DER SubjectPublicKeyInfo")]
    [InlineData("csr", "MAMCAQE=", "csr: not a DER PKCS#10 request")]
    [InlineData("csr", "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----", "csr: PEM without a CERTIFICATE REQUEST block")]
    [InlineData("ek_cert", "", "ek_cert: must not be empty")]
    [InlineData("csr", null, "csr: required")]
    public async Task MalformedEncodingsNameTheirField(string field, string? value, string message)
    {
        using var dev = h.NewDevice();
        var req = dev.Request(h.Key.Key);
        switch (field)
        {
            case "ek_cert": req.EkCert = value; break;
            case "ek_pub_key": req.EkPubKey = value; break;
            case "ak_pub_key": req.AkPubKey = value; break;
            case "csr": req.Csr = value; break;
        }
        await AssertRejected(req, 400, message);
    }

    [Fact]
    public async Task EncodedFieldsMayBeLongerThanTheSpecs1024ButNotThan16KiB()
    {
        using var dev = h.NewDevice();
        var req = dev.Request(h.Key.Key);
        req.EkCert = Convert.ToBase64String(new byte[12 * 1024 + 3]);
        await AssertRejected(req, 400, "ek_cert: must be at most 16384 characters");
    }

    [Fact]
    public async Task AnAkPublicKeyOfAnUnsupportedTypeAsSpkiIsRefused()
    {
        using var dev = h.NewDevice();
        using var rsa3072 = RSA.Create(3072);
        var req = dev.Request(h.Key.Key);
        req.AkPubKey = Convert.ToBase64String(rsa3072.ExportSubjectPublicKeyInfo());
        await AssertRejected(req, 400, "ak_pub_key: unsupported AK key RSA-3072");
    }

    [Fact]
    public async Task MissingUnknownAndMalformedKeysAre401()
    {
        using var dev = h.NewDevice();
        var req = dev.Request("");
        await AssertRejected(req, 401, "api_key: missing");
        req.ApiKey = "tpk_0000000000000000_" + new string('A', 43);
        await AssertRejected(req, 401, "api_key: not a valid API key");
        req.ApiKey = "hunter2";
        await AssertRejected(req, 401, "api_key: not a valid API key");
        // The right id with a wrong secret.
        req.ApiKey = h.Key.Key[..^1] + (h.Key.Key[^1] == 'A' ? 'B' : 'A');
        await AssertRejected(req, 401, "api_key: not a valid API key");
        var audits = await h.Store.QueryAuditAsync(new AuditQuery { Action = ProvisioningService.AuditAction });
        Assert.All(audits, a => Assert.Equal(AuditOutcome.Denied, a.Outcome));
        Assert.All(audits, a => Assert.Equal("-", a.Actor));
    }

    [Fact]
    public async Task ADisabledKeyIs403AndEnablingItAgainWorks()
    {
        using var dev = h.NewDevice();
        Assert.True(await h.Service.ApiKeys.SetEnabledAsync(h.Key.Info.KeyId, false));
        var o = await AssertRejected(dev.Request(h.Key.Key), 403, "api_key: this API key is disabled");
        Assert.Equal(h.Key.Info.KeyId, o.ApiKeyId);
        Assert.True(await h.Service.ApiKeys.SetEnabledAsync(h.Key.Info.KeyId, true));
        Assert.True((await h.Service.ProvisionAsync(dev.Request(h.Key.Key))).Succeeded);
    }

    [Fact]
    public async Task AVendorOutsideTheKeysScopeIs403()
    {
        using var dev = new SoftwareDevice(h.Manufacturer, new DeviceIdentity("sensor-01", "SN-1", "Fabrikam", "1"));
        await AssertRejected(dev.Request(h.Key.Key), 403, "device.vendor: this API key may not provision devices of vendor 'Fabrikam'");
        // Scope matching ignores case.
        using var dev2 = new SoftwareDevice(h.Manufacturer, new DeviceIdentity("sensor-01", "SN-2", "CONTOSO", "1"));
        Assert.True((await h.Service.ProvisionAsync(dev2.Request(h.Key.Key))).Succeeded);
    }

    [Fact]
    public async Task TheAuthorizationHeaderCarriesTheKeyWhenTheBodyHasNone()
    {
        using var dev = h.NewDevice();
        var req = dev.Request(h.Key.Key);
        req.ApiKey = null;
        foreach (var (header, serial) in new[] { ($"Bearer {h.Key.Key}", "SN-A"), ($"APIToken {h.Key.Key}", "SN-B"), (h.Key.Key, "SN-C") })
        {
            using var d = h.NewDevice(serial);
            var r = d.Request(h.Key.Key);
            r.ApiKey = null;
            var o = await h.Service.ProvisionAsync(r, new ProvisioningCallInfo { Authorization = header });
            Assert.True(o.Succeeded, header.Split(' ')[0] + ": " + o.Error);
        }
        // The body's key wins: a console token in the header does not get in the way.
        var both = dev.Request(h.Key.Key);
        Assert.True((await h.Service.ProvisionAsync(both, new ProvisioningCallInfo { Authorization = "APIToken some-console-token" })).Succeeded);
        // And a wrong body key is not rescued by a right header.
        var wrong = dev.Request("tpk_0000000000000000_" + new string('A', 43));
        await AssertRejected(wrong, 401, "api_key: not a valid API key", new ProvisioningCallInfo { Authorization = "Bearer " + h.Key.Key });
    }

    [Fact]
    public async Task TheRateLimitIsPerKeyWithRetryAfter()
    {
        var time = new ManualTime();
        await using var h2 = await ProvisioningHarness.CreateAsync();
        var svc = new ProvisioningService(h2.Store, h2.Ca, new EkTrustStore([h2.Manufacturer.Root], [h2.Manufacturer.Issuer]), null, new ApiKeyRateLimiter(time));
        var limited = await svc.ApiKeys.CreateAsync("slow", null, ratePerMinute: 2);
        using var d1 = h2.NewDevice("R1");
        using var d2 = h2.NewDevice("R2");
        using var d3 = h2.NewDevice("R3");
        Assert.True((await svc.ProvisionAsync(d1.Request(limited.Key))).Succeeded);
        Assert.True((await svc.ProvisionAsync(d2.Request(limited.Key))).Succeeded);
        var before = await h2.SnapshotAsync();
        var refused = await svc.ProvisionAsync(d3.Request(limited.Key));
        Assert.Equal(429, refused.Status);
        Assert.Equal(30, refused.RetryAfterSeconds); // 2 per minute: one token every 30 s
        Assert.Contains("rate limit of 2 requests per minute", refused.Error);
        Assert.Equal(before, await h2.SnapshotAsync());
        // Another key is not affected.
        Assert.True((await svc.ProvisionAsync(d3.Request(h2.Key.Key))).Succeeded);
        time.Advance(TimeSpan.FromSeconds(29));
        using var d4 = h2.NewDevice("R4");
        Assert.Equal(429, (await svc.ProvisionAsync(d4.Request(limited.Key))).Status);
        time.Advance(TimeSpan.FromSeconds(2));
        Assert.True((await svc.ProvisionAsync(d4.Request(limited.Key))).Succeeded);
    }

    [Fact]
    public async Task AHungSignerIs504AndNothingIsRecorded()
    {
        var dir = Path.Combine(h.Dir, "slow-ca");
        using (TpmCa.Create(dir)) { }
        var hung = TpmCa.Load(dir, new HangingSigner(FileCertificateSigner.Load(Path.Combine(dir, TpmCa.KeyFileName))));
        await using var h2 = await ProvisioningHarness.CreateAsync(settings: new ProvisioningSettings { SignerTimeout = TimeSpan.FromMilliseconds(200) }, ca: hung);
        using var dev = h2.NewDevice();
        var before = await h2.SnapshotAsync();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var o = await h2.Service.ProvisionAsync(dev.Request(h2.Key.Key));
        Assert.Equal(504, o.Status);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5));
        Assert.Contains("signer", o.Error);
        Assert.Equal(before, await h2.SnapshotAsync());
    }

    [Fact]
    public async Task AStoreThatIsDownIs503WithRetryAfter()
    {
        await using var h2 = await ProvisioningHarness.CreateAsync(s => FaultyStore.Wrap(s, m => m == nameof(IStore.CheckDeviceBindingAsync) ? new StoreUnavailableException("disk gone") : null));
        using var dev = h2.NewDevice();
        var o = await h2.Service.ProvisionAsync(dev.Request(h2.Key.Key));
        Assert.Equal(503, o.Status);
        Assert.Equal(5, o.RetryAfterSeconds);
        Assert.DoesNotContain("disk gone", o.Error);
        Assert.Equal(0, await h2.Store.CountManufacturingRecordsAsync());
    }

    [Fact]
    public async Task AnUnexpectedFailureIs500WithACorrelationIdAndNoInternals()
    {
        await using var h2 = await ProvisioningHarness.CreateAsync(s => FaultyStore.Wrap(s, m => m == nameof(IStore.AddManufacturingRecordAsync) ? new InvalidOperationException("secret internals at /srv/db") : null));
        using var dev = h2.NewDevice();
        var o = await h2.Service.ProvisionAsync(dev.Request(h2.Key.Key), new ProvisioningCallInfo { CorrelationId = "corr-42" });
        Assert.Equal(500, o.Status);
        Assert.Equal("internal error; correlation id corr-42", o.Error);
        Assert.IsType<InvalidOperationException>(o.Fault);
        var audit = (await h2.Store.QueryAuditAsync(new AuditQuery { Action = ProvisioningService.AuditAction })).Single();
        Assert.Equal(AuditOutcome.Failed, audit.Outcome);
        Assert.Contains("corr-42", audit.Detail);
        Assert.DoesNotContain("/srv/db", audit.Detail);
    }

    [Fact]
    public async Task ConcurrentRequestsForOneSerialWithDifferentEksBindExactlyOne()
    {
        var devices = Enumerable.Range(0, 6).Select(_ => h.NewDevice("RACE-1")).ToList();
        try
        {
            var outcomes = await Task.WhenAll(devices.Select(d => Task.Run(() => h.Service.ProvisionAsync(d.Request(h.Key.Key)))));
            Assert.Single(outcomes, o => o.Succeeded);
            Assert.All(outcomes.Where(o => !o.Succeeded), o => Assert.Equal(409, o.Status));
            Assert.Equal(1, await h.Store.CountManufacturingRecordsAsync());
        }
        finally
        {
            foreach (var d in devices) d.Dispose();
        }
    }

    [Fact]
    public async Task ANullRequestIs400()
    {
        var o = await h.Service.ProvisionAsync(null);
        Assert.Equal(400, o.Status);
        Assert.Equal("body: a JSON object is required", o.Error);
    }
}
