using System.Net;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using TpmProvisioning.Attestation;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;

namespace TpmProvisioning.Tests.Keylime;

/// <summary>
/// Every certificate the components CA issues chains to it, but only a client certificate with the right role may call a
/// mutual-TLS route: a server's or an agent's TLS certificate (serverAuth only) is never taken for the tenant, and the
/// verifier's and the KMS's client certificates may do only what those components do.
/// </summary>
public sealed class ClientRoleTests : IAsyncLifetime
{
    private const string AgentId = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000";
    private KeylimeTestServer registrar = null!;
    private readonly string verifierData = Directory.CreateTempSubdirectory("tpmprov-roles-").FullName;
    private IServerHost verifier = null!;
    private Storage.SqliteStore verifierStore = null!;
    private X509Certificate2 verifierCa = null!;

    public async Task InitializeAsync()
    {
        registrar = await KeylimeTestServer.StartAsync([], o => o.Registrar.VerifyEkCertificateChain = false);
        (verifier, verifierStore, verifierCa) = await ScratchServer.StartAsync(verifierData, [], ServerRole.Verifier, null);
    }

    public async Task DisposeAsync()
    {
        await registrar.DisposeAsync();
        await ScratchServer.StopAsync(verifier, verifierStore, verifierData);
    }

    private static async Task<HttpStatusCode> SendAsync(string url, X509Certificate2 serverCa, X509Certificate2? client, HttpMethod method, string? body = null)
    {
        using var http = KeylimeTestServer.Client(serverCa, client);
        using var req = new HttpRequestMessage(method, url);
        if (body is not null) req.Content = new StringContent(body);
        using var resp = await http.SendAsync(req);
        var text = await resp.Content.ReadAsStringAsync();
        if (resp.StatusCode == HttpStatusCode.Forbidden)
            Assert.Equal(403, JsonDocument.Parse(text).RootElement.GetProperty("code").GetInt32());
        return resp.StatusCode;
    }

    [Fact]
    public async Task AtTheRegistrarOnlyTheTenantDeletesAndOnlyTenantAndKmsRead()
    {
        Assert.Equal(HttpStatusCode.OK, (await registrar.SendAsync(HttpMethod.Post, $"/v2.1/agents/{AgentId}", KeylimeTestServer.RegistrationExample())).Status);
        using var ca = ComponentCa.LoadOrCreate(Path.Combine(registrar.DataPath, "ca"));
        // What the probe used: the KMS's (or any server's) TLS certificate, and an agent's, both issued by the same CA.
        using var serverCert = ca.IssueServerCertificate(["kms.example"], [IPAddress.Loopback]);
        using var agentCert = ca.IssueServerCertificate(["agent"], [IPAddress.Loopback], "agent " + AgentId);
        using var verifierCert = ca.IssueClientCertificate("verifier", role: ClientRole.Verifier);
        using var kmsCert = ca.IssueClientCertificate("kms", role: ClientRole.Kms);
        using var tenantCert = ca.IssueClientCertificate("tenant");
        string list = registrar.Url + "/v2.1/agents/", one = registrar.Url + $"/v2.1/agents/{AgentId}";

        foreach (var c in new[] { serverCert, agentCert, verifierCert })
        {
            Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(list, registrar.ServerCa, c, HttpMethod.Get));
            Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(one, registrar.ServerCa, c, HttpMethod.Delete));
        }
        Assert.Equal(HttpStatusCode.OK, await SendAsync(list, registrar.ServerCa, kmsCert, HttpMethod.Get));
        Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(one, registrar.ServerCa, kmsCert, HttpMethod.Delete));
        Assert.NotNull(await registrar.Store.GetRegistrarAgentAsync(AgentId));

        Assert.Equal(HttpStatusCode.OK, await SendAsync(list, registrar.ServerCa, tenantCert, HttpMethod.Get));
        Assert.Equal(HttpStatusCode.OK, await SendAsync(one, registrar.ServerCa, tenantCert, HttpMethod.Delete));
        Assert.Null(await registrar.Store.GetRegistrarAgentAsync(AgentId));
    }

    [Fact]
    public async Task AtTheVerifierTheKmsOnlyReadsAndServerCertificatesAreRefused()
    {
        using var ca = ComponentCa.LoadOrCreate(Path.Combine(verifierData, "ca"));
        using var serverCert = ca.IssueServerCertificate(["kms.example"], [IPAddress.Loopback]);
        using var verifierCert = ca.IssueClientCertificate("verifier", role: ClientRole.Verifier);
        using var kmsCert = ca.IssueClientCertificate("kms", role: ClientRole.Kms);
        using var tenantCert = ca.IssueClientCertificate("tenant");
        string url = verifier.Info.Urls[0], list = url + "/v2.1/agents/", one = url + $"/v2.1/agents/{AgentId}";
        string body = KeylimeTestServer.Seed("verifier-post-agent.request.json");

        Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(list, verifierCa, serverCert, HttpMethod.Get));
        Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(list, verifierCa, verifierCert, HttpMethod.Get));
        Assert.Equal(HttpStatusCode.OK, await SendAsync(list, verifierCa, kmsCert, HttpMethod.Get));
        Assert.Equal(HttpStatusCode.NotFound, await SendAsync(one, verifierCa, kmsCert, HttpMethod.Get));
        foreach (var c in new[] { serverCert, verifierCert, kmsCert })
        {
            Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(one, verifierCa, c, HttpMethod.Post, body));
            Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(one, verifierCa, c, HttpMethod.Delete));
            Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(one + "/stop", verifierCa, c, HttpMethod.Put));
        }
        Assert.Empty(await verifierStore.ListVerifierAgentsAsync());
        Assert.Equal(HttpStatusCode.OK, await SendAsync(list, verifierCa, tenantCert, HttpMethod.Get));
    }

    [Fact]
    public void IssuedCertificatesCarryTheirRoleAndServerCertificatesNone()
    {
        using var ca = ComponentCa.LoadOrCreate(Path.Combine(verifierData, "ca"));
        using var other = ComponentCa.LoadOrCreate(Path.Combine(verifierData, "other-ca"));
        using var server = ca.IssueServerCertificate(["x"], [IPAddress.Loopback]);
        Assert.Equal(ClientRole.None, ca.ClientRolesOf(server));
        Assert.Equal(ClientRole.Tenant, ca.ClientRolesOf(ca.IssueClientCertificate("t")));
        Assert.Equal(ClientRole.Verifier, ca.ClientRolesOf(ca.IssueClientCertificate("v", role: ClientRole.Verifier)));
        Assert.Equal(ClientRole.Kms | ClientRole.Verifier, ca.ClientRolesOf(ca.IssueClientCertificate("kv", role: ClientRole.Kms | ClientRole.Verifier)));
        // A tenant certificate from another CA has a role, but not here.
        Assert.Equal(ClientRole.None, ca.ClientRolesOf(other.IssueClientCertificate("t")));
        Assert.Throws<ArgumentException>(() => ca.IssueClientCertificate("nobody", role: ClientRole.None));
    }
}
