using System.Management.Automation;
using System.Security;
using System.Security.Cryptography.X509Certificates;
using TpmProvisioning.Pki;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Cmdlets;

/// <summary>A new provisioning API key: its secret is in <see cref="Key"/>, here and nowhere else (the store keeps a hash).</summary>
public sealed class ProvisioningApiKeySecret
{
    /// <summary>The key's public id (also the audit actor).</summary>
    public string KeyId { get; init; } = "";
    /// <summary>Label.</summary>
    public string Name { get; init; } = "";
    /// <summary>Vendors the key may provision ('*' = any).</summary>
    public IReadOnlyList<string> Vendors { get; init; } = [];
    /// <summary>Requests per minute; 0 = unlimited.</summary>
    public int RatePerMinute { get; init; }
    /// <summary>Whether the key is accepted.</summary>
    public bool Enabled { get; init; }
    /// <summary>The secret key to give the factory; shown once, never stored.</summary>
    public SecureString Key { get; init; } = new();
}

/// <summary>Base of the cmdlets that manage a server's data path (store, TPM CA, EK trust folders) from the session.</summary>
public abstract class ProvisioningDataCmdletBase : PSCmdlet
{
    /// <summary>The server data path (default: TPMPROV_DATA or the per-user folder). Binds from a server object's DataPath.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? DataPath { get; set; }

    /// <summary>The data path in effect, resolved against the current location.</summary>
    protected string ResolvedDataPath => GetUnresolvedProviderPathFromPSPath(string.IsNullOrEmpty(DataPath) ? Defaults.DataPath : DataPath);

    /// <summary>Who the audit log names for changes made from this session.</summary>
    protected static string Actor => $"local:{Environment.UserName}";

    /// <summary>Opens (creating and migrating if needed) the data path's store: the PostgreSQL store its server recorded, else its SQLite file.</summary>
    protected IStore OpenStore() => Defaults.OpenStore(this, ResolvedDataPath, mayCreate: true);

    /// <summary>The data path's store if it exists; otherwise a StoreNotFound error and null (nothing is created by reading).</summary>
    protected IStore? OpenExistingStore() => DataPathStore.OpenExisting(this, ResolvedDataPath);

    internal static T Run<T>(Task<T> task) => task.GetAwaiter().GetResult();

    /// <summary>
    /// Writes items of this data path's store with a <c>DataPath</c> property, so a following cmdlet that binds -DataPath by
    /// property name acts on the same store, never silently on the default one.
    /// </summary>
    protected void WriteFromStore(object item)
    {
        var ps = PSObject.AsPSObject(item);
        ps.Properties.Remove("DataPath");
        ps.Properties.Add(new PSNoteProperty("DataPath", ResolvedDataPath));
        WriteObject(ps);
    }

    /// <summary><see cref="WriteFromStore(object)"/> for each item.</summary>
    protected void WriteFromStore(System.Collections.IEnumerable items)
    {
        foreach (var item in items) WriteFromStore(item!);
    }

    /// <summary>True (after writing TpmCaExists) when a TPM CA is in <paramref name="dir"/> and -Force was not given.</summary>
    protected bool RefuseExistingCa(string dir, bool force)
    {
        if (!TpmCa.Exists(dir) || force) return false;
        WriteError(new ErrorRecord(new InvalidOperationException($"A TPM CA exists in '{dir}'. Use -Force to replace it."), "TpmCaExists", ErrorCategory.ResourceExists, dir));
        return true;
    }

    /// <summary>Records a change made from this session in the data path's audit log.</summary>
    protected void Audit(string action, string target, string? detail = null)
    {
        using var store = OpenStore();
        Run(store.AppendAuditAsync(new AuditEntry { Actor = Actor, Action = action, Target = target, Outcome = AuditOutcome.Success, Detail = detail }));
    }
}

/// <summary>Creates a provisioning API key for a manufacturing plant.</summary>
[Cmdlet(VerbsCommon.New, "ProvisioningApiKey", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(ProvisioningApiKeySecret))]
public sealed class NewProvisioningApiKeyCommand : ProvisioningDataCmdletBase
{
    /// <summary>A label for the key (e.g. the plant).</summary>
    [Parameter(Mandatory = true, Position = 0)]
    [ValidateLength(1, 256)]
    public string Name { get; set; } = "";

    /// <summary>Vendors the key may provision; default '*' (any).</summary>
    [Parameter]
    public string[]? Vendor { get; set; }

    /// <summary>Requests per minute allowed for the key; 0 (default) means unlimited.</summary>
    [Parameter]
    [ValidateRange(0, 1_000_000)]
    public int RatePerMinute { get; set; }

    /// <summary>Create the key disabled.</summary>
    [Parameter]
    public SwitchParameter Disabled { get; set; }

    protected override void ProcessRecord()
    {
        if (!ShouldProcess(ResolvedDataPath, $"Create provisioning API key '{Name}'")) return;
        using var store = OpenStore();
        var created = Run(new ApiKeyManager(store).CreateAsync(Name, Vendor, RatePerMinute, !Disabled, Actor));
        var secure = new SecureString();
        foreach (var c in created.Key) secure.AppendChar(c);
        secure.MakeReadOnly();
        WriteFromStore((object)new ProvisioningApiKeySecret
        {
            KeyId = created.Info.KeyId, Name = created.Info.Name, Vendors = created.Info.Vendors,
            RatePerMinute = created.Info.RatePerMinute, Enabled = created.Info.Enabled, Key = secure,
        });
    }
}

/// <summary>Lists provisioning API keys (never their secrets).</summary>
[Cmdlet(VerbsCommon.Get, "ProvisioningApiKey")]
[OutputType(typeof(ApiKeyInfo))]
public sealed class GetProvisioningApiKeyCommand : ProvisioningDataCmdletBase
{
    /// <summary>Key ids or names; wildcards allowed.</summary>
    [Parameter(Position = 0)]
    [SupportsWildcards]
    [Alias("KeyId")]
    public string[]? Name { get; set; }

    protected override void ProcessRecord()
    {
        using var store = OpenExistingStore();
        if (store is null) return;
        var all = Run(new ApiKeyManager(store).ListAsync());
        if (Name is not { Length: > 0 }) { WriteFromStore(all); return; }
        foreach (var n in Name)
        {
            var p = new WildcardPattern(n, WildcardOptions.IgnoreCase);
            var hits = all.Where(k => p.IsMatch(k.KeyId) || p.IsMatch(k.Name)).ToList();
            if (hits.Count == 0 && !WildcardPattern.ContainsWildcardCharacters(n))
                WriteError(new ErrorRecord(new ItemNotFoundException($"No provisioning API key with id or name '{n}'."), "ApiKeyNotFound", ErrorCategory.ObjectNotFound, n));
            WriteFromStore(hits);
        }
    }
}

/// <summary>Changes a provisioning API key: enable or disable it, its vendors, its rate, its name.</summary>
[Cmdlet(VerbsCommon.Set, "ProvisioningApiKey", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(ApiKeyInfo))]
public sealed class SetProvisioningApiKeyCommand : ProvisioningDataCmdletBase
{
    /// <summary>The API key id (binds from Get-ProvisioningApiKey output, whose KeyId property the alias takes).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("KeyId")]
    public string ApiKeyId { get; set; } = "";

    private string KeyId => ApiKeyId;

    /// <summary>$true to accept the key, $false to refuse it (403).</summary>
    [Parameter]
    public bool? Enabled { get; set; }

    /// <summary>New vendor scope ('*' = any).</summary>
    [Parameter]
    public string[]? Vendor { get; set; }

    /// <summary>New rate (requests per minute; 0 = unlimited).</summary>
    [Parameter]
    [ValidateRange(0, 1_000_000)]
    public int? RatePerMinute { get; set; }

    /// <summary>New label.</summary>
    [Parameter]
    [ValidateLength(1, 256)]
    public string? NewName { get; set; }

    /// <summary>Write the updated key.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        if (!ShouldProcess(KeyId, "Update provisioning API key")) return;
        using var store = OpenExistingStore();
        if (store is null) return;
        var updated = Run(new ApiKeyManager(store).UpdateAsync(KeyId, Enabled, Vendor, RatePerMinute, NewName, Actor));
        if (updated is null)
        {
            WriteError(new ErrorRecord(new ItemNotFoundException($"No provisioning API key with id '{KeyId}'."), "ApiKeyNotFound", ErrorCategory.ObjectNotFound, KeyId));
            return;
        }
        if (PassThru) WriteFromStore((object)updated);
    }
}

/// <summary>Deletes provisioning API keys; requests with them are refused from then on (401).</summary>
[Cmdlet(VerbsCommon.Remove, "ProvisioningApiKey", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
public sealed class RemoveProvisioningApiKeyCommand : ProvisioningDataCmdletBase
{
    /// <summary>The API key id (binds from Get-ProvisioningApiKey output, whose KeyId property the alias takes).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("KeyId")]
    public string ApiKeyId { get; set; } = "";

    private string KeyId => ApiKeyId;

    protected override void ProcessRecord()
    {
        if (!ShouldProcess(KeyId, "Remove provisioning API key")) return;
        using var store = OpenExistingStore();
        if (store is null) return;
        if (!Run(new ApiKeyManager(store).RemoveAsync(KeyId, Actor)))
            WriteError(new ErrorRecord(new ItemNotFoundException($"No provisioning API key with id '{KeyId}'."), "ApiKeyNotFound", ErrorCategory.ObjectNotFound, KeyId));
    }
}

/// <summary>Lists manufacturing records: one per successful provisioning.</summary>
[Cmdlet(VerbsCommon.Get, "ManufacturingRecord", DefaultParameterSetName = "DataPath")]
[OutputType(typeof(ManufacturingRecordInfo))]
public sealed class GetManufacturingRecordCommand : ProvisioningDataCmdletBase
{
    /// <summary>A running station to read instead of a data path (its /api/v2/manufacturing route).</summary>
    [Parameter(ParameterSetName = "Server", Mandatory = true)]
    public Uri? Server { get; set; }

    /// <summary>An operator token (New-StationToken) for -Server.</summary>
    [Parameter(ParameterSetName = "Server")]
    public SecureString? Token { get; set; }

    /// <summary>The CA the station's certificate must chain to: a certificate or a PEM/DER file.</summary>
    [Parameter(ParameterSetName = "Server")]
    public object? CaCertificate { get; set; }

    /// <summary>A components-CA client certificate (with private key), instead of a token.</summary>
    [Parameter(ParameterSetName = "Server")]
    public X509Certificate2? ClientCertificate { get; set; }

    /// <summary>Device serial number (binds by property name, so New-TpmProvisioning results and their CSV exports pipe in).</summary>
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    public string? Serial { get; set; }

    /// <summary>Device vendor.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    public string? Vendor { get; set; }

    /// <summary>Records made with this API key id.</summary>
    [Parameter]
    public string? ApiKeyId { get; set; }

    /// <summary>Only records at or after this time.</summary>
    [Parameter]
    public DateTime? Since { get; set; }

    /// <summary>At most this many, newest first (default 1000).</summary>
    [Parameter]
    [ValidateRange(1, 1_000_000)]
    public int Last { get; set; } = 1000;

    protected override void ProcessRecord()
    {
        if (ParameterSetName == "Server")
        {
            var remote = Station.StationRemote.Run(this, Server!, Token, CaCertificate, ClientCertificate, c => c.GetManufacturingRecordsAsync(0, null));
            // The station pages newest first; the filters apply to what it returns.
            PipelineOrigin.Write(this, remote.Where(r => (Serial is null || r.Serial == Serial) && (Vendor is null || r.Vendor == Vendor) && (ApiKeyId is null || r.ApiKeyId == ApiKeyId)
                && (Since is not { } since || r.Time >= new DateTimeOffset(since))).Take(Last).Select(r => ManufacturingRecordInfo.From(r, null, null)).ToList(), null, Server);
            return;
        }
        using var store = OpenExistingStore();
        if (store is null) return;
        var records = Run(store.QueryManufacturingRecordsAsync(new ManufacturingRecordQuery
        {
            Serial = Serial, Vendor = Vendor, ApiKeyId = ApiKeyId, Since = Since is { } s ? new DateTimeOffset(s) : null, Limit = Last,
        }));
        var agents = records.Count == 0 ? new Dictionary<string, string>() : Run(ManufacturingRecordInfo.AgentsByEkAsync(store));
        WriteObject(records.Select(r => ManufacturingRecordInfo.From(r, agents.GetValueOrDefault(r.EkFingerprint), ResolvedDataPath)), enumerateCollection: true);
    }
}

/// <summary>Adds a TPM manufacturer CA (root, or intermediate with -Intermediate) that EK certificates must chain to.</summary>
[Cmdlet(VerbsCommon.Add, "TpmManufacturerCa", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, DefaultParameterSetName = "Certificate")]
[OutputType(typeof(EkTrustEntry))]
public sealed class AddTpmManufacturerCaCommand : ProvisioningDataCmdletBase
{
    /// <summary>PEM or DER file(s) with the CA certificate(s).</summary>
    [Parameter(ParameterSetName = "Path", Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("FullName")]
    public string[]? Path { get; set; }

    /// <summary>The CA certificate(s).</summary>
    [Parameter(ParameterSetName = "Certificate", Mandatory = true, ValueFromPipeline = true)]
    public X509Certificate2[]? Certificate { get; set; }

    /// <summary>Add as an intermediate: used to build chains, never trusted on its own.</summary>
    [Parameter]
    public SwitchParameter Intermediate { get; set; }

    protected override void ProcessRecord()
    {
        var certs = new List<(X509Certificate2 Cert, string From)>();
        if (Certificate is not null) certs.AddRange(Certificate.Select(c => (c, c.Subject)));
        foreach (var p in Path ?? [])
        {
            var full = GetUnresolvedProviderPathFromPSPath(p);
            IReadOnlyList<X509Certificate2> read;
            try { read = EkTrustStore.ReadCertificates(File.ReadAllBytes(full)); }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                WriteError(new ErrorRecord(ex, "CertificateUnreadable", ErrorCategory.ReadError, full));
                continue;
            }
            catch (Exception ex) when (ex is System.Security.Cryptography.CryptographicException or ArgumentException)
            {
                WriteError(new ErrorRecord(new InvalidDataException($"'{full}' is not a certificate (PEM or DER): {ex.Message}", ex), "NotACertificate", ErrorCategory.InvalidData, full));
                continue;
            }
            if (read.Count == 0)
            {
                WriteError(new ErrorRecord(new InvalidDataException($"'{full}' holds no certificate: a PEM file needs a -----BEGIN CERTIFICATE----- block, a DER file one X.509 certificate."),
                    "NotACertificate", ErrorCategory.InvalidData, full));
                continue;
            }
            certs.AddRange(read.Select(c => (c, full)));
        }
        var kind = Intermediate ? EkTrustKind.Intermediate : EkTrustKind.Root;
        foreach (var (cert, from) in certs)
        {
            var sha256 = Convert.ToHexString(cert.GetCertHash(System.Security.Cryptography.HashAlgorithmName.SHA256));
            if (!ShouldProcess($"{cert.Subject} (SHA-256 {sha256})", $"Trust as TPM manufacturer {kind.ToString().ToLowerInvariant()} CA")) continue;
            try
            {
                var entry = EkTrustStore.Add(ResolvedDataPath, cert, kind);
                Audit("provision.ekca.add", entry.Thumbprint, $"{kind}: {entry.Subject}");
                WriteFromStore((object)entry);
            }
            catch (ArgumentException ex) { WriteError(new ErrorRecord(ex, "NotACaCertificate", ErrorCategory.InvalidData, from)); }
        }
    }
}

/// <summary>Lists the trusted TPM manufacturer CAs.</summary>
[Cmdlet(VerbsCommon.Get, "TpmManufacturerCa")]
[OutputType(typeof(EkTrustEntry))]
public sealed class GetTpmManufacturerCaCommand : ProvisioningDataCmdletBase
{
    protected override void ProcessRecord() => WriteFromStore(EkTrustStore.List(ResolvedDataPath));
}

/// <summary>Stops trusting a TPM manufacturer CA.</summary>
[Cmdlet(VerbsCommon.Remove, "TpmManufacturerCa", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
public sealed class RemoveTpmManufacturerCaCommand : ProvisioningDataCmdletBase
{
    /// <summary>Thumbprint of the CA (binds from Get-TpmManufacturerCa output).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    public string Thumbprint { get; set; } = "";

    protected override void ProcessRecord()
    {
        if (!ShouldProcess(Thumbprint, "Stop trusting TPM manufacturer CA")) return;
        if (EkTrustStore.Remove(ResolvedDataPath, Thumbprint)) Audit("provision.ekca.remove", Thumbprint);
        else
            WriteError(new ErrorRecord(new ItemNotFoundException($"No trusted TPM manufacturer CA with thumbprint '{Thumbprint}'."), "ManufacturerCaNotFound", ErrorCategory.ObjectNotFound, Thumbprint));
    }
}

/// <summary>Creates the TPM CA that signs AK certificates (P-256 key in a 0600 file under the data path).</summary>
[Cmdlet(VerbsCommon.New, "TpmCa", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(X509Certificate2))]
public sealed class NewTpmCaCommand : ProvisioningDataCmdletBase
{
    /// <summary>Subject of the CA certificate.</summary>
    [Parameter(Position = 0)]
    public string? Subject { get; set; }

    /// <summary>Validity in days (default 3652).</summary>
    [Parameter]
    [ValidateRange(1, 36500)]
    public int ValidDays { get; set; } = 3652;

    /// <summary>Replace an existing TPM CA (AK certificates it issued no longer chain to the new one).</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void ProcessRecord()
    {
        var dir = ProvisioningPaths.TpmCa(ResolvedDataPath);
        if (RefuseExistingCa(dir, Force)) return;
        if (!ShouldProcess(dir, TpmCa.Exists(dir) ? "Replace the TPM CA" : "Create the TPM CA")) return;
        TpmCa ca;
        try { ca = TpmCa.Create(dir, Subject, TimeSpan.FromDays(ValidDays), force: Force); }
        catch (Exception ex) when (Defaults.IsPathFailure(ex) && ex is not ArgumentException)
        {
            WriteError(Defaults.DataPathNotWritable(ResolvedDataPath, ex));
            return;
        }
        using var _ = ca;
        Audit("provision.tpmca.create", ca.Certificate.Thumbprint, ca.Certificate.Subject);
        WriteObject(X509CertificateLoader.LoadCertificate(ca.Certificate.RawData));
    }
}

/// <summary>Imports the TPM CA from a PEM certificate and its PEM private key.</summary>
[Cmdlet(VerbsData.Import, "TpmCa", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(X509Certificate2))]
public sealed class ImportTpmCaCommand : ProvisioningDataCmdletBase
{
    /// <summary>PEM file with the CA certificate.</summary>
    [Parameter(Mandatory = true, Position = 0)]
    [Alias("CertificatePath")]
    public string Path { get; set; } = "";

    /// <summary>PEM file with the CA's private key (PKCS#8 or EC/RSA PRIVATE KEY).</summary>
    [Parameter(Mandatory = true, Position = 1)]
    public string KeyPath { get; set; } = "";

    /// <summary>The password of an encrypted private key (BEGIN ENCRYPTED PRIVATE KEY); the key is opened in memory, never written decrypted.</summary>
    [Parameter]
    public System.Security.SecureString? KeyPassword { get; set; }

    /// <summary>Replace an existing TPM CA.</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void ProcessRecord()
    {
        var dir = ProvisioningPaths.TpmCa(ResolvedDataPath);
        if (RefuseExistingCa(dir, Force)) return;
        var keyFile = GetUnresolvedProviderPathFromPSPath(KeyPath);
        string key;
        try
        {
            key = File.ReadAllText(keyFile);
            if (FileCertificateSigner.IsEncryptedPem(key))
            {
                if (KeyPassword is null)
                {
                    WriteError(new ErrorRecord(new ArgumentException($"The private key in '{keyFile}' is encrypted: give its password with -KeyPassword (Read-Host -AsSecureString)."),
                        "KeyPasswordRequired", ErrorCategory.InvalidArgument, KeyPath));
                    return;
                }
                key = FileCertificateSigner.DecryptPem(key, new System.Net.NetworkCredential("", KeyPassword).Password);
            }
        }
        catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException)
        {
            WriteError(new ErrorRecord(new FileNotFoundException($"-KeyPath: no file at '{keyFile}'.", keyFile, ex), "FileNotFound", ErrorCategory.ObjectNotFound, KeyPath));
            return;
        }
        catch (NotSupportedException ex)
        {
            WriteError(new ErrorRecord(new ArgumentException($"-KeyPath '{keyFile}': {ex.Message}", ex), "KeyFormatNotSupported", ErrorCategory.InvalidData, KeyPath));
            return;
        }
        catch (System.Security.Cryptography.CryptographicException ex)
        {
            WriteError(new ErrorRecord(new ArgumentException($"-KeyPath '{keyFile}': {ex.Message}", ex), "KeyPasswordIncorrect", ErrorCategory.AuthenticationError, KeyPath));
            return;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            WriteError(new ErrorRecord(ex, "TpmCaImportFailed", ErrorCategory.ReadError, KeyPath));
            return;
        }
        if (!ShouldProcess(dir, "Import the TPM CA")) return;
        try
        {
            var cert = File.ReadAllText(GetUnresolvedProviderPathFromPSPath(Path));
            using var ca = TpmCa.Import(dir, cert, key, Force);
            Audit("provision.tpmca.import", ca.Certificate.Thumbprint, ca.Certificate.Subject);
            WriteObject(X509CertificateLoader.LoadCertificate(ca.Certificate.RawData));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException or System.Security.Cryptography.CryptographicException or InvalidOperationException)
        {
            WriteError(new ErrorRecord(ex, "TpmCaImportFailed", ErrorCategory.InvalidData, Path));
        }
    }
}

/// <summary>Returns the TPM CA certificate (public part only), or writes it as PEM with -Path.</summary>
[Cmdlet(VerbsData.Export, "TpmCa", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(X509Certificate2), typeof(FileInfo))]
public sealed class ExportTpmCaCommand : ProvisioningDataCmdletBase
{
    /// <summary>Write the certificate as PEM to this file.</summary>
    [Parameter(Position = 0)]
    public string? Path { get; set; }

    protected override void ProcessRecord()
    {
        var dir = ProvisioningPaths.TpmCa(ResolvedDataPath);
        if (!TpmCa.Exists(dir))
        {
            WriteError(new ErrorRecord(new ItemNotFoundException($"No TPM CA in '{dir}'. Create one with New-TpmCa or start a server with the Provisioning role."), "TpmCaNotFound", ErrorCategory.ObjectNotFound, dir));
            return;
        }
        var cert = X509Certificate2.CreateFromPem(File.ReadAllText(System.IO.Path.Combine(dir, TpmCa.CertFileName)));
        if (Path is null) { WriteObject(cert); return; }
        var target = GetUnresolvedProviderPathFromPSPath(Path);
        if (!ShouldProcess(target, "Write the TPM CA certificate (PEM)")) return;
        try { File.WriteAllText(target, cert.ExportCertificatePem() + "\n"); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            WriteError(Defaults.FileWriteError(ex, target));
            return;
        }
        WriteObject(new FileInfo(target));
    }
}
