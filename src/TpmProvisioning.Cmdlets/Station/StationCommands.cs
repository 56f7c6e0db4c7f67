using System.Management.Automation;
using System.Net;
using System.Security;
using System.Security.Cryptography.X509Certificates;
using TpmProvisioning.Station;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Cmdlets.Station;

/// <summary>
/// Base of the station cmdlets: local on a server's data path (<c>-DataPath</c>, the default) or remote on a running station
/// (<c>-Server</c> with an operator token or a components-CA client certificate), with the same objects either way.
/// </summary>
public abstract class StationCmdletBase : PSCmdlet
{
    /// <summary>The data path of the station (default: TPMPROV_DATA or the per-user folder).</summary>
    [Parameter(ParameterSetName = "DataPath", ValueFromPipelineByPropertyName = true)]
    public string? DataPath { get; set; }

    /// <summary>A running station, e.g. https://station:8443. Binds from a station object's Server.</summary>
    [Parameter(ParameterSetName = "Server", Mandatory = true, ValueFromPipelineByPropertyName = true)]
    public Uri? Server { get; set; }

    /// <summary>An operator token (New-StationToken) for -Server.</summary>
    [Parameter(ParameterSetName = "Server")]
    public SecureString? Token { get; set; }

    /// <summary>The CA the server's certificate must chain to: a certificate or a PEM/DER file.</summary>
    [Parameter(ParameterSetName = "Server")]
    public object? CaCertificate { get; set; }

    /// <summary>A components-CA client certificate (with private key), instead of a token.</summary>
    [Parameter(ParameterSetName = "Server")]
    public X509Certificate2? ClientCertificate { get; set; }

    protected bool Remote => ParameterSetName == "Server";

    /// <summary>Writes output tagged with its store (DataPath) or station (Server), so the next cmdlet binds it by property name.</summary>
    protected void Emit(object? value) => PipelineOrigin.Write(this, value, Remote ? null : ResolvedDataPath, Remote ? Server : null);
    protected static string Actor => $"local:{Environment.UserName}";

    protected string ResolvedDataPath => GetUnresolvedProviderPathFromPSPath(string.IsNullOrEmpty(DataPath) ? Defaults.DataPath : DataPath);

    /// <summary>Runs <paramref name="local"/> on the data path's store and station engine.</summary>
    protected T Local<T>(Func<IStore, StationService, Task<T>> local)
    {
        var dir = ResolvedDataPath;
        IStore store = Defaults.OpenStore(this, dir, Defaults.Creates(this));
        using (store)
            return local(store, new StationService(store, new StationSettings(), dir)).GetAwaiter().GetResult();
    }

    /// <summary>Runs <paramref name="remote"/> against -Server.</summary>
    protected T Call<T>(Func<StationClient, Task<T>> remote)
    {
        TransportErrors.RequireServerUri(this, Server, nameof(Server));
        var ca = CertificateInput.Load(this, CaCertificate, nameof(CaCertificate));
        using var client = new StationClient(new StationClientOptions
        {
            Server = Server!, Token = Token is null ? null : new NetworkCredential("", Token).Password, CaCertificate = ca, ClientCertificate = ClientCertificate,
        });
        var to = new TransportTarget(Server!, ca, false, ClientCertificate);
        try { return remote(client).GetAwaiter().GetResult(); }
        catch (HttpRequestException ex)
        {
            ThrowTerminatingError(TransportErrors.Classify(ex, to, Server) ?? new ErrorRecord(ex, TransportErrors.ServerUnreachable, ErrorCategory.ConnectionError, Server));
            throw;
        }
        catch (TaskCanceledException ex)
        {
            ThrowTerminatingError(new ErrorRecord(ex, "StationTimeout", ErrorCategory.OperationTimeout, Server));
            throw;
        }
    }

    /// <summary>Writes a station failure as a non-terminating error with the station's code as its id.</summary>
    protected void WriteStationError(Exception ex, object? target)
    {
        // Refused credentials (a wrong or revoked token) and a refused client certificate say so, as every remote cmdlet does.
        if (Remote && ex is StationRequestException { Status: 401 or 403 } refused
            && TransportErrors.FromStatus(refused.Status, $"{refused.Code}: {refused.Detail}", ex, new TransportTarget(Server!, null, false, ClientCertificate), target) is { } record)
        {
            WriteError(record);
            return;
        }
        var (code, status) = ex switch
        {
            StationException s => (s.Code, s.Status),
            StationRequestException r => (r.Code, r.Status),
            _ => ("StationFailed", 500),
        };
        var category = status switch
        {
            400 or 413 => ErrorCategory.InvalidArgument,
            401 => ErrorCategory.AuthenticationError,
            403 => ErrorCategory.PermissionDenied,
            404 => ErrorCategory.ObjectNotFound,
            405 => ErrorCategory.InvalidOperation,
            409 => ErrorCategory.ResourceExists,
            412 or 422 => ErrorCategory.InvalidData,
            429 => ErrorCategory.LimitsExceeded,
            503 => ErrorCategory.ResourceUnavailable,
            507 => ErrorCategory.WriteError,
            _ => ErrorCategory.InvalidResult,
        };
        WriteError(new ErrorRecord(ex, code, category, target));
    }

    /// <summary>Runs one operation, local or remote, writing a station failure as an error; default when it failed.</summary>
    protected bool TryRun<T>(Func<IStore, StationService, Task<T>> local, Func<StationClient, Task<T>> remote, object? target, out T result)
    {
        try
        {
            result = Remote ? Call(remote) : Local(local);
            return true;
        }
        catch (Exception ex) when (ex is StationException or StationRequestException)
        {
            WriteStationError(ex, target);
            result = default!;
            return false;
        }
    }
}

/// <summary>Lists the station's devices with their current state, or one device with its history.</summary>
[Cmdlet(VerbsCommon.Get, "ProvisioningDevice", DefaultParameterSetName = "DataPath")]
[OutputType(typeof(StationDevice), typeof(StationDeviceDetail))]
public sealed class GetProvisioningDeviceCommand : StationCmdletBase
{
    /// <summary>One device, with its full history.</summary>
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    public string? Serial { get; set; }

    /// <summary>Only devices whose current state is this one.</summary>
    [Parameter]
    [ArgumentCompleter(typeof(DeviceStateCompleter))]
    public string? State { get; set; }

    protected override void ProcessRecord()
    {
        if (State is not null && !DeviceStates.IsKnown(State))
        {
            WriteError(new ErrorRecord(new ArgumentException($"'{State}' is not a device state: {string.Join(", ", DeviceStates.All)}."), "INVALID_PARAMETER", ErrorCategory.InvalidArgument, State));
            return;
        }
        if (Serial is not null)
        {
            if (TryRun((_, st) => st.GetDeviceAsync(Serial), c => c.GetDeviceAsync(Serial), Serial, out var d)) Emit(d);
            return;
        }
        if (TryRun((store, _) => store.ListStationDevicesAsync(new StationDeviceQuery { State = State }), c => c.GetDevicesAsync(State), null, out var list))
            Emit(list);
    }
}

/// <summary>Completes device state names.</summary>
public sealed class DeviceStateCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, System.Management.Automation.Language.CommandAst commandAst, System.Collections.IDictionary fakeBoundParameters) =>
        DeviceStates.All.Where(s => s.StartsWith(wordToComplete, StringComparison.OrdinalIgnoreCase)).Select(s => new CompletionResult(s));
}

/// <summary>Reads a device's logs: bootstrap, triage and provisioner, one timestamped line per step.</summary>
[Cmdlet(VerbsCommon.Get, "ProvisioningDeviceLog", DefaultParameterSetName = "DataPath")]
[OutputType(typeof(DeviceLogLine))]
public sealed class GetProvisioningDeviceLogCommand : StationCmdletBase
{
    /// <summary>The device's serial.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    public string Serial { get; set; } = "";

    /// <summary>Which logs (default: all three, in the order of the flow).</summary>
    [Parameter(Position = 1)]
    public DeviceLogType[] Type { get; set; } = [DeviceLogType.Bootstrap, DeviceLogType.Triage, DeviceLogType.Provisioner];

    protected override void ProcessRecord()
    {
        foreach (var t in Type)
        {
            string name = t.ToString().ToLowerInvariant();
            if (!TryRun((_, st) => st.GetLogAsync(Serial, name), c => c.GetLogAsync(Serial, t), Serial, out var lines)) return;
            WriteObject(lines, enumerateCollection: true);
        }
    }
}

/// <summary>Lists the station's customisation scripts and hooks, or reads one with its content.</summary>
[Cmdlet(VerbsCommon.Get, "ProvisioningScript", DefaultParameterSetName = "DataPath")]
[OutputType(typeof(StationScript))]
public sealed class GetProvisioningScriptCommand : StationCmdletBase
{
    /// <summary>One script (with its content; a hook without a file gives its template).</summary>
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    public string? Name { get; set; }

    protected override void ProcessRecord()
    {
        if (Name is null)
        {
            if (TryRun((_, st) => Task.FromResult(st.Scripts.List()), c => c.ListScriptsAsync(), null, out var all)) Emit(all);
            return;
        }
        if (TryRun((_, st) => Task.FromResult(st.Scripts.Get(Name)), c => c.GetScriptAsync(Name), Name, out var one)) Emit(one);
    }
}

/// <summary>Creates or replaces a customisation script (a new script starts disabled).</summary>
[Cmdlet(VerbsCommon.Set, "ProvisioningScript", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, DefaultParameterSetName = "DataPath")]
[OutputType(typeof(StationScript))]
public sealed class SetProvisioningScriptCommand : StationCmdletBase
{
    /// <summary>The script's name, e.g. tpm-provisioner-post-provision (a trailing .ps1 is allowed).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    public string Name { get; set; } = "";

    /// <summary>The script text.</summary>
    [Parameter(Position = 1)]
    public string? Content { get; set; }

    /// <summary>A file whose text is the script, instead of -Content.</summary>
    [Parameter]
    public string? Path { get; set; }

    /// <summary>Also enable the script.</summary>
    [Parameter]
    public SwitchParameter Enable { get; set; }

    protected override void ProcessRecord()
    {
        if ((Content is null) == (Path is null))
        {
            WriteError(new ErrorRecord(new ArgumentException("Give the script as -Content or -Path (one of them)."), "ContentOrPathRequired", ErrorCategory.InvalidArgument, Name));
            return;
        }
        string text;
        try { text = Content ?? File.ReadAllText(GetUnresolvedProviderPathFromPSPath(Path!)); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            WriteError(new ErrorRecord(ex, "ScriptFileUnreadable", ErrorCategory.ReadError, Path));
            return;
        }
        if (!ShouldProcess(Name, Enable ? "Save and enable station script" : "Save station script")) return;
        if (!TryRun((_, st) => Task.FromResult(st.Scripts.Save(Name, text)), c => c.SaveScriptAsync(Name, text), Name, out var saved)) return;
        if (Enable && !TryRun((_, st) => Task.FromResult(st.Scripts.SetEnabled(Name, true)),
                async c => { await c.ScriptOperationAsync("enable", Name); return await c.GetScriptAsync(Name); }, Name, out saved)) return;
        Emit(saved with { Content = null });
    }
}

/// <summary>Base of Enable-, Disable- and Remove-ProvisioningScript.</summary>
public abstract class ProvisioningScriptChangeBase : StationCmdletBase
{
    /// <summary>The script's name.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    public string Name { get; set; } = "";

    /// <summary>Write the script afterwards (not for Remove).</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected void Change(string operation, string action)
    {
        if (!ShouldProcess(Name, action)) return;
        if (!TryRun<StationScript?>((_, st) => Task.FromResult<StationScript?>(operation switch
            {
                "enable" => st.Scripts.SetEnabled(Name, true),
                "disable" => st.Scripts.SetEnabled(Name, false),
                _ => Delete(st),
            }),
            async c => { await c.ScriptOperationAsync(operation, Name); return operation == "delete" ? null : await c.GetScriptAsync(Name) with { Content = null }; },
            Name, out var script)) return;
        if (PassThru && script is not null) Emit(script);
    }

    private StationScript? Delete(StationService st)
    {
        st.Scripts.Delete(Name);
        return null;
    }
}

/// <summary>Enables a script: its hook runs when its stage fires.</summary>
[Cmdlet(VerbsLifecycle.Enable, "ProvisioningScript", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, DefaultParameterSetName = "DataPath")]
[OutputType(typeof(StationScript))]
public sealed class EnableProvisioningScriptCommand : ProvisioningScriptChangeBase
{
    protected override void ProcessRecord() => Change("enable", "Enable station script");
}

/// <summary>Disables a script: it stays on disk but no longer runs.</summary>
[Cmdlet(VerbsLifecycle.Disable, "ProvisioningScript", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, DefaultParameterSetName = "DataPath")]
[OutputType(typeof(StationScript))]
public sealed class DisableProvisioningScriptCommand : ProvisioningScriptChangeBase
{
    protected override void ProcessRecord() => Change("disable", "Disable station script");
}

/// <summary>Deletes a script.</summary>
[Cmdlet(VerbsCommon.Remove, "ProvisioningScript", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High, DefaultParameterSetName = "DataPath")]
public sealed class RemoveProvisioningScriptCommand : ProvisioningScriptChangeBase
{
    protected override void ProcessRecord() => Change("delete", "Delete station script");
}

/// <summary>A new station operator token: <see cref="Token"/> is the secret, here and nowhere else.</summary>
public sealed class StationTokenSecret
{
    public string TokenId { get; init; } = "";
    public string Name { get; init; } = "";
    public DateTimeOffset Created { get; init; }
    /// <summary>The token to send as Authorization: Bearer; shown once, never stored.</summary>
    public SecureString Token { get; init; } = new();
}

/// <summary>Base of the token cmdlets: tokens are managed on the data path only.</summary>
public abstract class StationTokenCmdletBase : PSCmdlet
{
    /// <summary>The data path of the station.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? DataPath { get; set; }

    /// <summary>The data path in effect.</summary>
    protected string TokenDataPath => GetUnresolvedProviderPathFromPSPath(string.IsNullOrEmpty(DataPath) ? Defaults.DataPath : DataPath);

    protected T WithTokens<T>(Func<StationTokenManager, Task<T>> op)
    {
        var dir = TokenDataPath;
        IStore store = Defaults.OpenStore(this, dir, Defaults.Creates(this));
        using (store) return op(new StationTokenManager(store)).GetAwaiter().GetResult();
    }
}

/// <summary>Creates a station operator token (stored hashed; the secret is returned once).</summary>
[Cmdlet(VerbsCommon.New, "StationToken", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(StationTokenSecret))]
public sealed class NewStationTokenCommand : StationTokenCmdletBase
{
    /// <summary>A label for people: who or what uses the token.</summary>
    [Parameter(Mandatory = true, Position = 0)]
    public string Name { get; set; } = "";

    protected override void ProcessRecord()
    {
        if (!ShouldProcess(Name, "Create station operator token")) return;
        NewStationToken t;
        try { t = WithTokens(m => m.CreateAsync(Name, $"local:{Environment.UserName}")); }
        catch (ArgumentException ex)
        {
            WriteError(new ErrorRecord(ex, "INVALID_LABEL", ErrorCategory.InvalidArgument, Name));
            return;
        }
        var secure = new SecureString();
        foreach (char c in t.Token) secure.AppendChar(c);
        secure.MakeReadOnly();
        PipelineOrigin.Write(this, new StationTokenSecret { TokenId = t.Info.TokenId, Name = t.Info.Name, Created = t.Info.Created, Token = secure }, TokenDataPath, null);
    }
}

/// <summary>Lists the station's operator tokens (never their secrets).</summary>
[Cmdlet(VerbsCommon.Get, "StationToken")]
[OutputType(typeof(StationTokenInfo))]
public sealed class GetStationTokenCommand : StationTokenCmdletBase
{
    protected override void ProcessRecord() => PipelineOrigin.Write(this, WithTokens(m => m.ListAsync()), TokenDataPath, null);
}

/// <summary>Revokes a station operator token.</summary>
[Cmdlet(VerbsCommon.Remove, "StationToken", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
public sealed class RemoveStationTokenCommand : StationTokenCmdletBase
{
    /// <summary>The token's id.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    public string TokenId { get; set; } = "";

    protected override void ProcessRecord()
    {
        if (!ShouldProcess(TokenId, "Revoke station operator token")) return;
        if (!WithTokens(m => m.RemoveAsync(TokenId, $"local:{Environment.UserName}")))
            WriteError(new ErrorRecord(new ItemNotFoundException($"No station token '{TokenId}'."), "TOKEN_NOT_FOUND", ErrorCategory.ObjectNotFound, TokenId));
    }
}

/// <summary>Whether a scanned QR text matches a manufacturing record.</summary>
public sealed record DeviceQrCheck(string Text, bool Exists, string? Serial, string? Vendor, long? RecordId);

/// <summary>Checks scanned QR text (a label's payload or a serial) against the manufacturing records.</summary>
[Cmdlet(VerbsDiagnostic.Test, "DeviceQrCode", DefaultParameterSetName = "DataPath")]
[OutputType(typeof(DeviceQrCheck))]
public sealed class TestDeviceQrCodeCommand : StationCmdletBase
{
    /// <summary>The scanned text.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [Alias("Payload")]
    [ValidateLength(1, 1024)]
    public string Text { get; set; } = "";

    protected override void ProcessRecord()
    {
        if (TryRun(async (_, st) => await st.MatchQrAsync(Text) is { } r ? (true, r.Serial, r.Vendor, (long?)r.Id) : (false, null, null, null),
                async c => { var v = await c.VerifyQrCodeAsync(Text); return (v.Exists, v.Serial, v.Vendor, v.RecordId); }, Text, out var m))
            WriteObject(new DeviceQrCheck(Text, m.Item1, m.Item2, m.Item3, m.Item4));
    }
}

/// <summary>Remote station calls for cmdlets that are not station cmdlets (Get-ManufacturingRecord, Get-ProvisioningAuditLog).</summary>
internal static class StationRemote
{
    public static T Run<T>(PSCmdlet cmdlet, Uri server, SecureString? token, object? caCertificate, X509Certificate2? clientCertificate, Func<StationClient, Task<T>> op)
    {
        TransportErrors.RequireServerUri(cmdlet, server, "Server");
        var ca = CertificateInput.Load(cmdlet, caCertificate, "CaCertificate");
        using var client = new StationClient(new StationClientOptions
        {
            Server = server, Token = token is null ? null : new NetworkCredential("", token).Password, CaCertificate = ca, ClientCertificate = clientCertificate,
        });
        var to = new TransportTarget(server, ca, false, clientCertificate);
        try { return op(client).GetAwaiter().GetResult(); }
        catch (StationRequestException ex) when (TransportErrors.FromStatus(ex.Status, ex.Detail, ex, to, server) is { } refused)
        {
            cmdlet.ThrowTerminatingError(refused);
            throw;
        }
        catch (HttpRequestException ex) when (TransportErrors.Classify(ex, to, server) is { } transport)
        {
            cmdlet.ThrowTerminatingError(transport);
            throw;
        }
        catch (StationRequestException ex)
        {
            cmdlet.ThrowTerminatingError(new ErrorRecord(ex, ex.Code, ex.Status is 401 ? ErrorCategory.AuthenticationError : ex.Status is 403 ? ErrorCategory.PermissionDenied : ErrorCategory.InvalidOperation, server));
            throw;
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
        {
            cmdlet.ThrowTerminatingError(new ErrorRecord(ex, ex is TaskCanceledException ? "StationTimeout" : TransportErrors.ServerUnreachable, ex is TaskCanceledException ? ErrorCategory.OperationTimeout : ErrorCategory.ConnectionError, server));
            throw;
        }
    }
}
