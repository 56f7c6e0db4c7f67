namespace TpmProvisioning.Tpm;

/// <summary>Sealed data objects: a small secret kept as a TPM keyed-hash object that only this TPM can unseal.</summary>
public sealed partial class TpmDevice
{
    /// <summary>Largest secret a sealed keyed-hash object holds (MAX_SYM_DATA).</summary>
    public const int MaxSealedDataBytes = 128;

    /// <summary>
    /// The TPMT_PUBLIC of a sealed data object (<c>tpm2_create -i</c>): KEYEDHASH with the null scheme, SHA-256 name, fixedTPM,
    /// fixedParent, userWithAuth and noDA, no policy, empty unique (the TPM fills it).
    /// </summary>
    public static byte[] SealedObjectTemplate()
    {
        var w = new TpmWriter(32);
        w.Alg(TpmAlgId.KeyedHash).Alg(TpmAlgId.Sha256)
            .U32((uint)(TpmaObject.FixedTpm | TpmaObject.FixedParent | TpmaObject.UserWithAuth | TpmaObject.NoDA))
            .B2([]);
        w.Alg(TpmAlgId.Null); // TPMT_KEYEDHASH_SCHEME: null
        w.B2([]);             // unique
        return w.ToArray();
    }

    /// <summary>
    /// TPM2_Create of a sealed data object holding <paramref name="data"/> under a loaded storage parent. Returns the
    /// TPM2B_PRIVATE contents and the TPMT_PUBLIC bytes to keep beside it; only <see cref="Unseal"/> on this TPM reads the data.
    /// </summary>
    public (byte[] Private, byte[] Public) CreateSealed(uint parentHandle, ReadOnlySpan<byte> data, byte[]? parentAuth = null, byte[]? objectAuth = null)
    {
        if (data.Length is 0 or > MaxSealedDataBytes)
            throw new ArgumentOutOfRangeException(nameof(data), $"A sealed object holds 1 to {MaxSealedDataBytes} bytes.");
        var secret = data.ToArray();
        try
        {
            var r = Execute(TpmCc.Create, [parentHandle], Pw(parentAuth), w =>
            {
                w.Sized16(s => s.B2(objectAuth ?? []).B2(secret));
                w.B2(SealedObjectTemplate());
                w.B2([]);
                w.U32(0);
            });
            var rd = new TpmReader(r.Parameters, "TPM2_Create response");
            var priv = rd.B2();
            var pub = rd.Sized16().ToArray();
            return (priv, pub);
        }
        finally { System.Security.Cryptography.CryptographicOperations.ZeroMemory(secret); }
    }

    /// <summary>TPM2_Load of any object (sealed data included) without parsing its public area; returns the transient handle.</summary>
    public uint LoadObject(uint parentHandle, byte[] privateBlob, byte[] publicBytes, byte[]? parentAuth = null) =>
        Execute(TpmCc.Load, [parentHandle], Pw(parentAuth), w => { w.B2(privateBlob); w.B2(publicBytes); }, responseHandleCount: 1).Handles[0];

    /// <summary>TPM2_Unseal: the data of a loaded sealed object.</summary>
    public byte[] Unseal(uint itemHandle, byte[]? objectAuth = null)
    {
        var r = Execute(TpmCc.Unseal, [itemHandle], Pw(objectAuth), null);
        var rd = new TpmReader(r.Parameters, "TPM2_Unseal response");
        return rd.B2();
    }
}
