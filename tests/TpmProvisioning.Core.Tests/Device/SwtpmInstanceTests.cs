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
