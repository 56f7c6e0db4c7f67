using TpmProvisioning.Tests.Kms;
using Xunit.Abstractions;
namespace TpmProvisioning.Tests.Hardening;
public sealed class ScratchProbe(ITestOutputHelper o)
{
    [Fact]
    public async Task Probe()
    {
        await using var s = await KmsTestServer.StartAsync();
        foreach (var (m, p) in new[] { ("POST", "/v2.1/agents/abc"), ("POST", "/api/v1/auth/tokens"), ("POST", "/api/session"), ("PUT", "/v2.1/agents/abc/activate"), ("POST", "/api/tpmprov/kms/v1/revocations") })
        {
            var r = await RawHttp.SendAsync(s.Url, RawHttp.OverflowingChunk(m, p));
            o.WriteLine($"{m} {p}: {r.Status} {r.Body}");
        }
        foreach (var e in s.Host.RecentLog(10)) o.WriteLine(e.Message + " " + e.Exception);
    }
}
