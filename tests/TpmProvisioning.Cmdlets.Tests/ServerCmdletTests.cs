using System.Management.Automation;
using System.Management.Automation.Runspaces;
using TpmProvisioning.Hosting;

namespace TpmProvisioning.Tests;

/// <summary>Drives the server cmdlets in an in-process runspace (the real module is exercised by Pester in a fresh pwsh).</summary>
public sealed class ServerCmdletTests : IDisposable
{
    private readonly string _data = Directory.CreateTempSubdirectory("tpmprov-cmd-").FullName;
    private readonly Runspace _rs;

    public ServerCmdletTests()
    {
        var iss = InitialSessionState.CreateDefault2();
        iss.ImportPSModule(typeof(TpmProvisioning.Cmdlets.StartProvisioningServerCommand).Assembly.Location);
        _rs = RunspaceFactory.CreateRunspace(iss);
        _rs.Open();
    }

    public void Dispose()
    {
        Run("Get-ProvisioningServer | Stop-ProvisioningServer -Confirm:$false");
        _rs.Dispose();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(_data, true); } catch (IOException) { }
    }

    private (List<PSObject> Output, List<ErrorRecord> Errors) Run(string script, params (string, object)[] vars)
    {
        using var ps = PowerShell.Create();
        ps.Runspace = _rs;
        foreach (var (n, v) in vars) _rs.SessionStateProxy.SetVariable(n, v);
        ps.AddScript(script);
        try
        {
            var output = ps.Invoke().ToList();
            return (output, ps.Streams.Error.ToList());
        }
        catch (RuntimeException ex)
        {
            return ([], [ex.ErrorRecord]);
        }
    }

    [Fact]
    public void StartGetStopThroughThePipeline()
    {
        var (o, e) = Run("Start-ProvisioningServer -Port 0 -DataPath $d -Name alpha -Role Provisioning,Registrar", ("d", _data));
        Assert.Empty(e);
        var info = (ServerInfo)Assert.Single(o).BaseObject;
        Assert.Equal("alpha", info.Name);
        Assert.Equal(ServerRole.Provisioning | ServerRole.Registrar, info.Roles);

        (o, _) = Run("Get-ProvisioningServer -Name al*");
        Assert.Equal(info.Id, ((ServerInfo)Assert.Single(o).BaseObject).Id);

        (o, _) = Run("Get-ProvisioningServer -Name alpha | Stop-ProvisioningServer -WhatIf; (Get-ProvisioningServer -Name alpha).State");
        Assert.Equal(ServerState.Running, Assert.Single(o).BaseObject);

        (o, e) = Run("Get-ProvisioningServer -Name alpha | Stop-ProvisioningServer -PassThru -Confirm:$false");
        Assert.Empty(e);
        Assert.Equal(ServerState.Stopped, ((ServerInfo)Assert.Single(o).BaseObject).State);
        (o, e) = Run("Get-ProvisioningServer -Name alpha");
        Assert.Empty(o);
        Assert.Equal("ServerNotFound,TpmProvisioning.Cmdlets.GetProvisioningServerCommand", Assert.Single(e).FullyQualifiedErrorId);
    }

    [Fact]
    public void ASecondStartOnTheSamePortIsATerminatingPortInUseError()
    {
        var (o, _) = Run("Start-ProvisioningServer -Port 0 -DataPath $d", ("d", _data));
        var port = ((ServerInfo)o[0].BaseObject).Port;
        var (_, e) = Run($"Start-ProvisioningServer -Port {port} -DataPath $d", ("d", Path.Combine(_data, "2")));
        var err = Assert.Single(e);
        Assert.StartsWith("ServerStartPortInUse", err.FullyQualifiedErrorId);
        Assert.Equal(ErrorCategory.ResourceUnavailable, err.CategoryInfo.Category);
        Assert.Contains("already in use", err.Exception.Message);
    }

    [Fact]
    public void AuditLogIsReadableFromTheDataPath()
    {
        Run("Start-ProvisioningServer -Port 0 -DataPath $d | Stop-ProvisioningServer -Confirm:$false", ("d", _data));
        var (o, e) = Run("Get-ProvisioningAuditLog -DataPath $d | ForEach-Object Action", ("d", _data));
        Assert.Empty(e);
        Assert.Equal(["server.stop", "server.start"], o.Select(x => (string)x.BaseObject));
    }

    [Fact]
    public void AnInvalidAddressIsRejectedBeforeAnythingStarts()
    {
        var (o, e) = Run("Start-ProvisioningServer -Address 'not-an-ip' -Port 0 -DataPath $d", ("d", _data));
        Assert.Empty(o);
        Assert.StartsWith("InvalidAddress", Assert.Single(e).FullyQualifiedErrorId);
        Assert.False(File.Exists(Path.Combine(_data, "tpmprovisioning.db")));
    }
}
