using System.Management.Automation;
using System.Net;
using System.Security;
using TpmProvisioning.Kms;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Station;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Cmdlets.Station;

/// <summary>
/// Base of the signing-key, PKCS#11 and secrets-at-rest cmdlets: locally on a data path (its store, its TPM CA folder and the
/// master key already set up in its <c>kms</c> folder) or on a running station with <c>-Server</c>.
/// </summary>
public abstract class SigningKeyCmdletBase : StationCmdletBase
{
    /// <summary>Runs <paramref name="local"/> with the data path's signing-key service (disposed after).</summary>
    protected bool TryKeys<T>(Func<SigningKeyService, Task<T>> local, Func<StationClient, Task<T>> remote, object? target, out T result) =>
        TryRun(async (store, _) =>
        {
            var dir = ResolvedDataPath;
            using var keys = new SigningKeyService(store, ProvisioningPaths.TpmCa(dir), () => SecretKeyRing.Open(dir, null));
            return await local(keys).ConfigureAwait(false);
        }, remote, target, out result);

    /// <summary>The text of a file given by a PowerShell path; false after writing an error.</summary>
    protected bool TryReadFile(string path, string parameter, out string text)
    {
        text = "";
        var full = GetUnresolvedProviderPathFromPSPath(path);
        if (!File.Exists(full))
        {
            WriteError(new ErrorRecord(new FileNotFoundException($"-{parameter}: no file at '{full}'.", full), "FileNotFound", ErrorCategory.ObjectNotFound, path));
            return false;
        }
        if (new FileInfo(full).Length > 256 * 1024)
        {
            WriteError(new ErrorRecord(new ArgumentException($"-{parameter}: '{full}' is larger than 256 KiB; a PEM key or certificate is much smaller."), "FileTooLarge", ErrorCategory.InvalidArgument, path));
            return false;
        }
        text = File.ReadAllText(full);
        return true;
    }

    protected static string? Plain(SecureString? s) => s is null ? null : new NetworkCredential("", s).Password;
}

/// <summary>Lists the TPM CA signing keys (the built-in CA and the stored ones), the active one marked; never a private key.</summary>
[Cmdlet(VerbsCommon.Get, "ProvisioningSigningKey", DefaultParameterSetName = "DataPath")]
[OutputType(typeof(ProvisioningSigningKey))]
public sealed class GetProvisioningSigningKeyCommand : SigningKeyCmdletBase
{
    /// <summary>Only the key with this label (wildcards allowed).</summary>
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [SupportsWildcards]
    public string? Label { get; set; }

    protected override void ProcessRecord()
    {
        if (!TryKeys(k => k.ListAsync(), c => c.GetSigningKeysAsync(), Label, out var keys)) return;
        var pattern = Label is null ? null : new WildcardPattern(Label, WildcardOptions.IgnoreCase);
        var matching = keys.Where(k => pattern is null || pattern.IsMatch(k.Label)).ToList();
        if (Label is not null && matching.Count == 0 && !WildcardPattern.ContainsWildcardCharacters(Label))
        {
            WriteError(new ErrorRecord(new ItemNotFoundException($"No signing key labelled '{Label}'."), "KEY_NOT_FOUND", ErrorCategory.ObjectNotFound, Label));
            return;
        }
        WriteObject(matching, enumerateCollection: true);
    }
}

/// <summary>Adds a PEM TPM CA key with its CA certificate; the station checks and seals it. It is not activated.</summary>
[Cmdlet(VerbsCommon.Add, "ProvisioningSigningKey", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, DefaultParameterSetName = "DataPath")]
[OutputType(typeof(ProvisioningSigningKey))]
public sealed class AddProvisioningSigningKeyCommand : SigningKeyCmdletBase
{
    /// <summary>The key's label: 1-64 letters, digits, '.', '_' or '-'.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    public string Label { get; set; } = "";

    /// <summary>The PEM CA certificate of the key.</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [Alias("CertificatePath")]
    public string Path { get; set; } = "";

    /// <summary>The PEM private key file (PKCS#8, SEC1 EC or PKCS#1 RSA; RSA of at least 2048 bits, EC P-256 or P-384).</summary>
    [Parameter(Mandatory = true, Position = 2, ValueFromPipelineByPropertyName = true)]
    public string KeyPath { get; set; } = "";

    /// <summary>Makes the key the active one after adding it.</summary>
    [Parameter]
    public SwitchParameter Activate { get; set; }

    protected override void ProcessRecord()
    {
        if (!TryReadFile(KeyPath, nameof(KeyPath), out var key) || !TryReadFile(Path, nameof(Path), out var cert)) return;
        if (!ShouldProcess(Label, Activate ? "Add and activate the TPM CA signing key" : "Add the TPM CA signing key")) return;
        if (!TryKeys(k => k.UploadAsync(Label, cert, key), c => c.UploadSigningKeyAsync(Label, cert, key), Label, out var added)) return;
        if (Activate && !TryKeys(k => k.ActivateAsync(Label), c => c.SigningKeyOperationAsync("activate", Label), Label, out added)) return;
        WriteObject(added);
    }
}

/// <summary>Makes a signing key the one that signs AK certificates; a running server uses it from its next provisioning request.</summary>
[Cmdlet(VerbsLifecycle.Enable, "ProvisioningSigningKey", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High, DefaultParameterSetName = "DataPath")]
[OutputType(typeof(ProvisioningSigningKey))]
public sealed class EnableProvisioningSigningKeyCommand : SigningKeyCmdletBase
{
    /// <summary>The key's label; <c>builtin</c> returns to the data path's TPM CA.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    public string Label { get; set; } = "";

    protected override void ProcessRecord()
    {
        if (!ShouldProcess(Label, "Sign AK certificates with this TPM CA key from the next provisioning request")) return;
        if (TryKeys(k => k.ActivateAsync(Label), c => c.SigningKeyOperationAsync("activate", Label), Label, out var key)) WriteObject(key);
    }
}

/// <summary>Removes a stored signing key that is not active.</summary>
[Cmdlet(VerbsCommon.Remove, "ProvisioningSigningKey", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High, DefaultParameterSetName = "DataPath")]
[OutputType(typeof(void))]
public sealed class RemoveProvisioningSigningKeyCommand : SigningKeyCmdletBase
{
    /// <summary>The key's label.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    public string Label { get; set; } = "";

    protected override void ProcessRecord()
    {
        if (!ShouldProcess(Label, "Remove the TPM CA signing key")) return;
        TryKeys(async k => { await k.RemoveAsync(Label); return true; }, async c => { await c.RemoveSigningKeyAsync(Label); return true; }, Label, out _);
    }
}

/// <summary>Registers a key that lives in a PKCS#11 token (an HSM) as a TPM CA signing key; the private key never leaves the token.</summary>
[Cmdlet(VerbsLifecycle.Register, "Pkcs11SigningKey", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, DefaultParameterSetName = "DataPath")]
[OutputType(typeof(ProvisioningSigningKey))]
public sealed class RegisterPkcs11SigningKeyCommand : SigningKeyCmdletBase
{
    /// <summary>The key's label in the station.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    public string Label { get; set; } = "";

    /// <summary>The absolute path of the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so.</summary>
    [Parameter(Mandatory = true, ValueFromPipelineByPropertyName = true)]
    public string Module { get; set; } = "";

    /// <summary>The token's label (or give -Slot).</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? TokenLabel { get; set; }

    /// <summary>The token's slot id (instead of -TokenLabel).</summary>
    [Parameter]
    public ulong? Slot { get; set; }

    /// <summary>The private key's CKA_LABEL.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? KeyLabel { get; set; }

    /// <summary>The private key's CKA_ID as hex.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [Alias("KeyId")]
    public string? KeyObjectId { get; set; }

    /// <summary>The PEM CA certificate of the key.</summary>
    [Parameter(Mandatory = true, ValueFromPipelineByPropertyName = true)]
    [Alias("CertificatePath")]
    public string Path { get; set; } = "";

    /// <summary>The token's user PIN, stored sealed with the master key before the key is registered (so it is tried at once).</summary>
    [Parameter]
    public SecureString? Pin { get; set; }

    protected override void ProcessRecord()
    {
        if (!TryReadFile(Path, nameof(Path), out var cert)) return;
        if (!ShouldProcess($"{Label} ({Module}, token {TokenLabel ?? Slot?.ToString()})", "Register the PKCS#11 TPM CA signing key")) return;
        var module = Module;
        if (Pin is not null)
        {
            var pin = Plain(Pin);
            if (!TryKeys(k => k.SetPinAsync(module, TokenLabel, Slot, pin), c => c.SetPkcs11PinAsync(module, TokenLabel, Slot, pin), TokenLabel, out _)) return;
        }
        var request = new Pkcs11KeyRequest { Label = Label, Module = module, TokenLabel = TokenLabel, Slot = Slot, KeyLabel = KeyLabel, KeyId = KeyObjectId, CertificatePem = cert };
        if (TryKeys(k => k.RegisterPkcs11Async(request), c => c.RegisterPkcs11KeyAsync(request), Label, out var key)) WriteObject(key);
    }
}

/// <summary>Readiness of the PKCS#11 modules the station uses, or with -Module the tokens and key objects of one module.</summary>
[Cmdlet(VerbsCommon.Get, "Pkcs11Status", DefaultParameterSetName = "DataPath")]
[OutputType(typeof(Pkcs11ModuleStatus), typeof(Pkcs11TokenInfo))]
public sealed class GetPkcs11StatusCommand : SigningKeyCmdletBase
{
    /// <summary>Discover this module's tokens and objects (private ones too when a PIN is stored for the token).</summary>
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    public string? Module { get; set; }

    protected override void ProcessRecord()
    {
        if (Module is { } module)
        {
            if (TryKeys(k => k.DiscoverAsync(module), c => c.DiscoverPkcs11Async(module), module, out var tokens)) WriteObject(tokens, enumerateCollection: true);
            return;
        }
        if (TryKeys(k => k.StatusAsync(), c => c.GetPkcs11StatusAsync(), null, out var modules)) WriteObject(modules, enumerateCollection: true);
    }
}

/// <summary>Stores a PKCS#11 token's user PIN sealed with the master key (after it logs in), or removes it.</summary>
[Cmdlet(VerbsCommon.Set, "Pkcs11Pin", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, DefaultParameterSetName = "DataPath")]
[OutputType(typeof(Pkcs11PinStatus))]
public sealed class SetPkcs11PinCommand : SigningKeyCmdletBase
{
    /// <summary>The absolute path of the PKCS#11 module.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    public string Module { get; set; } = "";

    /// <summary>The token's label (or give -Slot).</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? TokenLabel { get; set; }

    /// <summary>The token's slot id.</summary>
    [Parameter]
    public ulong? Slot { get; set; }

    /// <summary>The user PIN. Never written anywhere in clear; a PIN the token refuses is not stored.</summary>
    [Parameter(Mandatory = true, Position = 1)]
    [AllowNull]
    public SecureString? Pin { get; set; }

    /// <summary>Removes the stored PIN instead.</summary>
    [Parameter]
    public SwitchParameter Remove { get; set; }

    protected override void ProcessRecord()
    {
        var module = Module;
        if (!ShouldProcess($"{module} token {TokenLabel ?? Slot?.ToString()}", Remove ? "Remove the stored PKCS#11 PIN" : "Store the PKCS#11 PIN (sealed)")) return;
        var pin = Remove ? null : Plain(Pin);
        if (!Remove && string.IsNullOrEmpty(pin))
        {
            WriteError(new ErrorRecord(new ArgumentException("-Pin is empty; use -Remove to remove a stored PIN."), "INVALID_PARAMETER", ErrorCategory.InvalidArgument, null));
            return;
        }
        if (!TryKeys(k => k.SetPinAsync(module, TokenLabel, Slot, pin), c => c.SetPkcs11PinAsync(module, TokenLabel, Slot, pin), TokenLabel, out _)) return;
        if (TryKeys(k => k.PinStatusAsync(), c => c.GetPkcs11PinStatusAsync(), TokenLabel, out var pins))
            WriteObject(pins.Where(p => p.Module == module && (TokenLabel is null || p.Token == TokenLabel)), enumerateCollection: true);
    }
}

/// <summary>How the stored secrets (PEM signing keys, PKCS#11 PINs, the verifier's tenant secrets, KMS material) are kept: wrapped by which master key, or plaintext.</summary>
[Cmdlet(VerbsCommon.Get, "ProvisioningSecretStatus", DefaultParameterSetName = "DataPath")]
[OutputType(typeof(SecretKindStatus))]
public sealed class GetProvisioningSecretStatusCommand : SigningKeyCmdletBase
{
    protected override void ProcessRecord()
    {
        if (!TryKeys(k => SecretsAtRest.StatusAsync(k.Store, k.Ring), c => c.GetEncryptionStatusAsync(), null, out var report)) return;
        WriteVerbose(report.MasterKeyId is null ? "No master key: secrets cannot be wrapped." : $"Master key {report.MasterKeyId} ({report.MasterKey}) wraps new secrets.");
        foreach (var k in report.Kinds)
        {
            var o = PSObject.AsPSObject(k);
            o.Properties.Add(new PSNoteProperty("MasterKeyId", report.MasterKeyId));
            WriteObject(o);
        }
    }
}

/// <summary>Wraps every plaintext stored secret with the master key (idempotent, audited).</summary>
[Cmdlet(VerbsSecurity.Protect, "ProvisioningSecret", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, DefaultParameterSetName = "DataPath")]
[OutputType(typeof(SecretMigrationResult))]
public sealed class ProtectProvisioningSecretCommand : SigningKeyCmdletBase
{
    /// <summary>Which secrets: all (default), key (PEM signing keys), pin (PKCS#11 PINs) or verifier (tenant revocation_key and V).</summary>
    [Parameter(Position = 0)]
    [ValidateSet("all", "key", "pin", "verifier")]
    public string Target { get; set; } = "all";

    protected override void ProcessRecord()
    {
        if (!ShouldProcess(Target, "Wrap every plaintext stored secret with the master key")) return;
        var target = Target;
        if (TryKeys(k => SecretsAtRest.MigrateAsync(k.Store, k.Ring, target, Actor, "local"), c => c.MigrateSecretsAsync(target), target, out var result))
            WriteObject(result);
    }
}
