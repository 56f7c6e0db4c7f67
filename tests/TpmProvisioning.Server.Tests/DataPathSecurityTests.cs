using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Data.Sqlite;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Tests.Keylime;

namespace TpmProvisioning.Tests;

/// <summary>
/// A data path holds keys, the database and its WAL, and logs: everything in it is the owner's alone (folders 0700, files
/// 0600), and the secrets a tenant hands the verifier (its private revocation key, its V share) are sealed with a master key
/// before they reach the database.
/// </summary>
public sealed class DataPathSecurityTests : IAsyncDisposable
{
    private readonly string dataPath = Path.Combine(Directory.CreateTempSubdirectory("tpmprov-sec-").FullName, "data");

    public async ValueTask DisposeAsync()
    {
        SqliteConnection.ClearAllPools();
        await Task.Yield();
        try { Directory.Delete(Path.GetDirectoryName(dataPath)!, true); } catch (IOException) { }
    }

    private const UnixFileMode GroupOrOther = UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute
        | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

    [Fact]
    public async Task EveryFileIsOwnerOnlyAndTheTenantsSecretsAreSealed()
    {
        if (OperatingSystem.IsWindows()) return;
        // An older data path, as an earlier version or a restore left it: world-readable folders and files.
        Directory.CreateDirectory(Path.Combine(dataPath, "logs"));
        File.WriteAllText(Path.Combine(dataPath, "notes.txt"), "left by a restore");
        File.SetUnixFileMode(dataPath, (UnixFileMode)0b111_101_101);
        File.SetUnixFileMode(Path.Combine(dataPath, "logs"), (UnixFileMode)0b111_101_101);
        File.SetUnixFileMode(Path.Combine(dataPath, "notes.txt"), (UnixFileMode)0b110_100_100);

        var (host, store, serverCa) = await ScratchServer.StartAsync(dataPath, [], ServerRole.Verifier, null);
        using var revocationKey = RSA.Create(2048);
        string revocationPem = revocationKey.ExportPkcs8PrivateKeyPem();
        string agentId = Guid.NewGuid().ToString();
        var body = JsonNode.Parse(KeylimeTestServer.Seed("verifier-post-agent.request.json"))!.AsObject();
        using (var k = ECDsa.Create(ECCurve.NamedCurves.nistP256))
        using (var agentCert = new CertificateRequest("CN=agent", k, HashAlgorithmName.SHA256).CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddYears(1)))
            body["mtls_cert"] = agentCert.ExportCertificatePem();
        body["revocation_key"] = revocationPem;
        body["cloudagent_port"] = 9; // nobody answers: the verifier keeps retrying, which is all this test needs
        string v = body["v"]!.GetValue<string>();
        try
        {
            using (var cca = ComponentCa.LoadOrCreate(Path.Combine(dataPath, "ca")))
            using (var tenant = KeylimeTestServer.Client(serverCa, cca.IssueClientCertificate("tenant")))
            {
                using var resp = await tenant.PostAsync($"{host.Info.Urls[0]}/v2.1/agents/{agentId}", new StringContent(body.ToJsonString()));
                Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
            }
            var stored = await store.GetVerifierAgentAsync(agentId);
            Assert.StartsWith(TpmProvisioning.Kms.SecretSealer.Prefix, stored!.Config.RevocationKey);
            Assert.StartsWith(TpmProvisioning.Kms.SecretSealer.Prefix, stored.Config.V);
            Assert.True(host.RecentLog(200).Any(e => e.Message.Contains("now owner-only") && e.Message.Contains("notes.txt")), "no warning about the loosened files");
        }
        finally { await ScratchServer.StopAsync(host, store, Path.Combine(dataPath, "..", "never")); }

        // Nothing under the data path is readable by group or others, including files the server created (database, WAL,
        // logs, TLS and CA keys, the verifier's key file) and those it found.
        var all = new DirectoryInfo(dataPath).EnumerateFileSystemInfos("*", SearchOption.AllDirectories).Append(new DirectoryInfo(dataPath)).ToList();
        Assert.Contains(all, f => f.Name == "tpmprovisioning.db-wal" || f.Name == "tpmprovisioning.db");
        Assert.Contains(all, f => f.FullName.Contains($"{Path.DirectorySeparatorChar}logs{Path.DirectorySeparatorChar}"));
        foreach (var f in all)
            Assert.True((f.UnixFileMode & GroupOrOther) == 0, $"{f.FullName} is {Convert.ToString((int)f.UnixFileMode, 8)}");

        // The database files hold neither the revocation key nor V, in any form a reader could use.
        var pemBody = revocationPem.Split('\n')[1];
        var vBytes = Convert.FromBase64String(v);
        foreach (var file in Directory.GetFiles(dataPath, "tpmprovisioning.db*"))
        {
            var raw = File.ReadAllBytes(file);
            var text = Encoding.Latin1.GetString(raw);
            Assert.DoesNotContain(pemBody, text);
            Assert.DoesNotContain(v, text);
            Assert.True(raw.AsSpan().IndexOf(vBytes) < 0, $"{file} holds V's bytes");
        }
    }
}
