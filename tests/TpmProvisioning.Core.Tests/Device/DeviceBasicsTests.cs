using System.Security.Cryptography;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tpm;
using TpmProvisioning.Tpm.Simulator;

namespace TpmProvisioning.Tests.Device;

public class DeviceBasicsTests(SwtpmFixture tpm) : IClassFixture<SwtpmFixture>
{
    [Fact]
    public void GetInfoReportsSwtpmIdentityBanksAndPersistentEks()
    {
        using var dev = tpm.Open();
        var info = dev.GetInfo();
        Assert.Equal("IBM", info.Manufacturer);
        Assert.Equal(0x49424D00u, info.ManufacturerId);
        Assert.Equal("2.0", info.Family);
        Assert.Equal(24, info.PcrCount);
        Assert.Contains(TpmAlgId.Sha256, info.ActivePcrBanks);
        Assert.Contains(SwtpmInstance.PersistentRsaEk, info.PersistentHandles);
        Assert.Contains(SwtpmInstance.PersistentEccEk, info.PersistentHandles);
        Assert.Contains(TpmHandle.NvEkCertRsa2048, info.NvIndices);
        Assert.Contains(TpmHandle.NvEkCertHighEccP384, info.NvIndices);
        Assert.True(info.MaxNvBuffer >= 512);
        Assert.NotEqual(0ul, info.FirmwareVersion);
    }

    [Fact]
    public void StartupIsIdempotent()
    {
        using var dev = tpm.Open();
        dev.Startup();
        dev.Startup();
    }

    [Fact]
    public void GetRandomReturnsRequestedLengthAcrossCalls()
    {
        using var dev = tpm.Open();
        var a = dev.GetRandom(200);
        var b = dev.GetRandom(200);
        Assert.Equal(200, a.Length);
        Assert.NotEqual(a, b);
        Assert.Empty(dev.GetRandom(0));
    }

    [Fact]
    public void PcrReadOfAll24PcrsLoopsAndMatchesTpm2PcrRead()
    {
        PcrValues ours;
        var sel = PcrSelection.FromString("sha256:all");
        using (var dev = tpm.Open())
        {
            ours = dev.PcrRead(sel);
        }
        Assert.Equal(24, ours.Bank(TpmAlgId.Sha256).Count);
        using var tmp = new TempDir();
        tpm.Tools("tpm2_pcrread", "sha256:all", "-o", tmp["pcrs.bin"]);
        var raw = File.ReadAllBytes(tmp["pcrs.bin"]);
        Assert.Equal(24 * 32, raw.Length);
        for (int i = 0; i < 24; i++)
            Assert.Equal(raw.AsSpan(i * 32, 32).ToArray(), ours.Bank(TpmAlgId.Sha256)[i]);
    }

    [Fact]
    public void PcrReadSkipsUnallocatedBanks()
    {
        using var dev = tpm.Open();
        var v = dev.PcrRead(PcrSelection.FromString("sha1:0,1+sha256:0,1"));
        Assert.Equal(2, v.Bank(TpmAlgId.Sha256).Count);
        Assert.Empty(v.Bank(TpmAlgId.Sha1));
    }

    [Fact]
    public void PcrExtendUpdatesThePcrAsTheSpecSays()
    {
        using var dev = tpm.Open();
        var sel = PcrSelection.Create(TpmAlgId.Sha256, 16);
        dev.PcrRead(sel).TryGet(TpmAlgId.Sha256, 16, out var before);
        var d = SHA256.HashData("measurement"u8);
        dev.PcrExtend(16, (TpmAlgId.Sha256, d));
        dev.PcrRead(sel).TryGet(TpmAlgId.Sha256, 16, out var after);
        Assert.Equal(SHA256.HashData([.. before, .. d]), after);
    }

    [Fact]
    public void NvReadPublicAndChunkedRead()
    {
        using var dev = tpm.Open();
        var pub = dev.NvReadPublic(TpmHandle.NvEkCertRsa2048);
        Assert.True(pub.AuthRead);
        Assert.Equal(TpmAlgId.Sha256, pub.NameAlg);
        var all = dev.NvReadAll(TpmHandle.NvEkCertRsa2048);
        Assert.Equal(pub.DataSize, all.Length);
        dev.MaxNvBuffer = 100; // force many chunks
        Assert.Equal(all, dev.NvReadAll(TpmHandle.NvEkCertRsa2048));
        var middle = dev.NvRead(TpmHandle.NvEkCertRsa2048, 100, 50);
        Assert.Equal(all.AsSpan(100, 50).ToArray(), middle);
    }
}
