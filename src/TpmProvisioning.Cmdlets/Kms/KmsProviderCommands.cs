using System.Management.Automation;
using System.Runtime.InteropServices;
using System.Security;
using System.Security.Cryptography;
using TpmProvisioning.Kms;

namespace TpmProvisioning.Cmdlets;

/// <summary>Creates a KMS provider (vSphere NATIVE provider) with its key id and key derivation key.</summary>
[Cmdlet(VerbsCommon.New, "KmsProvider", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(KmsProvider))]
public sealed class NewKmsProviderCommand : KmsCmdletBase
{
    /// <summary>The provider name.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("Provider")]
    public string Name { get; set; } = "";

    /// <summary>The provider's key id (spec 002 key_id; binds from a provider object's KeyId property through the alias).</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [Alias("KeyId")]
    public string ProviderKeyId { get; set; } = "";

    private string KeyId => ProviderKeyId;

    /// <summary>The key derivation key: base64 of 32 bytes, as a SecureString.</summary>
    [Parameter(Mandatory = true)]
    public SecureString KeyDerivationKey { get; set; } = new();

    protected override void ProcessRecord()
    {
        if (!ShouldProcess(Where, $"Create KMS provider '{Name}' (key id '{KeyId}')")) return;
        byte[]? kdk = null;
        Try(() =>
        {
            KmsEngine.CheckName(Name, "provider");
            kdk = KmsEngine.DecodeKeyDerivationKey(Plain(KeyDerivationKey), "KeyDerivationKey");
            var backend = Backend(mayCreate: true)!;
            backend.CreateProvider(Name, KeyId, kdk);
            Emit(backend.GetProvider(Name));
        }, Name);
        if (kdk is not null) CryptographicOperations.ZeroMemory(kdk);
    }

    /// <summary>The SecureString's text; it lives only as long as the call that decodes it.</summary>
    internal static string Plain(SecureString s)
    {
        var p = Marshal.SecureStringToGlobalAllocUnicode(s);
        try { return Marshal.PtrToStringUni(p) ?? ""; }
        finally { Marshal.ZeroFreeGlobalAllocUnicode(p); }
    }
}

/// <summary>Gets KMS providers (never their key derivation keys).</summary>
[Cmdlet(VerbsCommon.Get, "KmsProvider")]
[OutputType(typeof(KmsProvider))]
public sealed class GetKmsProviderCommand : KmsCmdletBase
{
    /// <summary>Provider names; wildcards allowed.</summary>
    [Parameter(Position = 0)]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(KmsProviderNameCompleter))]
    public string[]? Name { get; set; }

    protected override void ProcessRecord()
    {
        var backend = Backend(mayCreate: false);
        IReadOnlyList<KmsProvider> all = [];
        if (backend is not null && !Try(() => all = backend.ListProviders(), Where)) return;
        if (Name is not { Length: > 0 }) { Emit(all); return; }
        foreach (var n in Name)
        {
            var p = new WildcardPattern(n, WildcardOptions.IgnoreCase);
            var hits = all.Where(x => p.IsMatch(x.Name)).ToList();
            if (hits.Count == 0 && !WildcardPattern.ContainsWildcardCharacters(n))
                WriteError(new ErrorRecord(new KmsException(KmsErrorKind.NotFound, "provider", $"provider '{n}' does not exist"), "KmsProviderNotFound", ErrorCategory.ObjectNotFound, n));
            Emit(hits);
        }
    }
}

/// <summary>Changes a KMS provider's key id (its key derivation key cannot change: every data key would).</summary>
[Cmdlet(VerbsCommon.Set, "KmsProvider", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(KmsProvider))]
public sealed class SetKmsProviderCommand : KmsCmdletBase
{
    /// <summary>The provider name.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("Provider")]
    [ArgumentCompleter(typeof(KmsProviderNameCompleter))]
    public string Name { get; set; } = "";

    /// <summary>The provider's new key id (spec 002 key_id).</summary>
    [Parameter(Mandatory = true, Position = 1)]
    [Alias("KeyId")]
    public string ProviderKeyId { get; set; } = "";

    private string KeyId => ProviderKeyId;

    /// <summary>Write the updated provider.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        if (!ShouldProcess(Where, $"Set the key id of KMS provider '{Name}' to '{KeyId}'")) return;
        Try(() =>
        {
            var backend = Backend(mayCreate: false) ?? throw new KmsException(KmsErrorKind.NotFound, "provider", $"provider '{Name}' does not exist");
            backend.UpdateProvider(Name, KeyId);
            if (PassThru) Emit(backend.GetProvider(Name));
        }, Name);
    }
}

/// <summary>Deletes a KMS provider: the data keys it derived can no longer be derived.</summary>
[Cmdlet(VerbsCommon.Remove, "KmsProvider", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
public sealed class RemoveKmsProviderCommand : KmsCmdletBase
{
    /// <summary>The provider name (binds from Get-KmsProvider output).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("Provider")]
    [ArgumentCompleter(typeof(KmsProviderNameCompleter))]
    public string Name { get; set; } = "";

    protected override void ProcessRecord()
    {
        if (!ShouldProcess(Where, $"Remove KMS provider '{Name}' (its data keys can no longer be derived)")) return;
        Try(() =>
        {
            var backend = Backend(mayCreate: false) ?? throw new KmsException(KmsErrorKind.NotFound, "provider", $"provider '{Name}' does not exist");
            backend.RemoveProvider(Name);
        }, Name);
    }
}
