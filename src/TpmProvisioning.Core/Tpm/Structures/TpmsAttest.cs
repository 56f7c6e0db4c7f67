namespace TpmProvisioning.Tpm;

/// <summary>TPMS_CLOCK_INFO.</summary>
public readonly record struct TpmsClockInfo(ulong Clock, uint ResetCount, uint RestartCount, bool Safe);

/// <summary>
/// TPMS_ATTEST, the structure a TPM signs for Quote, Certify, CertifyCreation, GetTime and the audit/NV attestations.
/// Parsing keeps the exact bytes in <see cref="Raw"/> (the signature covers them) and does not enforce the magic, so a verifier
/// can report a bad magic alongside other failures.
/// </summary>
public sealed class TpmsAttest
{
    /// <summary>Largest TPM2B_NAME (2-byte algorithm + SHA-512 digest).</summary>
    public const int MaxNameBytes = 2 + 64;
    /// <summary>Largest TPM2B_DATA (sizeof(TPMT_HA)).</summary>
    public const int MaxDataBytes = 2 + 64;

    /// <summary>magic: TPM_GENERATED_VALUE (0xFF544347) when the TPM produced the structure.</summary>
    public uint Magic { get; init; } = TpmGenerated.Value;
    /// <summary>The attestation type (for a quote <see cref="TpmSt.AttestQuote"/>).</summary>
    public TpmSt Type { get; init; }
    /// <summary>Qualified Name of the signing key.</summary>
    public byte[] QualifiedSigner { get; init; } = [];
    /// <summary>extraData: the caller's qualifying data (the verifier's nonce).</summary>
    public byte[] ExtraData { get; init; } = [];
    /// <summary>Clock, reset and restart counters and the safe flag.</summary>
    public TpmsClockInfo ClockInfo { get; init; }
    /// <summary>TPM firmware version.</summary>
    public ulong FirmwareVersion { get; init; }

    /// <summary>Quote: the selected PCRs.</summary>
    public PcrSelection? PcrSelect { get; init; }
    /// <summary>Quote: digest of the selected PCR values.</summary>
    public byte[]? PcrDigest { get; init; }
    /// <summary>Certify: Name of the certified object. Creation: Name of the created object. NV: the index Name.</summary>
    public byte[]? ObjectName { get; init; }
    /// <summary>Certify: qualified Name of the certified object.</summary>
    public byte[]? QualifiedName { get; init; }
    /// <summary>Creation: the creation hash.</summary>
    public byte[]? CreationHash { get; init; }

    /// <summary>The marshaled TPMU_ATTEST part (whatever the type).</summary>
    public byte[] Attested { get; init; } = [];
    /// <summary>The complete TPMS_ATTEST bytes as parsed or built.</summary>
    public byte[] Raw { get; init; } = [];

    /// <summary>True when <see cref="Magic"/> is TPM_GENERATED_VALUE.</summary>
    public bool IsTpmGenerated => Magic == TpmGenerated.Value;
    /// <summary>True for a quote.</summary>
    public bool IsQuote => Type == TpmSt.AttestQuote;

    /// <summary>Parses a TPMS_ATTEST that fills <paramref name="data"/> exactly.</summary>
    public static TpmsAttest Parse(ReadOnlySpan<byte> data)
    {
        var r = new TpmReader(data, "TPMS_ATTEST");
        uint magic = r.U32();
        var type = (TpmSt)r.U16();
        var signer = r.B2(MaxNameBytes);
        var extra = r.B2(MaxDataBytes);
        var clock = ReadClock(ref r);
        ulong fw = r.U64();
        int attestedAt = r.Position;
        PcrSelection? sel = null;
        byte[]? pcrDigest = null, objName = null, qName = null, creationHash = null;
        switch (type)
        {
            case TpmSt.AttestQuote:
                sel = PcrSelection.Read(ref r);
                pcrDigest = r.B2(64);
                break;
            case TpmSt.AttestCertify:
                objName = r.B2(MaxNameBytes);
                qName = r.B2(MaxNameBytes);
                break;
            case TpmSt.AttestCreation:
                objName = r.B2(MaxNameBytes);
                creationHash = r.B2(64);
                break;
            case TpmSt.AttestTime:
                r.U64(); ReadClock(ref r); r.U64();
                break;
            case TpmSt.AttestCommandAudit:
                r.U64(); r.U16(); r.B2(64); r.B2(64);
                break;
            case TpmSt.AttestSessionAudit:
                ReadYesNo(ref r); r.B2(64);
                break;
            case TpmSt.AttestNv:
                objName = r.B2(MaxNameBytes); r.U16(); r.B2(2048);
                break;
            case var t when t == TpmStExtra.AttestNvDigest:
                objName = r.B2(MaxNameBytes); r.B2(64);
                break;
            default:
                throw new TpmFormatException($"TPMS_ATTEST: unknown attestation type 0x{(ushort)type:X4}.");
        }
        var attested = data[attestedAt..r.Position].ToArray();
        r.ExpectEnd();
        return new TpmsAttest
        {
            Magic = magic, Type = type, QualifiedSigner = signer, ExtraData = extra, ClockInfo = clock, FirmwareVersion = fw,
            PcrSelect = sel, PcrDigest = pcrDigest, ObjectName = objName, QualifiedName = qName, CreationHash = creationHash,
            Attested = attested, Raw = data.ToArray(),
        };
    }

    private static TpmsClockInfo ReadClock(ref TpmReader r)
    {
        ulong clock = r.U64();
        uint reset = r.U32();
        uint restart = r.U32();
        bool safe = ReadYesNo(ref r);
        return new TpmsClockInfo(clock, reset, restart, safe);
    }

    private static bool ReadYesNo(ref TpmReader r)
    {
        byte b = r.U8();
        if (b > 1) throw new TpmFormatException($"TPMS_ATTEST: TPMI_YES_NO value {b}.");
        return b == 1;
    }

    /// <summary>Builds a quote's TPMS_ATTEST (for software-signed evidence in tests, simulators and benchmarks).</summary>
    public static TpmsAttest CreateQuote(byte[] qualifiedSigner, byte[] extraData, TpmsClockInfo clockInfo, ulong firmwareVersion,
        PcrSelection selection, byte[] pcrDigest, uint magic = TpmGenerated.Value)
    {
        ArgumentNullException.ThrowIfNull(selection);
        var a = new TpmWriter();
        selection.Marshal(a);
        a.B2(pcrDigest);
        var attested = a.ToArray();
        var w = new TpmWriter(64 + qualifiedSigner.Length + extraData.Length + attested.Length);
        w.U32(magic).U16((ushort)TpmSt.AttestQuote).B2(qualifiedSigner).B2(extraData)
            .U64(clockInfo.Clock).U32(clockInfo.ResetCount).U32(clockInfo.RestartCount).U8(clockInfo.Safe ? (byte)1 : (byte)0)
            .U64(firmwareVersion).Bytes(attested);
        return new TpmsAttest
        {
            Magic = magic, Type = TpmSt.AttestQuote, QualifiedSigner = qualifiedSigner, ExtraData = extraData, ClockInfo = clockInfo,
            FirmwareVersion = firmwareVersion, PcrSelect = selection, PcrDigest = pcrDigest, Attested = attested, Raw = w.ToArray(),
        };
    }
}
