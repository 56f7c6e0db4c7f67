using System.IO.Compression;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TpmProvisioning.Attestation;
using TpmProvisioning.Server.Roles;

namespace TpmProvisioning.Tests.Keylime;

/// <summary>
/// Keylime's bootstrap key and payload against the real agent on swtpm over mutual TLS: the tenant's U and the verifier's V
/// encrypted under the NK the agent serves, <c>keys/verify</c>, the payload's files and its autorun.ps1, and refusals.
/// </summary>
public sealed partial class AgentTests
{
    /// <summary>pwsh from PATH, else the PowerShell tool package's own host in the NuGet cache.</summary>
    private static string PwshPath()
    {
        foreach (var d in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
            if (File.Exists(Path.Combine(d, "pwsh"))) return Path.Combine(d, "pwsh");
        var cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        return Path.Combine(cache, "powershell", "7.6.9", "tools", "net10.0", "any", "unix", "pwsh");
    }

    private async Task<(HttpStatusCode, JsonElement)> PostAsync(string path, string json, HttpClient? client = null)
    {
        using var resp = await (client ?? verifier).PostAsync(agent.Info.Urls[0] + path, new StringContent(json, Encoding.UTF8, "application/json"));
        var text = await resp.Content.ReadAsStringAsync();
        return (resp.StatusCode, text.Length == 0 ? default : JsonDocument.Parse(text).RootElement.Clone());
    }

    private async Task<string> NkPemAsync()
    {
        var (_, body) = await GetAsync("/v2.1/keys/pubkey");
        return body.GetProperty("results").GetProperty("pubkey").GetString()!;
    }

    private static string UBody(KeylimePayload p, string pem, string agent, byte[]? u = null) => new JsonObject
    {
        ["encrypted_key"] = KeylimePayload.EncryptKeyShare(pem, u ?? p.U),
        ["auth_tag"] = p.AuthTag(agent),
        ["payload"] = p.EncryptedPayload,
    }.ToJsonString();

    private static string VBody(string pem, byte[] v) => new JsonObject { ["encrypted_key"] = KeylimePayload.EncryptKeyShare(pem, v) }.ToJsonString();

    [Fact]
    public async Task PayloadRoundTripOverMutualTls()
    {
        using var zip = new MemoryStream();
        using (var z = new ZipArchive(zip, ZipArchiveMode.Create, true))
        {
            using (var w = new StreamWriter(z.CreateEntry("certs/ca.pem").Open())) w.Write("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n");
            using (var w = new StreamWriter(z.CreateEntry(AgentPayloadReceiver.ScriptName).Open()))
                w.Write("Set-Content -Path ran.txt -Value \"ran for $env:AGENT_UUID in $((Get-Location).Path)\" -NoNewline");
        }
        var p = KeylimePayload.Create(zip.ToArray());
        var pem = await NkPemAsync();

        // Before both shares: verify answers 400.
        var (st, body) = await GetAsync("/v2.1/keys/verify?challenge=abc123");
        Assert.Equal(HttpStatusCode.BadRequest, st);
        Assert.Equal(400, body.GetProperty("code").GetInt32());

        // The tenant sends U with the payload, the verifier V.
        (st, body) = await PostAsync("/v2.1/keys/ukey", UBody(p, pem, agentId));
        Assert.Equal(HttpStatusCode.OK, st);
        Assert.Equal(200, body.GetProperty("code").GetInt32());
        Assert.Equal(HttpStatusCode.BadRequest, (await GetAsync("/v2.1/keys/verify?challenge=abc123")).Item1);
        (st, _) = await PostAsync("/v2.1/keys/vkey", VBody(pem, p.V));
        Assert.Equal(HttpStatusCode.OK, st);

        // The tenant's check: HMAC-SHA384(K, challenge).
        const string challenge = "Q1w2E3r4T5y6U7i8O9p0";
        (st, body) = await GetAsync("/v2.1/keys/verify?challenge=" + challenge);
        Assert.Equal(HttpStatusCode.OK, st);
        var hmac = body.GetProperty("results").GetProperty("hmac").GetString();
        Assert.Equal(Convert.ToHexStringLower(HMACSHA384.HashData(p.K, Encoding.ASCII.GetBytes(challenge))), hmac);

        // The payload is in the private folder under the data path, and autorun.ps1 ran there (enabled for this agent).
        var secure = Path.Combine(AgentRole.StateDirectory(agentData), "secure");
        var unzipped = Path.Combine(secure, AgentPayloadReceiver.UnzippedFolder);
        Assert.StartsWith("-----BEGIN CERTIFICATE-----", File.ReadAllText(Path.Combine(unzipped, "certs", "ca.pem")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(secure));
        // The script runs in the background: wait for its file and its whole content (it may be seen half written).
        var ran = Path.Combine(unzipped, "ran.txt");
        string expected = $"ran for {agentId} in {unzipped}", seen = "";
        for (int i = 0; i < 300 && seen != expected; i++)
        {
            await Task.Delay(100);
            try { seen = File.Exists(ran) ? File.ReadAllText(ran) : ""; } catch (IOException) { }
        }
        Assert.Equal(expected, seen);
    }

    [Fact]
    public async Task AWrongUOrVIsRefusedAndVerifyStays400()
    {
        var p = KeylimePayload.Create("payload"u8.ToArray());
        var pem = await NkPemAsync();
        // Wrong U (a random share with the real tag), then the real V: no key.
        Assert.Equal(HttpStatusCode.OK, (await PostAsync("/v2.1/keys/ukey", UBody(p, pem, agentId, RandomNumberGenerator.GetBytes(32)))).Item1);
        Assert.Equal(HttpStatusCode.OK, (await PostAsync("/v2.1/keys/vkey", VBody(pem, p.V))).Item1);
        Assert.Equal(HttpStatusCode.BadRequest, (await GetAsync("/v2.1/keys/verify?challenge=abc")).Item1);
        // Wrong V only, with the right U of another exchange: no key either.
        var q = KeylimePayload.Create(null);
        Assert.Equal(HttpStatusCode.OK, (await PostAsync("/v2.1/keys/ukey", UBody(q, pem, agentId))).Item1);
        Assert.Equal(HttpStatusCode.OK, (await PostAsync("/v2.1/keys/vkey", VBody(pem, RandomNumberGenerator.GetBytes(32)))).Item1);
        Assert.Equal(HttpStatusCode.BadRequest, (await GetAsync("/v2.1/keys/verify?challenge=abc")).Item1);
        Assert.False(File.Exists(Path.Combine(AgentRole.StateDirectory(agentData), "secure", AgentPayloadReceiver.DecryptedPayloadFile)));
        // The right V of q completes q's pair.
        Assert.Equal(HttpStatusCode.OK, (await PostAsync("/v2.1/keys/vkey", VBody(pem, q.V))).Item1);
        var (st, body) = await GetAsync("/v2.1/keys/verify?challenge=abc");
        Assert.Equal(HttpStatusCode.OK, st);
        Assert.Equal(KeylimePayload.Hmac(q.K, "abc"), body.GetProperty("results").GetProperty("hmac").GetString());
    }

    [Theory]
    [InlineData("/v2.1/keys/ukey", "not json")]
    [InlineData("/v2.1/keys/ukey", "{\"encrypted_key\":\"AAAA\",\"auth_tag\":\"00\"}")]
    [InlineData("/v2.1/keys/ukey", "{\"auth_tag\":\"00\"}")]
    [InlineData("/v2.1/keys/vkey", "[1,2]")]
    [InlineData("/v2.1/keys/vkey", "{\"encrypted_key\":\"!!\"}")]
    [InlineData("/v2.1/keys/vkey", "{\"encrypted_key\":\"AAAA\"}")]
    public async Task MalformedKeyBodiesAre400InTheEnvelope(string path, string json)
    {
        var (st, body) = await PostAsync(path, json);
        Assert.Equal(HttpStatusCode.BadRequest, st);
        Assert.Equal(400, body.GetProperty("code").GetInt32());
        Assert.Equal(JsonValueKind.Object, body.GetProperty("results").ValueKind);
        Assert.NotEqual("Success", body.GetProperty("status").GetString());
    }

    /// <summary>
    /// Posts a body over the route's cap. The server refuses it as soon as it knows (from Content-Length, before reading): the
    /// client either reads the 413 or, when the refusal and close arrive while it is still sending, gets a reset (broken pipe).
    /// Both are the refusal; any answer other than 413 (the body accepted, or refused for another reason) fails.
    /// </summary>
    private async Task AssertTooLargeAsync(string path, string json)
    {
        HttpStatusCode st;
        JsonElement body;
        try { (st, body) = await PostAsync(path, json); }
        catch (HttpRequestException ex) when (IsReset(ex)) { return; }
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, st);
        Assert.Equal(413, body.GetProperty("code").GetInt32());
    }

    /// <summary>A connection the server closed while the request was being written (broken pipe, reset, response ended).</summary>
    internal static bool IsReset(HttpRequestException ex)
    {
        for (Exception? e = ex; e is not null; e = e.InnerException)
            if (e is IOException or System.Net.Sockets.SocketException) return true;
        return ex.HttpRequestError is HttpRequestError.ResponseEnded;
    }

    [Fact]
    public async Task OversizeBodiesAndCallersWithoutACertificateAreRefused()
    {
        var big = "{\"encrypted_key\":\"AAAA\",\"auth_tag\":\"00\",\"payload\":\"" + new string('A', KeylimePayload.MaxEncryptedPayloadChars + 128 * 1024) + "\"}";
        await AssertTooLargeAsync("/v2.1/keys/ukey", big);
        await AssertTooLargeAsync("/v2.1/keys/vkey", "{\"encrypted_key\":\"" + new string('A', 100 * 1024) + "\"}");

        var p = KeylimePayload.Create(null);
        var pem = await NkPemAsync();
        Assert.Equal(HttpStatusCode.Unauthorized, (await PostAsync("/v2.1/keys/ukey", UBody(p, pem, agentId), anonymous)).Item1);
        Assert.Equal(HttpStatusCode.Unauthorized, (await PostAsync("/v2.1/keys/vkey", VBody(pem, p.V), anonymous)).Item1);
        Assert.Equal(HttpStatusCode.Unauthorized, (await GetAsync("/v2.1/keys/verify?challenge=abc", anonymous)).Item1);
    }

    [Fact]
    public async Task AnOverflowingChunkSizeIs400InTheEnvelope()
    {
        foreach (var path in new[] { "/v2.1/keys/ukey", "/v2.1/keys/vkey" })
        {
            var r = await Hardening.RawHttp.SendAsync(agent.Info.Urls[0], Hardening.RawHttp.OverflowingChunk("POST", path), verifierCert);
            Assert.Equal(400, r.Status);
            var body = JsonDocument.Parse(r.Body).RootElement;
            Assert.Equal(400, body.GetProperty("code").GetInt32());
            Assert.Contains("chunk", body.GetProperty("status").GetString(), StringComparison.OrdinalIgnoreCase);
        }
        Assert.False(File.Exists(Path.Combine(AgentRole.StateDirectory(agentData), "secure", AgentPayloadReceiver.DecryptedPayloadFile)));
    }
}
