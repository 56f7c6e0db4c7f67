using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Server.Roles;
using TpmProvisioning.Tests.Kms;

namespace TpmProvisioning.Tests.Hardening;

/// <summary>
/// A chunked body whose chunk size overflows (<c>fffffffffffffffff</c>) made Kestrel throw "Bad chunk size data" out of every
/// body read, answered 500. Each surface must answer 400 in its own error shape, and change nothing.
/// </summary>
public sealed class MalformedChunkTests : IAsyncLifetime
{
    private KmsTestServer kms = null!;                // KMS (vSphere, CCKM, release) and the registrar
    private (IServerHost Host, Storage.SqliteStore Store, X509Certificate2 Ca) prov, verifier;
    private readonly string provData = Directory.CreateTempSubdirectory("tpmprov-chunk-p-").FullName;
    private readonly string verifierData = Directory.CreateTempSubdirectory("tpmprov-chunk-v-").FullName;
    private X509Certificate2 tenant = null!;

    public async Task InitializeAsync()
    {
        kms = await KmsTestServer.StartAsync();
        prov = await ScratchServer.StartAsync(provData, [], ServerRole.Provisioning, null);
        verifier = await ScratchServer.StartAsync(verifierData, [], ServerRole.Verifier, null);
        using var ca = ComponentCa.LoadOrCreate(Path.Combine(verifierData, "ca"));
        tenant = ca.IssueClientCertificate("tenant");
    }

    public async Task DisposeAsync()
    {
        await kms.DisposeAsync();
        await ScratchServer.StopAsync(prov.Host, prov.Store, provData);
        await ScratchServer.StopAsync(verifier.Host, verifier.Store, verifierData);
    }

    private static JsonElement Json(RawHttp.Response r) => JsonDocument.Parse(r.Body).RootElement;

    private static void AssertKeylime400(RawHttp.Response r)
    {
        Assert.Equal(400, r.Status);
        var body = Json(r);
        Assert.Equal(400, body.GetProperty("code").GetInt32());
        Assert.Contains("chunk", body.GetProperty("status").GetString(), StringComparison.OrdinalIgnoreCase);
        Assert.Equal(JsonValueKind.Object, body.GetProperty("results").ValueKind);
    }

    [Fact]
    public async Task ProvisioningAnswers400AsAJsonString()
    {
        var r = await RawHttp.SendAsync(prov.Host.Info.Urls[0], RawHttp.OverflowingChunk("POST", ProvisioningRole.Route));
        Assert.Equal(400, r.Status);
        Assert.Contains("chunk", Json(r).GetString(), StringComparison.OrdinalIgnoreCase);
        Assert.Equal(0, await prov.Store.CountManufacturingRecordsAsync());
    }

    [Fact]
    public async Task RegistrarAnswers400InTheEnvelope()
    {
        string before = await kms.SnapshotAsync();
        AssertKeylime400(await RawHttp.SendAsync(kms.Url, RawHttp.OverflowingChunk("POST", "/v2.1/agents/chunked")));
        AssertKeylime400(await RawHttp.SendAsync(kms.Url, RawHttp.OverflowingChunk("PUT", "/v2.1/agents/chunked/activate")));
        Assert.Equal(before, await kms.SnapshotAsync());
    }

    [Fact]
    public async Task VerifierAnswers400InTheEnvelope()
    {
        AssertKeylime400(await RawHttp.SendAsync(verifier.Host.Info.Urls[0], RawHttp.OverflowingChunk("POST", "/v2.1/agents/chunked"), tenant));
        Assert.Empty(await verifier.Store.ListVerifierAgentsAsync());
    }

    [Fact]
    public async Task KmsReleaseAndRevocationAnswer400InTheEnvelope()
    {
        AssertKeylime400(await RawHttp.SendAsync(kms.Url, RawHttp.OverflowingChunk("POST", KmsRole.ReleasePath)));
        AssertKeylime400(await RawHttp.SendAsync(kms.Url, RawHttp.OverflowingChunk("POST", KmsRole.RevocationPath)));
    }

    [Fact]
    public async Task VsphereAnswers400InItsShape()
    {
        var session = await kms.SessionAsync();
        string before = await kms.SnapshotAsync();
        var r = await RawHttp.SendAsync(kms.Url, RawHttp.OverflowingChunk("POST", KmsRole.ProvidersPath, $"{KmsRole.SessionHeader}: {session}\r\n"));
        Assert.Equal(400, r.Status);
        var body = Json(r);
        Assert.Equal("INVALID_ARGUMENT", body.GetProperty("error_type").GetString());
        Assert.Contains("chunk", body.GetProperty("messages")[0].GetProperty("default_message").GetString(), StringComparison.OrdinalIgnoreCase);
        Assert.Equal(before, await kms.SnapshotAsync());
    }

    [Fact]
    public async Task CckmAnswers400InItsShape()
    {
        var token = await kms.TokenAsync();
        string before = await kms.SnapshotAsync();
        foreach (var (path, auth) in new[] { ("/api/v1/auth/tokens", ""), ("/v1/cckm/oci/keys", $"Authorization: Bearer {token}\r\n") })
        {
            var r = await RawHttp.SendAsync(kms.Url, RawHttp.OverflowingChunk("POST", path, auth));
            Assert.Equal(400, r.Status);
            var body = Json(r);
            Assert.Equal(4, body.GetProperty("code").GetInt32());
            Assert.Contains("chunk", body.GetProperty("message").GetString(), StringComparison.OrdinalIgnoreCase);
        }
        Assert.Equal(before, await kms.SnapshotAsync());
    }
}
