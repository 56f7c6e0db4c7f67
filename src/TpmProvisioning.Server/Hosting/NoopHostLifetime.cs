using Microsoft.Extensions.Hosting;

namespace TpmProvisioning.Server.Hosting;

/// <summary>
/// The host runs inside an interactive pwsh: the default console lifetime would take over SIGTERM and Ctrl+C
/// from PowerShell. The server's life is its owner's StopAsync instead.
/// </summary>
internal sealed class NoopHostLifetime : IHostLifetime
{
    public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
