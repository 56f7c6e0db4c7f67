namespace TpmProvisioning.Tpm;

/// <summary>TPM_ALG_ID values (TPM 2.0 Part 2, 6.3) used by the product.</summary>
public enum TpmAlgId : ushort
{
    Error = 0x0000,
    Rsa = 0x0001,
    Sha1 = 0x0004,
    Hmac = 0x0005,
    Aes = 0x0006,
    KeyedHash = 0x0008,
    Xor = 0x000A,
    Sha256 = 0x000B,
    Sha384 = 0x000C,
    Sha512 = 0x000D,
    Null = 0x0010,
    Sm3_256 = 0x0012,
    RsaSsa = 0x0014,
    RsaEs = 0x0015,
    RsaPss = 0x0016,
    Oaep = 0x0017,
    EcDsa = 0x0018,
    Ecdh = 0x0019,
    EcDaa = 0x001A,
    EcSchnorr = 0x001C,
    Kdf1Sp800_56A = 0x0020,
    Kdf1Sp800_108 = 0x0022,
    Ecc = 0x0023,
    SymCipher = 0x0025,
    Ctr = 0x0040,
    Ofb = 0x0041,
    Cbc = 0x0042,
    Cfb = 0x0043,
    Ecb = 0x0044,
}

/// <summary>TPM_ECC_CURVE values.</summary>
public enum TpmEccCurve : ushort
{
    None = 0x0000,
    NistP192 = 0x0001,
    NistP224 = 0x0002,
    NistP256 = 0x0003,
    NistP384 = 0x0004,
    NistP521 = 0x0005,
    BnP256 = 0x0010,
    BnP638 = 0x0011,
    Sm2P256 = 0x0020,
}

/// <summary>TPM_ST structure tags.</summary>
public enum TpmSt : ushort
{
    RspCommand = 0x00C4,
    Null = 0x8000,
    NoSessions = 0x8001,
    Sessions = 0x8002,
    AttestNv = 0x8014,
    AttestCommandAudit = 0x8015,
    AttestSessionAudit = 0x8016,
    AttestCertify = 0x8017,
    AttestQuote = 0x8018,
    AttestTime = 0x8019,
    AttestCreation = 0x801A,
    Creation = 0x8021,
    Verified = 0x8022,
    AuthSecret = 0x8023,
    Hashcheck = 0x8024,
    AuthSigned = 0x8025,
}

/// <summary>TPM_CC command codes the engine sends.</summary>
public enum TpmCc : uint
{
    NV_UndefineSpace = 0x00000122,
    EvictControl = 0x00000120,
    NV_DefineSpace = 0x0000012A,
    CreatePrimary = 0x00000131,
    NV_Write = 0x00000137,
    SelfTest = 0x00000143,
    Startup = 0x00000144,
    Shutdown = 0x00000145,
    ActivateCredential = 0x00000147,
    Certify = 0x00000148,
    NV_Read = 0x0000014E,
    PolicySecret = 0x00000151,
    Create = 0x00000153,
    Load = 0x00000157,
    Quote = 0x00000158,
    Sign = 0x0000015D,
    Unseal = 0x0000015E,
    FlushContext = 0x00000165,
    LoadExternal = 0x00000167,
    MakeCredential = 0x00000168,
    NV_ReadPublic = 0x00000169,
    PolicyAuthValue = 0x0000016B,
    PolicyCommandCode = 0x0000016C,
    PolicyOR = 0x00000171,
    ReadPublic = 0x00000173,
    StartAuthSession = 0x00000176,
    VerifySignature = 0x00000177,
    GetCapability = 0x0000017A,
    GetRandom = 0x0000017B,
    Hash = 0x0000017D,
    PCR_Read = 0x0000017E,
    PolicyGetDigest = 0x00000189,
    PCR_Extend = 0x00000182,
    PCR_Reset = 0x0000013D,
    PolicyPassword = 0x0000018C,
}

/// <summary>Permanent and range handles.</summary>
public static class TpmHandle
{
    public const uint RhOwner = 0x40000001;
    public const uint RhNull = 0x40000007;
    public const uint RsPw = 0x40000009;
    public const uint RhLockout = 0x4000000A;
    public const uint RhEndorsement = 0x4000000B;
    public const uint RhPlatform = 0x4000000C;
    public const uint HrPcr = 0x00000000;
    public const uint HrHmacSession = 0x02000000;
    public const uint HrPolicySession = 0x03000000;
    public const uint HrTransient = 0x80000000;
    public const uint HrPersistent = 0x81000000;
    public const uint HrNvIndex = 0x01000000;

    /// <summary>TCG EK Credential Profile NV indices.</summary>
    public const uint NvEkCertRsa2048 = 0x01C00002;
    public const uint NvEkNonceRsa2048 = 0x01C00003;
    public const uint NvEkTemplateRsa2048 = 0x01C00004;
    public const uint NvEkCertEccP256 = 0x01C0000A;
    public const uint NvEkNonceEccP256 = 0x01C0000B;
    public const uint NvEkTemplateEccP256 = 0x01C0000C;
    /// <summary>High-range EK certificates (EK Credential Profile 2.3+): RSA 2048 0x01C00012, RSA 3072 0x01C0001C, ECC P-256 0x01C00014, P-384 0x01C00016, P-521 0x01C00018.</summary>
    public const uint NvEkCertHighRsa2048 = 0x01C00012;
    public const uint NvEkCertHighEccP256 = 0x01C00014;
    public const uint NvEkCertHighEccP384 = 0x01C00016;
    public const uint NvEkCertHighEccP521 = 0x01C00018;
    public const uint NvEkCertHighRsa3072 = 0x01C0001C;
}

/// <summary>TPMA_OBJECT bits.</summary>
[Flags]
public enum TpmaObject : uint
{
    None = 0,
    FixedTpm = 1u << 1,
    StClear = 1u << 2,
    FixedParent = 1u << 4,
    SensitiveDataOrigin = 1u << 5,
    UserWithAuth = 1u << 6,
    AdminWithPolicy = 1u << 7,
    NoDA = 1u << 10,
    EncryptedDuplication = 1u << 11,
    Restricted = 1u << 16,
    Decrypt = 1u << 17,
    Sign = 1u << 18,
    X509Sign = 1u << 19,
}

/// <summary>TPM_SE session types.</summary>
public enum TpmSe : byte
{
    Hmac = 0x00,
    Policy = 0x01,
    Trial = 0x03,
}

/// <summary>TPM_CAP capability selectors.</summary>
public enum TpmCap : uint
{
    Algs = 0x00000000,
    Handles = 0x00000001,
    Commands = 0x00000002,
    PpCommands = 0x00000003,
    AuditCommands = 0x00000004,
    Pcrs = 0x00000005,
    TpmProperties = 0x00000006,
    PcrProperties = 0x00000007,
    EccCurves = 0x00000008,
}

/// <summary>TPM_PT properties (fixed group starts at 0x100).</summary>
public enum TpmPt : uint
{
    FamilyIndicator = 0x100,
    Level = 0x101,
    Revision = 0x102,
    DayOfYear = 0x103,
    Year = 0x104,
    Manufacturer = 0x105,
    VendorString1 = 0x106,
    VendorString2 = 0x107,
    VendorString3 = 0x108,
    VendorString4 = 0x109,
    VendorTpmType = 0x10A,
    FirmwareVersion1 = 0x10B,
    FirmwareVersion2 = 0x10C,
    PcrCount = 0x112,
}

/// <summary>TPM_GENERATED_VALUE, the magic at the start of every TPMS_ATTEST.</summary>
public static class TpmGenerated
{
    public const uint Value = 0xFF544347;
}

/// <summary>Additional TPM_ALG_ID values recognised by the structure parsers (TPM 2.0 Part 2, 6.3).</summary>
public static class TpmAlgIdExtra
{
    public const TpmAlgId Mgf1 = (TpmAlgId)0x0007;
    public const TpmAlgId Sm4 = (TpmAlgId)0x0013;
    public const TpmAlgId Sm2 = (TpmAlgId)0x001B;
    public const TpmAlgId EcMqv = (TpmAlgId)0x001D;
    public const TpmAlgId Kdf2 = (TpmAlgId)0x0021;
    public const TpmAlgId Camellia = (TpmAlgId)0x0026;
}

/// <summary>TPM_ST_ATTEST_NV_DIGEST (TPM 2.0 Part 2, 6.9), not in <see cref="TpmSt"/>.</summary>
public static class TpmStExtra
{
    public const TpmSt AttestNvDigest = (TpmSt)0x801C;
}
