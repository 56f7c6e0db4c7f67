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
            WriteObject(new KmsUser { Name = u.Name, Role = u.Role, Created = KmsTime.Ms(u.Created) });
        }, name);
    }
}
