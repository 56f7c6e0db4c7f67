namespace TpmProvisioning.Tpm;

/// <summary>A loaded object: its handle, public area as the TPM returned it, and the Name the TPM computed.</summary>
/// <param name="Handle">Transient (0x80xxxxxx) or persistent (0x81xxxxxx) handle.</param>
/// <param name="Public">The public area, parsed from the TPM's answer.</param>
/// <param name="PublicBytes">The marshaled TPMT_PUBLIC exactly as the TPM returned it (no TPM2B size).</param>
/// <param name="Name">The TPM-computed Name (nameAlg || H(TPMT_PUBLIC)).</param>
public sealed record TpmObject(uint Handle, TpmPublic Public, byte[] PublicBytes, byte[] Name)
{
    /// <summary>True for a transient handle that should be flushed after use.</summary>
    public bool IsTransient => (Handle & 0xFF000000) == TpmHandle.HrTransient;
}

/// <summary>A key created under a parent by TPM2_Create and loaded by TPM2_Load.</summary>
/// <param name="Key">The loaded key.</param>
/// <param name="PrivateBlob">TPM2B_PRIVATE contents (the parent-wrapped sensitive area, no size prefix): with the public area it reloads the key under the same parent.</param>
public sealed record TpmCreatedKey(TpmObject Key, byte[] PrivateBlob);

/// <summary>TPM2_NV_ReadPublic's answer.</summary>
/// <param name="Index">The NV index handle.</param>
/// <param name="NameAlg">Hash algorithm of the index Name.</param>
/// <param name="Attributes">TPMA_NV bits.</param>
/// <param name="AuthPolicy">The index's authorization policy.</param>
/// <param name="DataSize">Size of the data area in bytes.</param>
/// <param name="Name">The index Name.</param>
public sealed record TpmNvPublic(uint Index, TpmAlgId NameAlg, uint Attributes, byte[] AuthPolicy, ushort DataSize, byte[] Name)
{
    /// <summary>TPMA_NV_AUTHREAD: the index's own authValue authorizes reading.</summary>
    public bool AuthRead => (Attributes & (1u << 18)) != 0;
    /// <summary>TPMA_NV_OWNERREAD: owner authorization authorizes reading.</summary>
    public bool OwnerRead => (Attributes & (1u << 17)) != 0;
    /// <summary>TPMA_NV_PPREAD: platform authorization authorizes reading.</summary>
    public bool PpRead => (Attributes & (1u << 16)) != 0;
    /// <summary>TPMA_NV_WRITTEN.</summary>
    public bool Written => (Attributes & (1u << 29)) != 0;
}

/// <summary>Identity and configuration of a TPM, from TPM2_GetCapability.</summary>
public sealed record TpmInfo
{
    /// <summary>TPM_PT_MANUFACTURER as its four ASCII characters, e.g. "IBM", "INTC", "MSFT".</summary>
    public required string Manufacturer { get; init; }
    /// <summary>TPM_PT_MANUFACTURER as a number (the EK certificate's tpmManufacturer id).</summary>
    public required uint ManufacturerId { get; init; }
    /// <summary>TPM_PT_VENDOR_STRING_1..4 concatenated, trailing NULs and spaces removed.</summary>
    public required string VendorString { get; init; }
    /// <summary>TPM_PT_VENDOR_TPM_TYPE.</summary>
    public required uint VendorTpmType { get; init; }
    /// <summary>TPM_PT_FIRMWARE_VERSION_1 (high 32 bits) and _2 (low 32 bits).</summary>
    public required ulong FirmwareVersion { get; init; }
    /// <summary>Firmware version as TPMs usually display it: the four 16-bit parts, dotted.</summary>
    public string FirmwareVersionString => $"{FirmwareVersion >> 48}.{(FirmwareVersion >> 32) & 0xFFFF}.{(FirmwareVersion >> 16) & 0xFFFF}.{FirmwareVersion & 0xFFFF}";
    /// <summary>TPM_PT_FAMILY_INDICATOR as text, e.g. "2.0".</summary>
    public required string Family { get; init; }
    /// <summary>TPM_PT_REVISION: the specification revision times 100 (164 means revision 1.64).</summary>
    public required uint SpecRevision { get; init; }
    /// <summary>TPM_PT_YEAR of the specification.</summary>
    public required uint SpecYear { get; init; }
    /// <summary>Number of PCRs per bank (TPM_PT_PCR_COUNT).</summary>
    public required int PcrCount { get; init; }
    /// <summary>PCR banks and the PCRs allocated in each (TPM_CAP_PCRS); a bank with no PCR selected is not active.</summary>
    public required PcrSelection PcrBanks { get; init; }
    /// <summary>Banks with at least one PCR allocated.</summary>
    public IReadOnlyList<TpmAlgId> ActivePcrBanks => PcrBanks.NonEmptyBanks;
    /// <summary>Persistent object handles (0x81xxxxxx).</summary>
    public required IReadOnlyList<uint> PersistentHandles { get; init; }
    /// <summary>Defined NV indices (0x01xxxxxx).</summary>
    public required IReadOnlyList<uint> NvIndices { get; init; }
    /// <summary>TPM_PT_NV_BUFFER_MAX: the largest NV_Read/NV_Write chunk.</summary>
    public required int MaxNvBuffer { get; init; }
}

/// <summary>A quote: the signed TPMS_ATTEST and its TPMT_SIGNATURE, both as the TPM marshaled them.</summary>
/// <param name="Attest">TPMS_ATTEST bytes (the TPM2B_ATTEST contents; tpm2-tools' <c>-m</c> message file).</param>
/// <param name="Signature">TPMT_SIGNATURE bytes (tpm2-tools' <c>-s</c> signature file).</param>
public sealed record TpmQuoteResult(byte[] Attest, byte[] Signature)
{
    /// <summary>The parsed attestation structure.</summary>
    public TpmsAttest ParseAttest() => TpmsAttest.Parse(Attest);
    /// <summary>The parsed signature.</summary>
    public TpmtSignature ParseSignature() => TpmtSignature.Parse(Signature);
}

/// <summary>The EK certificate NV indices (TCG EK Credential Profile), each with the EK template that belongs to it.</summary>
public enum EkKind
{
    /// <summary>L-1: RSA 2048 low range, certificate at 0x01C00002.</summary>
    Rsa2048 = 1,
    /// <summary>L-2: ECC NIST P-256 low range, certificate at 0x01C0000A.</summary>
    EccP256,
    /// <summary>H-1: RSA 2048 high range, certificate at 0x01C00012.</summary>
    Rsa2048High,
    /// <summary>H-3: ECC NIST P-256 high range, certificate at 0x01C00014.</summary>
    EccP256High,
    /// <summary>H-4: ECC NIST P-384 high range, certificate at 0x01C00016 (swtpm's ECC EK).</summary>
    EccP384High,
}

/// <summary>Maps <see cref="EkKind"/> to NV indices and templates.</summary>
public static class EkKinds
{
    /// <summary>The EK certificate NV index of <paramref name="kind"/>.</summary>
    public static uint CertificateIndex(EkKind kind) => kind switch
    {
        EkKind.Rsa2048 => TpmHandle.NvEkCertRsa2048,
        EkKind.EccP256 => TpmHandle.NvEkCertEccP256,
        EkKind.Rsa2048High => TpmHandle.NvEkCertHighRsa2048,
        EkKind.EccP256High => TpmHandle.NvEkCertHighEccP256,
        EkKind.EccP384High => TpmHandle.NvEkCertHighEccP384,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown EK kind."),
    };

    /// <summary>A fresh copy of the EK template of <paramref name="kind"/>.</summary>
    public static TpmPublic Template(EkKind kind) => TpmTemplates.EkTemplateForCertificateIndex(CertificateIndex(kind))
        ?? throw new ArgumentOutOfRangeException(nameof(kind), kind, "No template for this EK kind.");
}
