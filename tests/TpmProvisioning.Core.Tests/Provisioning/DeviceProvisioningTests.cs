using System.Security.Cryptography.X509Certificates;
using TpmProvisioning.Pki;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Provisioning;

/// <summary>The device flow on a real swtpm against the real service (no HTTP): EK certificate from NV, TPM-made AK and CSR, ActivateCredential.</summary>
public sealed class DeviceProvisioningTests : IClassFixture<SwtpmFixture>, IAsyncLifetime
{
    private readonly SwtpmFixture tpm;
    private ProvisioningHarness h = null!;

    public DeviceProvisioningTests(SwtpmFixture fixture)
    {
        tpm = fixture;
        tpm.FlushTransients();
    }

    private EkTrustStore SwtpmTrust(bool withIntermediate = true) => new(
        [X509Certificate2.CreateFromPem(File.ReadAllText(tpm.Swtpm.ManufacturerRootPath))],
        withIntermediate ? [X509Certificate2.CreateFromPem(File.ReadAllText(tpm.Swtpm.ManufacturerIssuerPath))] : []);

    public async Task InitializeAsync()
    {
        h = await ProvisioningHarness.CreateAsync(trust: SwtpmTrust());
    }

    public async Task DisposeAsync()
    {
        EvictOurs();
        await h.DisposeAsync();
    }

    private void EvictOurs()
    {
        using var dev = tpm.Open();
        foreach (var handle in dev.GetHandles(TpmHandle.HrPersistent).Where(x => x is >= 0x81000002 and < 0x81010000))
            dev.EvictPersistent(handle);
    }

    private static DeviceIdentity Identity(string serial) => new("edge-gateway", serial, "Contoso", "3.1");

    [Theory]
    [InlineData(EkKind.Rsa2048, false, false)]
    [InlineData(EkKind.Rsa2048, true, true)]
    [InlineData(EkKind.EccP384High, false, true)]
    public async Task ProvisionsWithTheTpmAndPersistsTheAkOnlyAtTheEnd(EkKind ekKind, bool eccAk, bool akAsSpki)
    {
        using var dev = tpm.Open();
        var persistedBefore = dev.GetHandles(TpmHandle.HrPersistent);
        var options = new DeviceProvisioningOptions
        {
            EkKind = ekKind,
            AkTemplate = eccAk ? TpmTemplates.AkEccP256 : null,
            SendAkAsSubjectPublicKeyInfo = akAsSpki,
            TpmCaCertificate = h.Ca.Certificate,
        };
        var reporter = new ListReporter();
        using var session = DeviceProvisioning.Prepare(dev, Identity("GW-" + ekKind), options, reporter);
        Assert.Equal(0x81000002u, session.AkHandle); // first free handle above the SRK's
        Assert.Equal(persistedBefore, dev.GetHandles(TpmHandle.HrPersistent)); // nothing persisted yet

        var outcome = await h.Service.ProvisionAsync(session.BuildRequest(h.Key.Key));
        Assert.True(outcome.Succeeded, outcome.Error);
        using var cert = session.OpenResponse(outcome.Response!);
        Assert.Equal(outcome.AkCertificate!, cert.RawData);
        Assert.Equal(KeyIdentity.FromTpmPublic(session.Ak.Public), KeyIdentity.FromSubjectPublicKeyInfo(cert.PublicKey.ExportSubjectPublicKeyInfo()));
        Assert.Equal(session.EkThumbprint, outcome.Record!.EkFingerprint);
        Assert.Equal(Convert.ToHexString(session.Ak.Name), outcome.Record.AkName); // the server's Name is the TPM's

        uint handle = session.PersistAk();
        Assert.Equal(session.Ak.Name, dev.ReadPublic(handle).Object.Name);
        Assert.Contains(reporter.Lines, l => l.Contains("EK certificate"));
        Assert.Contains(reporter.Percents, p => p == 35);
        session.Dispose();
        Assert.Empty(dev.GetHandles(TpmHandle.HrTransient));
    }

    [Fact]
    public async Task TheSwtpmEkCertificateNeedsItsIntermediate()
    {
        await using var rootOnly = await ProvisioningHarness.CreateAsync(trust: SwtpmTrust(withIntermediate: false));
        using var dev = tpm.Open();
        using var session = DeviceProvisioning.Prepare(dev, Identity("GW-ROOTONLY"));
        var req = session.BuildRequest(rootOnly.Key.Key);
        Assert.True(req.EkCert!.Length > 1024); // a real RSA EK certificate: past the spec's 1024 characters
        var before = await rootOnly.SnapshotAsync();
        var o = await rootOnly.Service.ProvisionAsync(req);
        Assert.Equal(400, o.Status);
        Assert.Equal("ek_cert: does not chain to a trusted TPM manufacturer root", o.Error);
        Assert.Equal(before, await rootOnly.SnapshotAsync());
    }

    [Fact]
    public async Task AResponseForAnotherAkIsRefusedByTheTpmAndNothingIsPersisted()
    {
        using var dev = tpm.Open();
        var persistedBefore = dev.GetHandles(TpmHandle.HrPersistent);
        ProvisioningResponse foreign;
        using (var first = DeviceProvisioning.Prepare(dev, Identity("GW-A")))
        {
            var o = await h.Service.ProvisionAsync(first.BuildRequest(h.Key.Key));
            Assert.True(o.Succeeded, o.Error);
            foreign = o.Response!;
        }
        using var second = DeviceProvisioning.Prepare(dev, Identity("GW-A"));
        var ex = Assert.Throws<DeviceProvisioningException>(() => second.OpenResponse(foreign));
        Assert.Contains("refused to activate", ex.Message);
        Assert.IsType<TpmException>(ex.InnerException);
        second.Dispose();
        Assert.Empty(dev.GetHandles(TpmHandle.HrTransient));
        Assert.Equal(persistedBefore, dev.GetHandles(TpmHandle.HrPersistent));
    }

    [Fact]
    public void AnOccupiedExplicitHandleFailsBeforeAnythingIsCreated()
    {
        using var dev = tpm.Open();
        var ex = Assert.Throws<DeviceProvisioningException>(() => DeviceProvisioning.Prepare(dev, Identity("GW-X"),
            new DeviceProvisioningOptions { AkHandle = Tpm.Simulator.SwtpmInstance.PersistentRsaEk }));
        Assert.Contains("0x81010001 is in use", ex.Message);
        Assert.Empty(dev.GetHandles(TpmHandle.HrTransient));
        Assert.Throws<DeviceProvisioningException>(() => DeviceProvisioning.Prepare(dev, Identity("GW-X"), new DeviceProvisioningOptions { EkKind = EkKind.EccP256 }));
        Assert.Empty(dev.GetHandles(TpmHandle.HrTransient));
    }

    private sealed class ListReporter : IOperationReporter
    {
        public List<string> Lines { get; } = [];
        public List<int> Percents { get; } = [];
        public void Verbose(string message) => Lines.Add(message);
        public void Warning(string message) => Lines.Add("WARNING " + message);
        public void Progress(int percent, string status) { Percents.Add(percent); Lines.Add(status); }
    }
}
