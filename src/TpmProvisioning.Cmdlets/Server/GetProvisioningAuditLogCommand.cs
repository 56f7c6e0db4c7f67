using System.Management.Automation;
using TpmProvisioning.Hosting;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Cmdlets;

/// <summary>Reads the audit log of a server's store: who changed what, from where, when, and the outcome.</summary>
[Cmdlet(VerbsCommon.Get, "ProvisioningAuditLog", DefaultParameterSetName = "Server")]
[OutputType(typeof(AuditEntry))]
public sealed class GetProvisioningAuditLogCommand : PSCmdlet
{
    /// <summary>A server whose store to read.</summary>
    [Parameter(ParameterSetName = "Server", ValueFromPipeline = true, Position = 0)]
    public ServerInfo? InputObject { get; set; }

    /// <summary>A data path whose store to read (the server need not run).</summary>
    [Parameter(ParameterSetName = "DataPath", Mandatory = true)]
    [ValidateNotNullOrEmpty]
    public string? DataPath { get; set; }

    /// <summary>A running station to read instead (its /auditlog route).</summary>
    [Parameter(ParameterSetName = "Station", Mandatory = true)]
    public Uri? Server { get; set; }

    /// <summary>An operator token (New-StationToken) for -Server.</summary>
    [Parameter(ParameterSetName = "Station")]
    public System.Security.SecureString? Token { get; set; }

    /// <summary>The CA the station's certificate must chain to: a certificate or a PEM/DER file.</summary>
    [Parameter(ParameterSetName = "Station")]
    public object? CaCertificate { get; set; }

    /// <summary>A components-CA client certificate (with private key), instead of a token.</summary>
    [Parameter(ParameterSetName = "Station")]
    public System.Security.Cryptography.X509Certificates.X509Certificate2? ClientCertificate { get; set; }

    /// <summary>Only entries at or after this time.</summary>
    [Parameter]
    public DateTime? Since { get; set; }

    /// <summary>Only this action, e.g. server.start.</summary>
    [Parameter]
    public string? Action { get; set; }

    /// <summary>Only this outcome.</summary>
    [Parameter]
    public AuditOutcome? Outcome { get; set; }

    /// <summary>At most this many entries, newest first.</summary>
    [Parameter]
    [ValidateRange(1, 1000000)]
    public int Last { get; set; } = 100;

    protected override void ProcessRecord()
    {
        if (ParameterSetName == "Station")
        {
            var query = new AuditQuery { Since = Since is { } since ? new DateTimeOffset(since) : null, Action = Action, Outcome = Outcome, Limit = Math.Min(Last, 10_000) };
            WriteObject(Station.StationRemote.Run(this, Server!, Token, CaCertificate, ClientCertificate, c => c.GetAuditAsync(query)), enumerateCollection: true);
            return;
        }
        string path = ParameterSetName == "DataPath"
            ? GetUnresolvedProviderPathFromPSPath(DataPath!)
            : (InputObject?.DataPath ?? Defaults.DataPath);
        // The data path's store: the PostgreSQL store its server recorded there, else its SQLite file.
        using var store = DataPathStore.OpenExisting(this, path);
        if (store is null) return;
        var entries = store.QueryAuditAsync(new AuditQuery
        {
            Since = Since is { } s ? new DateTimeOffset(s) : null,
            Action = Action,
            Outcome = Outcome,
            Limit = Last,
        }).GetAwaiter().GetResult();
        WriteObject(entries, enumerateCollection: true);
    }
}
