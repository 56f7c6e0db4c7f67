using System.Net;
using System.Net.Http.Headers;
using TpmProvisioning.Hosting;
using TpmProvisioning.Kms;
using TpmProvisioning.Pki;
using TpmProvisioning.Tests.Keylime;

namespace TpmProvisioning.Tests;

/// <summary>
/// A JSON body whose strings hold invalid UTF-8 (which System.Text.Json parses but cannot read back as text) gets a 4xx
/// from every surface that takes JSON, never a 500, and the server keeps serving.
/// </summary>
public sealed class InvalidUtf8Tests
{
    private static byte[] Body(string json)
    {
        // "\u00FF" is replaced by a raw 0xFF byte inside a JSON string: well-formed JSON, invalid UTF-8.
        var b = System.Text.Encoding.ASCII.GetBytes(json.Replace("@", "X"));
        int at = json.IndexOf('@');
        b[at] = 0xFF;
        return b;
    }

    [Fact]
    public async Task EverySurfaceRefusesInvalidUtf8WithoutAServerError()
    {
        var data = Directory.CreateTempSubdirectory("tpmprov-utf8-").FullName;
        // Registrar and Verifier share Keylime's routes, so they cannot share a server: the start says so.
        var conflict = await Assert.ThrowsAsync<ServerStartException>(() => TpmProvisioning.Server.Hosting.ProvisioningServerHost.StartAsync(
            new ServerOptions { DataPath = data, Port = 0, Roles = ServerRole.Registrar | ServerRole.Verifier }));
        Assert.Equal("RoleConflict", conflict.Reason);
        var (host, store, ca) = await ScratchServer.StartAsync(data, [], ServerRole.Provisioning | ServerRole.Registrar | ServerRole.Kms,
            o => o.Kms = new KmsSettings { MasterKey = MasterKeyKind.InsecureFile, PasswordIterations = 1000 });
        try
        {
            System.Security.Cryptography.X509Certificates.X509Certificate2 tenant;
            using (var cca = ComponentCa.LoadOrCreate(Path.Combine(data, "ca"))) tenant = cca.IssueClientCertificate("tenant");
            using var http = KeylimeTestServer.Client(ca, tenant);
            string id = Guid.NewGuid().ToString();
            var cases = new (string Path, string Json)[]
            {
                ($"/v2.1/agents/{id}", "{\"aik_tpm\": \"A@\", \"ek_tpm\": \"B\"}"),
                ($"/v2.1/agents/{id}/activate", "{\"auth_tag\": \"@\"}"),
                ("/api/tpm/tpm/provision", "{\"api_key\": \"@\", \"device\": {}}"),
                ("/api/tpmprov/kms/v1/revocations", "{\"msg\": \"@\", \"signature\": \"x\"}"),
                ("/api/v1/auth/tokens", "{\"grant_type\": \"password\", \"username\": \"@\", \"password\": \"x\"}"),
            };
            foreach (var (path, json) in cases)
            {
                foreach (var method in path.EndsWith("/activate", StringComparison.Ordinal) ? new[] { HttpMethod.Put } : new[] { HttpMethod.Post })
                {
                    using var req = new HttpRequestMessage(method, host.Info.Urls[0] + path) { Content = new ByteArrayContent(Body(json)) };
                    req.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
                    using var resp = await http.SendAsync(req);
                    Assert.True((int)resp.StatusCode is >= 400 and < 500, $"{method} {path}: {(int)resp.StatusCode} {await resp.Content.ReadAsStringAsync()}");
                }
            }
            using var health = await http.GetAsync(host.Info.Urls[0] + "/healthz");
            Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        }
        finally { await ScratchServer.StopAsync(host, store, data); }

        // The verifier, on a server of its own.
        var vdata = Directory.CreateTempSubdirectory("tpmprov-utf8-v-").FullName;
        var (vhost, vstore, vca) = await ScratchServer.StartAsync(vdata, [], ServerRole.Verifier, null);
        try
        {
            System.Security.Cryptography.X509Certificates.X509Certificate2 tenant;
            using (var cca = ComponentCa.LoadOrCreate(Path.Combine(vdata, "ca"))) tenant = cca.IssueClientCertificate("tenant");
            using var http = KeylimeTestServer.Client(vca, tenant);
            using var req = new HttpRequestMessage(HttpMethod.Post, vhost.Info.Urls[0] + $"/v2.1/agents/{Guid.NewGuid()}")
            {
                Content = new ByteArrayContent(Body("{\"cloudagent_ip\": \"@\", \"cloudagent_port\": 9002}")),
            };
            using var resp = await http.SendAsync(req);
            Assert.Equal(HttpStatusCode.BadRequest, resp.StatusCode);
        }
        finally { await ScratchServer.StopAsync(vhost, vstore, vdata); }
    }
}
