using System.Net;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Hosting;
using TpmProvisioning.Server.Hosting;
using TpmProvisioning.Server.Roles;
using TpmProvisioning.Tests.Keylime;

namespace TpmProvisioning.Tests.Hardening;

/// <summary>
/// The server-wide budget of buffered body bytes (<see cref="ServerOptions.MaxBufferedRequestBytes"/>): a body that does not fit
/// is refused before it is read, with 503 and Retry-After in the surface's shape; once requests end, their bytes are free again.
/// </summary>
public sealed class BodyBudgetTests
{
    [Fact]
    public void TheBudgetNeverGrantsMoreThanItsCapacity()
    {
        var b = new RequestBodyBudget(100);
        Assert.True(b.TryReserve(60));
        Assert.False(b.TryReserve(41));
        Assert.True(b.TryReserve(40));
        Assert.False(b.TryReserve(1));
        b.Release(60);
        Assert.True(b.TryReserve(60));
        Assert.Equal(100, b.InUse);
        Assert.Equal(100, b.Peak);
        Parallel.For(0, 1000, _ => { if (b.TryReserve(7)) b.Release(7); });
        Assert.Equal(100, b.Peak);
    }

    [Fact]
    public async Task ABodyBeyondTheBudgetIs503WithRetryAfterInEachShapeAndTheBudgetIsFreeAfterwards()
    {
        var data = Directory.CreateTempSubdirectory("tpmprov-budget-").FullName;
        var (host, store, ca) = await ScratchServer.StartAsync(data, [], ServerRole.Registrar | ServerRole.Provisioning, o => o.MaxBufferedRequestBytes = 64 * 1024);
        try
        {
            using var http = KeylimeTestServer.Client(ca, null);
            var url = host.Info.Urls[0];
            // 100 KiB declared: under the registrar's 1 MiB and provisioning's 256 KiB caps, over the 64 KiB budget. Only the headers
            // are sent: the refusal must come before the body is read (and the client then has nothing left to send).
            static string Headers(string method, string path) =>
                $"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {100 * 1024}\r\n\r\n";

            foreach (var (method, path) in new[] { ("POST", "/v2.1/agents/budget"), ("PUT", "/v2.1/agents/budget/activate") })
            {
                var r = await RawHttp.SendAsync(url, Headers(method, path));
                Assert.Equal(503, r.Status);
                Assert.True(int.Parse(r.Headers["Retry-After"]) >= 1);
                var body = JsonDocument.Parse(r.Body).RootElement;
                Assert.Equal(503, body.GetProperty("code").GetInt32());
                Assert.Contains("busy", body.GetProperty("status").GetString());
            }
            var p = await RawHttp.SendAsync(url, Headers("POST", ProvisioningRole.Route));
            Assert.Equal(503, p.Status);
            Assert.True(int.Parse(p.Headers["Retry-After"]) >= 1);
            Assert.Contains("busy", JsonSerializer.Deserialize<string>(p.Body));

            // A body that fits is read as before (and refused on its merits), again and again: refused bodies gave their bytes back.
            for (int i = 0; i < 3; i++)
            {
                using var resp = await http.PostAsync(url + "/v2.1/agents/budget", new StringContent("{\"x\":1}", Encoding.UTF8, "application/json"));
                Assert.Equal(HttpStatusCode.BadRequest, resp.StatusCode);
            }
        }
        finally
        {
            await ScratchServer.StopAsync(host, store, data);
        }
    }
}
