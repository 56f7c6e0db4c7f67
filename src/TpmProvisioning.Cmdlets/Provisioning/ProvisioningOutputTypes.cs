using System.Management.Automation;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace TpmProvisioning.Cmdlets;

/// <summary>
/// One device of a <c>New-TpmProvisioning</c> batch. Every property is a string or a number, so the object survives
/// <c>Export-Csv</c>/<c>ConvertTo-Json</c> and an imported row binds by property name to the next cmdlet
/// (<c>Get-ManufacturingRecord</c>, <c>Get-IntegrityQuote</c>, <c>Register-AttestationAgent</c>). The certificate object itself is
/// <see cref="AkCertificate"/> (hidden from exports; its PEM and thumbprints are beside it).
/// </summary>
public sealed class DeviceProvisioningResult
{
    /// <summary>The input row this result belongs to (1 = the first device given).</summary>
    public int Row { get; init; }
    /// <summary><c>Provisioned</c>, or <c>AlreadyProvisioned</c> when a re-run found the device's AK and valid certificate and changed nothing.</summary>
    public string Status { get; init; } = "";
    public string Serial { get; init; } = "";
    public string DeviceName { get; init; } = "";
    public string Vendor { get; init; } = "";
    public string Version { get; init; } = "";
    /// <summary>The TPM connection string the device was provisioned through.</summary>
    public string Tpm { get; init; } = "";
    /// <summary>Persistent handle of the AK, as <c>0x81000002</c> (binds to <c>-AkHandle</c>).</summary>
    public string AkHandle { get; init; } = "";
    /// <summary>The AK's TPM Name, upper-case hex.</summary>
    public string AkName { get; init; } = "";
    /// <summary>The AK certificate's serial number, upper-case hex (the manufacturing record's AkCertificateSerial).</summary>
    public string AkCertificateSerial { get; init; } = "";
    /// <summary>SHA-1 thumbprint of the AK certificate (as in the certificate stores), upper-case hex.</summary>
    public string AkCertificateThumbprint { get; init; } = "";
    /// <summary>The AK certificate, PEM.</summary>
    public string AkCertificatePem { get; init; } = "";
    /// <summary>SHA-256 of the EK certificate's DER, upper-case hex (the server's EK fingerprint).</summary>
    public string EkThumbprint { get; init; } = "";
    /// <summary>The server that provisioned it.</summary>
    public string Server { get; init; } = "";
    /// <summary>The AK certificate as an object (hidden from Export-Csv and ConvertTo-Json; use AkCertificatePem in files).</summary>
    [Hidden, Newtonsoft.Json.JsonIgnore]
    public X509Certificate2? AkCertificate { get; init; }

    internal static DeviceProvisioningResult From(Provisioning.DeviceProvisioningResult r, int row, string tpm) => new()
    {
        Row = row,
        Status = r.AlreadyProvisioned ? "AlreadyProvisioned" : "Provisioned",
        Serial = r.Serial,
        DeviceName = r.DeviceName,
        Vendor = r.Vendor,
        Version = r.Version,
        Tpm = tpm,
        AkHandle = OutputFormat.Handle(r.AkHandle),
        AkName = r.AkName,
        AkCertificateSerial = r.AkCertificate.SerialNumber,
        AkCertificateThumbprint = r.AkCertificate.Thumbprint,
        AkCertificatePem = OutputFormat.Pem(r.AkCertificate.RawData),
        EkThumbprint = r.EkThumbprint,
        Server = r.Server,
        AkCertificate = r.AkCertificate,
    };
}

/// <summary>The one way the module writes handles, certificates and states into output objects.</summary>
public static class OutputFormat
{
    /// <summary>A TPM handle as <c>0x81000002</c>.</summary>
    public static string Handle(uint handle) => $"0x{handle:x8}";

    /// <summary>A DER certificate as PEM.</summary>
    public static string Pem(byte[] der) => PemEncoding.WriteString("CERTIFICATE", der);

    /// <summary>SHA-1 thumbprint (the certificate stores' Thumbprint), upper-case hex.</summary>
    public static string Thumbprint(byte[] der) => Convert.ToHexString(SHA1.HashData(der));
}

/// <summary>
/// A manufacturing record as <c>Get-ManufacturingRecord</c> writes it: strings and numbers only (the certificate as PEM and
/// thumbprint; the DER bytes in the hidden <see cref="AkCertificate"/>), with the agent id the registrar knows the device by.
/// </summary>
public sealed class ManufacturingRecordInfo
{
    public long Id { get; init; }
    public DateTimeOffset Time { get; init; }
    public string Serial { get; init; } = "";
    public string Vendor { get; init; } = "";
    public string DeviceName { get; init; } = "";
    public string DeviceVersion { get; init; } = "";
    /// <summary>SHA-256 of the EK certificate's DER, upper-case hex.</summary>
    public string EkFingerprint { get; init; } = "";
    /// <summary>The AK's TPM Name, upper-case hex.</summary>
    public string AkName { get; init; } = "";
    /// <summary>The AK certificate's serial number, upper-case hex.</summary>
    public string AkCertificateSerial { get; init; } = "";
    /// <summary>SHA-1 thumbprint of the AK certificate, upper-case hex.</summary>
    public string AkCertificateThumbprint { get; init; } = "";
    /// <summary>The AK certificate, PEM.</summary>
    public string AkCertificatePem { get; init; } = "";
    public string ApiKeyId { get; init; } = "";
    /// <summary>The Keylime agent id registered with this device's EK (registrar rows in the same store), or null.</summary>
    public string? AgentId { get; init; }
    /// <summary>The data path read (binds to the -DataPath of the next cmdlet), or null for a remote station.</summary>
    public string? DataPath { get; init; }
    /// <summary>The AK certificate, DER (hidden from Export-Csv and ConvertTo-Json; use AkCertificatePem in files).</summary>
    [Hidden, Newtonsoft.Json.JsonIgnore]
    public byte[] AkCertificate { get; init; } = [];

    internal static ManufacturingRecordInfo From(Storage.ManufacturingRecord r, string? agentId, string? dataPath) => new()
    {
        Id = r.Id, Time = r.Time, Serial = r.Serial, Vendor = r.Vendor, DeviceName = r.DeviceName, DeviceVersion = r.DeviceVersion,
        EkFingerprint = r.EkFingerprint, AkName = r.AkName, AkCertificateSerial = r.AkCertificateSerial,
        AkCertificateThumbprint = r.AkCertificate.Length == 0 ? "" : OutputFormat.Thumbprint(r.AkCertificate),
        AkCertificatePem = r.AkCertificate.Length == 0 ? "" : OutputFormat.Pem(r.AkCertificate),
        ApiKeyId = r.ApiKeyId, AgentId = agentId, DataPath = dataPath, AkCertificate = r.AkCertificate,
    };

    /// <summary>Registered agent ids by the SHA-256 (upper-case hex) of the EK certificate they registered (as the station matches them).</summary>
    internal static async Task<Dictionary<string, string>> AgentsByEkAsync(Storage.IStore store, CancellationToken ct = default)
    {
        var map = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var id in await store.ListRegistrarAgentIdsAsync(ct).ConfigureAwait(false))
            if (await store.GetRegistrarAgentAsync(id, ct).ConfigureAwait(false) is { EkCert: { } ek })
                map[Convert.ToHexString(SHA256.HashData(ek))] = id;
        return map;
    }
}
