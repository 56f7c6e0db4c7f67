using System.Management.Automation;
using TpmProvisioning.Kms;

namespace TpmProvisioning.Cmdlets;

/// <summary>Creates a KMS key (AES-256, CCKM OCI key) with a first, native, primary version.</summary>
[Cmdlet(VerbsCommon.New, "KmsKey", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(KmsKey))]
public sealed class NewKmsKeyCommand : KmsCmdletBase
{
    /// <summary>The key name (unique).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    public string Name { get; set; } = "";

    /// <summary>OCI compartment id; default the server's.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? CompartmentId { get; set; }

    protected override void ProcessRecord()
    {
        if (!ShouldProcess(Where, $"Create KMS key '{Name}'")) return;
        Try(() => Emit(Backend(mayCreate: true)!.CreateKey(Name, CompartmentId)), Name);
    }
}

/// <summary>Gets KMS keys.</summary>
[Cmdlet(VerbsCommon.Get, "KmsKey")]
[OutputType(typeof(KmsKey))]
public sealed class GetKmsKeyCommand : KmsCmdletBase
{
    /// <summary>Key ids or names; wildcards allowed.</summary>
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [SupportsWildcards]
    [Alias("KeyId", "Id")]
    [ArgumentCompleter(typeof(KmsKeyNameCompleter))]
    public string[]? Name { get; set; }

    protected override void ProcessRecord()
    {
        var backend = Backend(mayCreate: false);
        IReadOnlyList<KmsKey> all = [];
        if (backend is not null && !Try(() => all = backend.ListKeys(), Where)) return;
        if (Name is not { Length: > 0 }) { Emit(all); return; }
        foreach (var n in Name)
        {
            var p = new WildcardPattern(n, WildcardOptions.IgnoreCase);
            var hits = all.Where(x => p.IsMatch(x.Name) || p.IsMatch(x.Id)).ToList();
            if (hits.Count == 0 && !WildcardPattern.ContainsWildcardCharacters(n))
                WriteError(new ErrorRecord(new KmsException(KmsErrorKind.NotFound, "id", $"key '{n}' does not exist"), "KmsKeyNotFound", ErrorCategory.ObjectNotFound, n));
            Emit(hits);
        }
    }
}

/// <summary>Adds a version to a KMS key; it becomes primary, older versions keep decrypting.</summary>
[Cmdlet(VerbsCommon.Add, "KmsKeyVersion", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, DefaultParameterSetName = "Native")]
[OutputType(typeof(KmsKeyVersion))]
public sealed class AddKmsKeyVersionCommand : KmsCmdletBase
{
    /// <summary>The key's id or name (binds from Get-KmsKey output).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("KeyId", "Id")]
    [ArgumentCompleter(typeof(KmsKeyNameCompleter))]
    public string Key { get; set; } = "";

    /// <summary>Fresh key material made by the KMS (origin INTERNAL).</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Native")]
    public SwitchParameter Native { get; set; }

    /// <summary>The source key whose material the version takes (origin EXTERNAL): a key id or name (tier local), a CKA_LABEL or hex CKA_ID (hsm-luna).</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Source")]
    public string SourceKeyIdentifier { get; set; } = "";

    /// <summary>Where the source key is: local (default), dsm or hsm-luna.</summary>
    [Parameter(ParameterSetName = "Source")]
    [ValidateSet("local", "dsm", "hsm-luna")]
    public string SourceKeyTier { get; set; } = "local";

    protected override void ProcessRecord()
    {
        bool native = ParameterSetName == "Native";
        if (native && !Native)
        {
            WriteError(new ErrorRecord(new ArgumentException("-Native:$false: give -SourceKeyIdentifier for an uploaded version."), "KmsInvalidArgument", ErrorCategory.InvalidArgument, Key));
            return;
        }
        var what = native ? "native" : $"from {SourceKeyTier} key '{SourceKeyIdentifier}'";
        if (!ShouldProcess(Where, $"Add a {(native ? "" : "uploaded ")}version ({what}) to KMS key '{Key}' and make it primary")) return;
        Try(() =>
        {
            var backend = Backend(mayCreate: false) ?? throw new KmsException(KmsErrorKind.NotFound, "id", $"key '{Key}' does not exist");
            Emit(backend.AddVersion(Key, native, native ? null : SourceKeyIdentifier, native ? null : SourceKeyTier));
        }, Key);
    }
}

/// <summary>Gets the versions of a KMS key, or one of them.</summary>
[Cmdlet(VerbsCommon.Get, "KmsKeyVersion")]
[OutputType(typeof(KmsKeyVersion))]
public sealed class GetKmsKeyVersionCommand : KmsCmdletBase
{
    /// <summary>The key's id or name (binds from Get-KmsKey output).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("KeyId", "Id")]
    [ArgumentCompleter(typeof(KmsKeyNameCompleter))]
    public string Key { get; set; } = "";

    /// <summary>A version: its id, OCI version id or number; default every version.</summary>
    [Parameter(Position = 1)]
    public string? Version { get; set; }

    /// <summary>Only the primary version.</summary>
    [Parameter]
    public SwitchParameter Primary { get; set; }

    protected override void ProcessRecord()
    {
        Try(() =>
        {
            var backend = Backend(mayCreate: false) ?? throw new KmsException(KmsErrorKind.NotFound, "id", $"key '{Key}' does not exist");
            if (Version is not null) Emit(backend.GetVersion(Key, Version));
            else Emit(backend.ListVersions(Key).Where(v => !Primary || v.IsPrimary).ToList());
        }, Key);
    }
}
