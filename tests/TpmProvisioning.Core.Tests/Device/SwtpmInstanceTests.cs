using System.Diagnostics;
using TpmProvisioning.Tpm;
using TpmProvisioning.Tpm.Simulator;

namespace TpmProvisioning.Tests.Device;

public class SwtpmInstanceTests
{
    private static byte[] EkName(SwtpmInstance s)
    {
        using var dev = TpmDevice.Open(s.ConnectionString);
        return dev.ReadPublic(SwtpmInstance.PersistentRsaEk).Object.Name;
    }

    [Fact]
    public void FreshInstancesHaveDistinctEksAndFastCopiesShareOne()
    {
        using var fresh1 = SwtpmInstance.Start();
        using var fresh2 = SwtpmInstance.Start(new SwtpmOptions { StateMode = SwtpmStateMode.Fresh });
        using var copy1 = SwtpmInstance.Start(new SwtpmOptions { StateMode = SwtpmStateMode.FastCopy });
        using var copy2 = SwtpmInstance.Start(new SwtpmOptions { StateMode = SwtpmStateMode.FastCopy });
        Assert.NotEqual(EkName(fresh1), EkName(fresh2));
        Assert.Equal(EkName(copy1), EkName(copy2));
        Assert.NotEqual(EkName(fresh1), EkName(copy1));
        Assert.Equal(4, new[] { fresh1.Port, fresh2.Port, copy1.Port, copy2.Port }.Distinct().Count());
    }

    [Fact]
    public void ExposesConnectionPortsCaAndDisposeKillsAndCleansUp()
    {
        var s = SwtpmInstance.Start();
        Assert.Equal($"swtpm:host=127.0.0.1,port={s.Port}", s.ConnectionString);
        Assert.Equal(s.Port + 1, s.ControlPort);
        Assert.True(File.Exists(s.ManufacturerRootPath));
        Assert.True(File.Exists(s.ManufacturerIssuerPath));
        Assert.True(Directory.Exists(s.StateDirectory));
        var p = Process.GetProcessById(s.Pid);
        Assert.False(p.HasExited);
        s.Dispose();
        Assert.True(p.WaitForExit(5000));
        Assert.False(Directory.Exists(s.StateDirectory));
        s.Dispose(); // idempotent
    }

    [Fact]
    public void ParallelFreshStartsAllSucceed()
    {
        var instances = new SwtpmInstance[4];
        try
        {
            Parallel.For(0, instances.Length, i => instances[i] = SwtpmInstance.Start());
            var names = instances.Select(i => Convert.ToHexString(EkName(i))).ToHashSet();
            Assert.Equal(instances.Length, names.Count);
        }
        finally
        {
            foreach (var i in instances) i?.Dispose();
        }
    }
}

public class SwtpmConfigurationTests
{
    [Fact]
    public void GeneratedLocalCaConfigurationWorksAsForANonRootUser()
    {
        var dir = Path.Combine(Path.GetTempPath(), "swtpm-localca-test-" + Guid.NewGuid().ToString("N"));
        try
        {
            var ca = SwtpmLocalCa.InDirectory(dir);
            Assert.NotNull(ca.SetupConfigFile);
            using var s = SwtpmInstance.Start(new SwtpmOptions { LocalCa = ca, PcrBanks = "sha1,sha256" });
            Assert.StartsWith(dir, s.ManufacturerRootPath);
            Assert.True(File.Exists(s.ManufacturerRootPath));
            using var dev = TpmDevice.Open(s.ConnectionString);
            using var cert = dev.ReadEkCertificate(EkKind.Rsa2048)!;
            using var issuer = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPem(File.ReadAllText(s.ManufacturerIssuerPath));
            Assert.Equal(issuer.Subject, cert.Issuer);

            // Two banks of 24 PCRs: PCR_Read answers 8 at a time, so this takes several calls.
            var info = dev.GetInfo();
            Assert.Equal(new[] { TpmAlgId.Sha1, TpmAlgId.Sha256 }, info.ActivePcrBanks.Order().ToArray());
            var sel = PcrSelection.FromString("sha1:all+sha256:all");
            var values = dev.PcrRead(sel);
            Assert.Equal(24, values.Bank(TpmAlgId.Sha1).Count);
            Assert.Equal(24, values.Bank(TpmAlgId.Sha256).Count);

            var ak = dev.CreateAk().Key;
            try
            {
                var nonce = new byte[] { 9, 8, 7 };
                var q = dev.Quote(ak.Handle, nonce, sel);
                var result = QuoteVerifier.Verify(q.Attest, q.Signature, values, ak.Public, nonce, sel);
                Assert.True(result.IsValid, result.ToString());
            }
            finally { dev.FlushContext(ak.Handle); }
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }
}
