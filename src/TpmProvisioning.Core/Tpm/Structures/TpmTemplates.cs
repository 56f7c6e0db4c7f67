namespace TpmProvisioning.Tpm;

/// <summary>
/// Public-area templates for the keys the product creates. Each property returns a fresh copy that may be edited.
/// EK templates follow the TCG EK Credential Profile (2.4/2.5): L-1/L-2 (low range, PolicyA, adminWithPolicy only) and
/// H-1/H-3/H-4 (high range, PolicyB = PolicyOR(PolicyA, PolicyC), userWithAuth set, empty unique).
/// SRK and AK templates match tpm2-tools 5.x <c>tpm2_createprimary</c> and <c>tpm2_createak</c> defaults so Names agree.
/// </summary>
public static class TpmTemplates
{
    /// <summary>fixedTPM|fixedParent|sensitiveDataOrigin|adminWithPolicy|restricted|decrypt (0x000300B2).</summary>
    public const TpmaObject EkLowAttributes = TpmaObject.FixedTpm | TpmaObject.FixedParent | TpmaObject.SensitiveDataOrigin
        | TpmaObject.AdminWithPolicy | TpmaObject.Restricted | TpmaObject.Decrypt;

    /// <summary>The low-range attributes plus userWithAuth (0x000300F2).</summary>
    public const TpmaObject EkHighAttributes = EkLowAttributes | TpmaObject.UserWithAuth;

    /// <summary>fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|decrypt (0x00030072), tpm2_createprimary's default.</summary>
    public const TpmaObject SrkAttributes = TpmaObject.FixedTpm | TpmaObject.FixedParent | TpmaObject.SensitiveDataOrigin
        | TpmaObject.UserWithAuth | TpmaObject.Restricted | TpmaObject.Decrypt;

    /// <summary>fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|sign (0x00050072), tpm2_createak's attributes.</summary>
    public const TpmaObject AkAttributes = TpmaObject.FixedTpm | TpmaObject.FixedParent | TpmaObject.SensitiveDataOrigin
        | TpmaObject.UserWithAuth | TpmaObject.Restricted | TpmaObject.Sign;

    /// <summary>PolicyA, SHA-256: PolicySecret(TPM_RH_ENDORSEMENT).</summary>
    public static byte[] PolicyASha256 => Convert.FromHexString("837197674484B3F81A90CC8D46A5D724FD52D76E06520B64F2A1DA1B331469AA");
    /// <summary>PolicyA, SHA-384.</summary>
    public static byte[] PolicyASha384 => Convert.FromHexString("8BBF2266537C171CB56E403C4DC1D4B64F432611DC386E6F532050C3278C930E143E8BB1133824CCB431053871C6DB53");
    /// <summary>PolicyC, SHA-256: PolicyAuthorizeNV on the EK policy index 0x01C07F01.</summary>
    public static byte[] PolicyCSha256 => Convert.FromHexString("3767E2EDD43FF45A3A7E1EAEFCEF78643DCA964632E7AAD82C673A30D8633FDE");
    /// <summary>PolicyC, SHA-384.</summary>
    public static byte[] PolicyCSha384 => Convert.FromHexString("D6032CE61F2FB3C240EB3CF6A33237EF2B6A16F4293C22B455E261CFFD217AD5B4947C2D73E63005EED2DC2B3593D165");
    /// <summary>PolicyB, SHA-256: PolicyOR(PolicyA, PolicyC).</summary>
    public static byte[] PolicyBSha256 => Convert.FromHexString("CA3D0A99A2B93906F7A3342414EFCFB3A385D44CD1FD459089D19B5071C0B7A0");
    /// <summary>PolicyB, SHA-384: PolicyOR(PolicyA, PolicyC).</summary>
    public static byte[] PolicyBSha384 => Convert.FromHexString("B26E7D28D11A50BC53D882BCF5FD3A1A074148BB35D3B4E4CB1C0AD9BDE419CACB47BA09699646150F9FC000F3F80E12");

    /// <summary>EK template L-1: RSA 2048, SHA-256, AES-128-CFB, PolicyA, 256-byte zero unique (NV 0x01C00002).</summary>
    public static TpmPublic EkRsa2048 => new()
    {
        Type = TpmAlgId.Rsa, NameAlg = TpmAlgId.Sha256, Attributes = EkLowAttributes, AuthPolicy = PolicyASha256,
        Symmetric = TpmSymmetricDef.Aes128Cfb, Scheme = TpmScheme.Null, KeyBits = 2048, Exponent = 0, Modulus = new byte[256],
    };

    /// <summary>EK template L-2: ECC NIST P-256, SHA-256, AES-128-CFB, PolicyA, 32-byte zero X and Y (NV 0x01C0000A).</summary>
    public static TpmPublic EkEccP256 => new()
    {
        Type = TpmAlgId.Ecc, NameAlg = TpmAlgId.Sha256, Attributes = EkLowAttributes, AuthPolicy = PolicyASha256,
        Symmetric = TpmSymmetricDef.Aes128Cfb, Scheme = TpmScheme.Null, Curve = TpmEccCurve.NistP256, Kdf = TpmScheme.Null,
        X = new byte[32], Y = new byte[32],
    };

    /// <summary>EK template H-1: RSA 2048, SHA-256, AES-128-CFB, PolicyB, userWithAuth, empty unique (NV 0x01C00012).</summary>
    public static TpmPublic EkRsa2048High => new()
    {
        Type = TpmAlgId.Rsa, NameAlg = TpmAlgId.Sha256, Attributes = EkHighAttributes, AuthPolicy = PolicyBSha256,
        Symmetric = TpmSymmetricDef.Aes128Cfb, Scheme = TpmScheme.Null, KeyBits = 2048, Exponent = 0, Modulus = [],
    };

    /// <summary>EK template H-3: ECC NIST P-256, SHA-256, AES-128-CFB, PolicyB, userWithAuth, empty unique (NV 0x01C00014).</summary>
    public static TpmPublic EkEccP256High => new()
    {
        Type = TpmAlgId.Ecc, NameAlg = TpmAlgId.Sha256, Attributes = EkHighAttributes, AuthPolicy = PolicyBSha256,
        Symmetric = TpmSymmetricDef.Aes128Cfb, Scheme = TpmScheme.Null, Curve = TpmEccCurve.NistP256, Kdf = TpmScheme.Null,
    };

    /// <summary>
    /// EK template H-4: ECC NIST P-384, SHA-384, AES-256-CFB, PolicyB (SHA-384), userWithAuth, empty unique — the EK whose
    /// certificate swtpm_setup writes at NV 0x01C00016.
    /// </summary>
    public static TpmPublic EkEccP384High => new()
    {
        Type = TpmAlgId.Ecc, NameAlg = TpmAlgId.Sha384, Attributes = EkHighAttributes, AuthPolicy = PolicyBSha384,
        Symmetric = TpmSymmetricDef.Aes256Cfb, Scheme = TpmScheme.Null, Curve = TpmEccCurve.NistP384, Kdf = TpmScheme.Null,
    };

    /// <summary>The EK template that belongs with an EK certificate NV index (low and high range), or null if unknown.</summary>
    public static TpmPublic? EkTemplateForCertificateIndex(uint nvIndex) => nvIndex switch
    {
        TpmHandle.NvEkCertRsa2048 => EkRsa2048,
        TpmHandle.NvEkCertEccP256 => EkEccP256,
        TpmHandle.NvEkCertHighRsa2048 => EkRsa2048High,
        TpmHandle.NvEkCertHighEccP256 => EkEccP256High,
        TpmHandle.NvEkCertHighEccP384 => EkEccP384High,
        _ => null,
    };

    /// <summary>Storage primary key, RSA 2048 (tpm2_createprimary default "rsa2048:null:aes128cfb", SHA-256, empty unique).</summary>
    public static TpmPublic SrkRsa2048 => new()
    {
        Type = TpmAlgId.Rsa, NameAlg = TpmAlgId.Sha256, Attributes = SrkAttributes, AuthPolicy = [],
        Symmetric = TpmSymmetricDef.Aes128Cfb, Scheme = TpmScheme.Null, KeyBits = 2048, Exponent = 0, Modulus = [],
    };

    /// <summary>Storage primary key, ECC P-256 (tpm2_createprimary -G ecc256: null scheme and KDF, AES-128-CFB, SHA-256).</summary>
    public static TpmPublic SrkEccP256 => new()
    {
        Type = TpmAlgId.Ecc, NameAlg = TpmAlgId.Sha256, Attributes = SrkAttributes, AuthPolicy = [],
        Symmetric = TpmSymmetricDef.Aes128Cfb, Scheme = TpmScheme.Null, Curve = TpmEccCurve.NistP256, Kdf = TpmScheme.Null,
    };

    /// <summary>Attestation key, RSA 2048, RSASSA-SHA256 (tpm2_createak -G rsa -g sha256 -s rsassa).</summary>
    public static TpmPublic AkRsa2048 => new()
    {
        Type = TpmAlgId.Rsa, NameAlg = TpmAlgId.Sha256, Attributes = AkAttributes, AuthPolicy = [],
        Symmetric = TpmSymmetricDef.Null, Scheme = new TpmScheme(TpmAlgId.RsaSsa, TpmAlgId.Sha256), KeyBits = 2048, Exponent = 0, Modulus = [],
    };

    /// <summary>Attestation key, ECC P-256, ECDSA-SHA256 (tpm2_createak -G ecc -g sha256 -s ecdsa).</summary>
    public static TpmPublic AkEccP256 => new()
    {
        Type = TpmAlgId.Ecc, NameAlg = TpmAlgId.Sha256, Attributes = AkAttributes, AuthPolicy = [],
        Symmetric = TpmSymmetricDef.Null, Scheme = new TpmScheme(TpmAlgId.EcDsa, TpmAlgId.Sha256), Curve = TpmEccCurve.NistP256, Kdf = TpmScheme.Null,
    };
}
