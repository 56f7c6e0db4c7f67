using System.Management.Automation;
using System.Security;
using TpmProvisioning.Kms;

namespace TpmProvisioning.Cmdlets;

/// <summary>Creates a KMS user: who may open vSphere sessions and get CipherTrust bearer tokens on the server. Local only.</summary>
[Cmdlet(VerbsCommon.New, "KmsUser", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, DefaultParameterSetName = "Password")]
[OutputType(typeof(KmsUser))]
public sealed class NewKmsUserCommand : KmsLocalCmdletBase
{
    /// <summary>The user name.</summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = "Password", ValueFromPipelineByPropertyName = true)]
    [Alias("UserName")]
    public string Name { get; set; } = "";

    /// <summary>The password (at least 8 characters).</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Password")]
    public SecureString Password { get; set; } = new();

    /// <summary>The user name and password as one credential.</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Credential")]
    [Credential]
    public PSCredential Credential { get; set; } = PSCredential.Empty;

    /// <summary>Administrator (create, change, delete) or ReadOnly (list and read); default ReadOnly.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public KmsUserRole Role { get; set; } = KmsUserRole.ReadOnly;

    protected override void ProcessRecord()
    {
        var name = ParameterSetName == "Credential" ? Credential.UserName : Name;
        if (!ShouldProcess(ResolvedDataPath, $"Create KMS user '{name}' ({Role})")) return;
        var password = ParameterSetName == "Credential" ? Credential.GetNetworkCredential().Password : NewKmsProviderCommand.Plain(Password);
        using var local = OpenLocal(mayCreate: true)!;
        Try(() =>
        {
            var u = local.Engine.CreateUserAsync(name, password, Role, LocalCaller).GetAwaiter().GetResult();
            Emit(new KmsUser { Name = u.Name, Role = u.Role, Created = KmsTime.Ms(u.Created) });
        }, name);
    }
}

/// <summary>Lists the KMS users of a data path (never their password hashes). Local only.</summary>
[Cmdlet(VerbsCommon.Get, "KmsUser")]
[OutputType(typeof(KmsUser))]
public sealed class GetKmsUserCommand : KmsLocalCmdletBase
{
    /// <summary>User names to show (wildcards allowed); default every user.</summary>
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("UserName")]
    [SupportsWildcards]
    public string[]? Name { get; set; }

    protected override void ProcessRecord()
    {
        using var local = OpenLocal(mayCreate: false);
        if (local is null) return;
        Try(() =>
        {
            var patterns = (Name ?? ["*"]).Select(n => new WildcardPattern(n, WildcardOptions.IgnoreCase)).ToList();
            foreach (var u in local.Engine.ListUsersAsync().GetAwaiter().GetResult().Where(u => patterns.Any(p => p.IsMatch(u.Name))))
                Emit(new KmsUser { Name = u.Name, Role = u.Role, Created = KmsTime.Ms(u.Created) });
        }, Name);
    }
}

/// <summary>Removes KMS users from a data path; their sessions and tokens stop working at their next use. Local only.</summary>
[Cmdlet(VerbsCommon.Remove, "KmsUser", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
public sealed class RemoveKmsUserCommand : KmsLocalCmdletBase
{
    /// <summary>The user name (binds from Get-KmsUser output).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("UserName")]
    public string Name { get; set; } = "";

    protected override void ProcessRecord()
    {
        if (!ShouldProcess(ResolvedDataPath, $"Remove KMS user '{Name}'")) return;
        using var local = OpenLocal(mayCreate: false);
        if (local is null)
        {
            WriteError(new ErrorRecord(new ItemNotFoundException($"The data path '{ResolvedDataPath}' has no KMS."), "KmsUserNotFound", ErrorCategory.ObjectNotFound, Name));
            return;
        }
        Try(() => local.Engine.RemoveUserAsync(Name, LocalCaller).GetAwaiter().GetResult(), Name);
    }
}
