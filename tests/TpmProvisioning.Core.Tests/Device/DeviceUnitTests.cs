using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tpm;
using TpmProvisioning.Tpm.Transport;

namespace TpmProvisioning.Tests.Device;

public class DeviceUnitTests
{
    private static readonly byte[] RandomOk = ScriptedTransport.Response(0, 0x00, 0x04, 1, 2, 3, 4);

    [Theory]
    [InlineData(0x922u)]
    [InlineData(0x908u)]
    [InlineData(0x90Au)]
    public void RetryWarningsAreResent(uint warning)
    {
        var t = new ScriptedTransport(ScriptedTransport.Response(warning), ScriptedTransport.Response(warning), RandomOk);
        using var dev = new TpmDevice(t);
        Assert.Equal(new byte[] { 1, 2, 3, 4 }, dev.GetRandom(4));
        Assert.Equal(3, t.Commands.Count);
        Assert.All(t.Commands, c => Assert.Equal(t.Commands[0], c));
    }

    [Fact]
    public void RetriesAreBounded()
    {
        var responses = Enumerable.Range(0, 10).Select(_ => ScriptedTransport.Response(0x922)).ToArray();
        using var dev = new TpmDevice(new ScriptedTransport(responses)) { MaxRetries = 3 };
        var ex = Assert.Throws<TpmException>(() => dev.GetRandom(4));
        Assert.Equal("TPM_RC_RETRY", ex.Decoded.Name);
        Assert.Equal(TpmCc.GetRandom, ex.Command);
    }

    [Fact]
    public void ErrorsAreNotRetriedAndAreDecoded()
    {
        var t = new ScriptedTransport(ScriptedTransport.Response(0x1C4));
        using var dev = new TpmDevice(t);
        var ex = Assert.Throws<TpmException>(() => dev.GetRandom(4));
        Assert.Single(t.Commands);
        Assert.Equal("TPM2_GetRandom failed: TPM_RC_VALUE (0x1C4, format 1, parameter 1): value is out of range or is not correct for the context", ex.Message);
    }

    [Fact]
    public void StartupIgnoresInitialize()
    {
        var t = new ScriptedTransport(ScriptedTransport.Response(0x100));
        using var dev = new TpmDevice(t);
        dev.Startup();
        Assert.Equal(new byte[] { 0x80, 0x01, 0, 0, 0, 0x0C, 0, 0, 0x01, 0x44, 0, 0 }, t.Commands[0]);
    }

    [Fact]
    public void MalformedResponsesAreTransportOrFormatErrors()
    {
        var lying = ScriptedTransport.Response(0, 0, 4, 1, 2, 3, 4);
        lying[5] = 99; // header size disagrees with the bytes
        using (var dev = new TpmDevice(new ScriptedTransport(lying)))
            Assert.Throws<TpmTransportException>(() => dev.GetRandom(4));
        using (var dev = new TpmDevice(new ScriptedTransport(ScriptedTransport.Response(0, 0, 9, 1))))
            Assert.Throws<TpmFormatException>(() => dev.GetRandom(4));
    }

    [Fact]
    public void CommandsWithSessionsCarryAPasswordAuthorizationArea()
    {
        var t = new ScriptedTransport(ScriptedTransport.Response(0));
        using var dev = new TpmDevice(t);
        dev.EvictControl(0x80000001, 0x81000001);
        var c = t.Commands[0];
        // tag SESSIONS, size, CC EvictControl, handles owner + object, authSize 9, TPM_RS_PW, empty nonce, continueSession, empty hmac, persistent handle
        Assert.Equal(Convert.FromHexString("80020000002300000120400000018000000100000009400000090000010000" + "81000001"), c);
    }
}
