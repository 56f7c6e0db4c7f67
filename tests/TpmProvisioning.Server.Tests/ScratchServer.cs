using System.Security.Cryptography.X509Certificates;
using Microsoft.Data.Sqlite;
using TpmProvisioning.Hosting;
using TpmProvisioning.Pki;
using TpmProvisioning.Server.Hosting;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Tests;

/// <summary>
/// Starts and stops a real server (HTTPS on a free loopback port) in a scratch data path that trusts the given TPM
/// manufacturers, with a second store on its database as an admin session would open it.
/// </summary>
internal static class ScratchServer
{
    public static async Task<(IServerHost Host, SqliteStore Store, X509Certificate2 ServerCa)> StartAsync(string dataPath,
        IEnumerable<(X509Certificate2 Root, X509Certificate2? Issuer)> manufacturers, ServerRole roles, Action<ServerOptions>? configure)
    {
        foreach (var (root, issuer) in manufacturers)
        {
            EkTrustStore.Add(dataPath, root, EkTrustKind.Root);
            if (issuer is not null) EkTrustStore.Add(dataPath, issuer, EkTrustKind.Intermediate);
        }
        var o = new ServerOptions { DataPath = dataPath, Port = 0, Roles = roles };
        configure?.Invoke(o);
        var host = await ProvisioningServerHost.StartAsync(o);
        var store = await SqliteStore.OpenAsync(Path.Combine(dataPath, "tpmprovisioning.db"));
        var ca = X509Certificate2.CreateFromPem(File.ReadAllText(host.Info.CaCertificatePath!));
        return (host, store, ca);
    }

    public static async Task StopAsync(IServerHost? host, IStore? store, string dataPath)
    {
        if (host is not null) await host.StopAsync();
        store?.Dispose();
        SqliteConnection.ClearAllPools();
        try { Directory.Delete(dataPath, true); } catch (IOException) { }
    }
}
