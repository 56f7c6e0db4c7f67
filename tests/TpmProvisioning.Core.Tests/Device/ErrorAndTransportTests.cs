using System.Net;
using System.Net.Sockets;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tpm;
using TpmProvisioning.Tpm.Transport;

namespace TpmProvisioning.Tests.Device;

public class ResponseCodeTests
{
    [Theory]
    [InlineData(0x1C4u, "TPM_RC_VALUE", TpmRcFormat.Format1, 1, null, null)]
    [InlineData(0x2D5u, "TPM_RC_SIZE", TpmRcFormat.Format1, 2, null, null)]
    [InlineData(0x18Bu, "TPM_RC_HANDLE", TpmRcFormat.Format1, null, 1, null)]
    [InlineData(0x28Bu, "TPM_RC_HANDLE", TpmRcFormat.Format1, null, 2, null)]
    [InlineData(0x99Du, "TPM_RC_POLICY_FAIL", TpmRcFormat.Format1, null, null, 1)]
    [InlineData(0xA9Du, "TPM_RC_POLICY_FAIL", TpmRcFormat.Format1, null, null, 2)]
    [InlineData(0x98Eu, "TPM_RC_AUTH_FAIL", TpmRcFormat.Format1, null, null, 1)]
    [InlineData(0x09Fu, "TPM_RC_INTEGRITY", TpmRcFormat.Format1, null, null, null)]
    [InlineData(0x100u, "TPM_RC_INITIALIZE", TpmRcFormat.Format0, null, null, null)]
    [InlineData(0x101u, "TPM_RC_FAILURE", TpmRcFormat.Format0, null, null, null)]
    [InlineData(0x143u, "TPM_RC_COMMAND_CODE", TpmRcFormat.Format0, null, null, null)]
    [InlineData(0x14Cu, "TPM_RC_NV_DEFINED", TpmRcFormat.Format0, null, null, null)]
    [InlineData(0x902u, "TPM_RC_OBJECT_MEMORY", TpmRcFormat.Format0, null, null, null)]
    [InlineData(0x922u, "TPM_RC_RETRY", TpmRcFormat.Format0, null, null, null)]
    [InlineData(0x908u, "TPM_RC_YIELDED", TpmRcFormat.Format0, null, null, null)]
    [InlineData(0x90Au, "TPM_RC_TESTING", TpmRcFormat.Format0, null, null, null)]
    public void DecodesNameFormatAndLocation(uint rc, string name, TpmRcFormat format, int? parameter, int? handle, int? session)
    {
        var d = TpmResponseCode.Decode(rc);
        Assert.Equal(name, d.Name);
        Assert.Equal(format, d.Format);
        Assert.Equal(parameter, d.Parameter);
        Assert.Equal(handle, d.Handle);
        Assert.Equal(session, d.Session);
    }

    [Fact]
    public void ExceptionMessageNamesCommandErrorAndLocationNeverABareNumber()
    {
        var ex = new TpmException(TpmCc.Quote, 0x18B);
        Assert.Equal("TPM2_Quote failed: TPM_RC_HANDLE (0x18B, format 1, handle 1): the handle is not correct for the use", ex.Message);
        Assert.Equal(0x08Bu, ex.Decoded.BaseCode);
        Assert.True(TpmResponseCode.Decode(0x922).IsWarning);
        Assert.Contains("vendor", TpmResponseCode.Decode(0x500).ToString());
    }
}

public class ConnectionStringTests
{
    [Theory]
    [InlineData("swtpm:host=127.0.0.1,port=2400", TpmTransportKind.Swtpm, "127.0.0.1", 2400, null)]
    [InlineData("swtpm:port=2400", TpmTransportKind.Swtpm, "localhost", 2400, null)]
    [InlineData("swtpm", TpmTransportKind.Swtpm, "localhost", 2321, null)]
    [InlineData(" SWTPM: host = tpm.example , port = 9 ", TpmTransportKind.Swtpm, "tpm.example", 9, null)]
    [InlineData("mssim:host=localhost,port=2321", TpmTransportKind.Mssim, "localhost", 2321, null)]
    [InlineData("device:/dev/tpm0", TpmTransportKind.Device, null, 0, "/dev/tpm0")]
    [InlineData("device", TpmTransportKind.Device, null, 0, "/dev/tpmrm0")]
    [InlineData("tbs", TpmTransportKind.Tbs, null, 0, null)]
    public void ParsesTctiSyntax(string s, TpmTransportKind kind, string? host, int port, string? path)
    {
        var cs = TpmConnectionString.Parse(s);
        Assert.Equal(kind, cs.Kind);
        Assert.Equal(host, cs.Host);
        Assert.Equal(port, cs.Port);
        Assert.Equal(path, cs.DevicePath);
        Assert.Equal(cs, TpmConnectionString.Parse(cs.ToString()));
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData("tabrmd", "unknown transport 'tabrmd'")]
    [InlineData("swtpm:host=x,port=abc", "port 'abc'")]
    [InlineData("swtpm:port=70000", "port '70000'")]
    [InlineData("swtpm:hostx", "not key=value")]
    [InlineData("mssim:host=a,colour=blue", "unknown option 'colour'")]
    [InlineData("tbs:foo", "tbs takes no options")]
    [InlineData("swtpm:host=,port=1", "host is empty")]
    public void BadConnectionStringsGiveClearArgumentExceptions(string s, string expected)
    {
        var ex = Assert.Throws<ArgumentException>(() => TpmTransportFactory.Open(s));
        Assert.Contains(expected, ex.Message);
    }

    [Fact]
    public void TbsIsRefusedOffWindowsAndMissingDevicesAreTransportErrors()
    {
        if (!OperatingSystem.IsWindows())
            Assert.Throws<PlatformNotSupportedException>(() => TpmTransportFactory.Open("tbs"));
        Assert.Throws<TpmTransportException>(() => TpmTransportFactory.Open("device:/nonexistent/tpm"));
    }

    [Fact]
    public void RefusedTcpConnectionIsATransportError()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        var ex = Assert.Throws<TpmTransportException>(() => TpmTransportFactory.Open($"swtpm:host=127.0.0.1,port={port}"));
        Assert.Contains($"127.0.0.1:{port}", ex.Message);
    }
}

public class DeviceErrorTests : IClassFixture<FastSwtpmFixture>
{
    private readonly FastSwtpmFixture tpm;

    public DeviceErrorTests(FastSwtpmFixture fixture)
    {
        tpm = fixture;
        tpm.FlushTransients();
    }

    [Fact]
    public void QuoteWithABadHandleNamesQuoteAndTheHandle()
    {
        using var dev = tpm.Open();
        var ex = Assert.Throws<TpmException>(() => dev.Quote(0x80FFFFF0, [1, 2, 3], PcrSelection.Create(TpmAlgId.Sha256, 0)));
        Assert.Equal(TpmCc.Quote, ex.Command);
        Assert.Contains(ex.Decoded.Name, new[] { "TPM_RC_HANDLE", "TPM_RC_VALUE", "TPM_RC_REFERENCE_H0" });
        Assert.StartsWith("TPM2_Quote failed: TPM_RC_", ex.Message);
        if (ex.Decoded.Format == TpmRcFormat.Format1) Assert.Equal(1, ex.Decoded.Handle);
    }

    [Fact]
    public void QuoteWithAStorageKeyIsRejectedWithDecodedKeyError()
    {
        using var dev = tpm.Open();
        var srk = dev.CreateSrk();
        try
        {
            var ex = Assert.Throws<TpmException>(() => dev.Quote(srk.Handle, [], PcrSelection.Create(TpmAlgId.Sha256, 0)));
            Assert.Equal(TpmCc.Quote, ex.Command);
            Assert.Equal(TpmRcFormat.Format1, ex.Decoded.Format);
            Assert.Equal(1, ex.Decoded.Handle);
            Assert.Contains("handle 1", ex.Message);
        }
        finally { dev.FlushContext(srk.Handle); }
    }

    [Fact]
    public void OversizedQualifyingDataIsAParameterSizeError()
    {
        using var dev = tpm.Open();
        var ak = dev.CreateAk().Key;
        try
        {
            var ex = Assert.Throws<TpmException>(() => dev.Quote(ak.Handle, new byte[200], PcrSelection.Create(TpmAlgId.Sha256, 0)));
            Assert.Equal(TpmCc.Quote, ex.Command);
            Assert.Equal("TPM_RC_SIZE", ex.Decoded.Name);
            Assert.Equal(1, ex.Decoded.Parameter);
        }
        finally { dev.FlushContext(ak.Handle); }
    }

    [Fact]
    public void PersistingOverAnOccupiedHandleFailsUnlessReplacing()
    {
        const uint h = 0x81000C01;
        using var dev = tpm.Open();
        var srk = dev.CreateSrk();
        try
        {
            var p = dev.PersistObject(srk.Handle, h, replace: true);
            Assert.Equal(srk.Name, p.Name);
            var ex = Assert.Throws<TpmException>(() => dev.PersistObject(srk.Handle, h));
            Assert.Equal(TpmCc.EvictControl, ex.Command);
            Assert.Equal("TPM_RC_NV_DEFINED", ex.Decoded.Name);
            dev.PersistObject(srk.Handle, h, replace: true);
            dev.EvictPersistent(h);
            Assert.DoesNotContain(h, dev.GetHandles(TpmHandle.HrPersistent));
        }
        finally { dev.FlushContext(srk.Handle); }
    }

    [Fact]
    public void MssimFramingWorksOnSwtpmsDataPort()
    {
        // swtpm's data port also accepts the simulator's TPM_SEND_COMMAND framing (its control port is not mssim's platform port).
        using var dev = new TpmDevice(new MssimTpmTransport("127.0.0.1", tpm.Swtpm.Port, powerUp: false));
        Assert.Equal(32, dev.GetRandom(32).Length);
        Assert.Equal("IBM", dev.GetInfo().Manufacturer);
    }

    [Fact]
    public void ConcurrentCallersAreSerialized()
    {
        using var dev = tpm.Open();
        Parallel.For(0, 40, _ => Assert.Equal(48, dev.GetRandom(48).Length));
    }

    [Fact]
    public void DisposedDeviceThrowsObjectDisposed()
    {
        var dev = tpm.Open();
        dev.Dispose();
        Assert.Throws<ObjectDisposedException>(() => dev.GetRandom(1));
    }
}
