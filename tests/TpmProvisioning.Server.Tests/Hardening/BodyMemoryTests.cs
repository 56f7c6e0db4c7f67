using System.Net;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Tests.Keylime;
using Xunit.Abstractions;

namespace TpmProvisioning.Tests.Hardening;

/// <summary>
/// Memory amplification at the verifier: six parallel 31 MB bodies (under the 32 MiB cap), each refused, must not grow the
/// server by gigabytes. Measured on a server in a process of its own (its peak resident size, VmHWM, from /proc), so other
/// tests running beside it cannot disturb the number.
/// </summary>
public sealed class BodyMemoryTests(ITestOutputHelper output)
{
    private const int BodyBytes = 31 * 1000 * 1000;

    /// <summary>
    /// A body that is refused (400: no <c>cloudagent_port</c>) whose bulk is one 31 MB string member: before the fix each such
    /// request held the body four or five times over (growing buffer, copies, the string in UTF-16), over 1 GB for six.
    /// </summary>
    private static byte[] RefusedBody()
    {
        const string head = "{\"cloudagent_ip\":\"127.0.0.1\",\"ak_tpm\":\"AAAA\",\"runtime_policy\":\"";
        const string tail = "\"}";
        var body = new byte[BodyBytes];
        Encoding.ASCII.GetBytes(head).CopyTo(body, 0);
        body.AsSpan(head.Length, BodyBytes - head.Length - tail.Length).Fill((byte)'A');
        Encoding.ASCII.GetBytes(tail).CopyTo(body, BodyBytes - tail.Length);
        return body;
    }

    [Fact]
    public async Task SixParallelLargeRefusedBodiesStayWithinABoundedGrowth()
    {
        if (!OperatingSystem.IsLinux()) return; // /proc is where the resident size is read
        await using var child = await ChildServer.StartAsync(ServerRole.Verifier);
        var ca = X509Certificate2.CreateFromPem(File.ReadAllText(Path.Combine(child.DataPath, "ca", "cacert.pem")));
        X509Certificate2 tenant;
        using (var cca = ComponentCa.LoadOrCreate(Path.Combine(child.DataPath, "ca"))) tenant = cca.IssueClientCertificate("tenant");
        using var http = KeylimeTestServer.Client(ca, tenant);
        http.Timeout = TimeSpan.FromMinutes(5);

        // Warm up: the route, TLS and JSON paths are loaded before the baseline is taken.
        var small = await http.PostAsync(child.Url + "/v2.1/agents/warmup", new StringContent("{\"cloudagent_ip\":\"127.0.0.1\"}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, small.StatusCode);
        long baseline = child.StatusBytes("VmRSS");

        var body = RefusedBody();
        var statuses = await Task.WhenAll(Enumerable.Range(0, 6).Select(async i =>
        {
            try
            {
                using var content = new ByteArrayContent(body);
                content.Headers.ContentType = new("application/json");
                using var resp = await http.PostAsync(child.Url + $"/v2.1/agents/agent-{i}", content);
                return ((int)resp.StatusCode).ToString();
            }
            catch (HttpRequestException) { return "reset"; } // refused (503, budget spent) while the body was still being sent
        }));
        long peak = child.StatusBytes("VmHWM"), after = child.StatusBytes("VmRSS");
        output.WriteLine($"answers {string.Join(",", statuses)}; RSS baseline {baseline >> 20} MiB, peak {peak >> 20} MiB, after {after >> 20} MiB");

        // Every request was refused: 400 for the body, or 503 / a reset when the server's body budget was spent.
        Assert.All(statuses, s => Assert.Contains(s, new[] { "400", "503", "reset" }));
        Assert.Contains("400", statuses);
        // Six bodies of 31 MB: the budget (96 MiB) admits three at a time, each parsed in place. Before the fix the peak grew by
        // more than 1 GB (1049 MiB measured); the bound leaves room for GC slack on a busy machine.
        Assert.True(peak - baseline < 600L * 1024 * 1024, $"peak resident size grew by {(peak - baseline) >> 20} MiB");

        // And the server still answers.
        var again = await http.PostAsync(child.Url + "/v2.1/agents/after", new StringContent("{\"cloudagent_ip\":\"127.0.0.1\"}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, again.StatusCode);
    }
}
