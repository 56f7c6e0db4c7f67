using System.Management.Automation;
using System.Security.Cryptography;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Cmdlets;

/// <summary>Reads a TPM's identity and capabilities: manufacturer, firmware, PCR banks, persistent handles.</summary>
[Cmdlet(VerbsCommon.Get, "TpmInfo")]
[OutputType(typeof(TpmInfo))]
public sealed class GetTpmInfoCommand : TpmCmdletBase
{
    protected override void ProcessRecord() => WithTpm(tpm =>
    {
        var info = tpm.GetInfo();
        var pso = PSObject.AsPSObject(info);
        pso.Properties.Add(new PSNoteProperty("Tpm", EffectiveTpm));
        Emit(pso);
    });
}

/// <summary>Reads PCR values from one or more banks.</summary>
[Cmdlet(VerbsCommon.Get, "TpmPcr")]
[OutputType(typeof(TpmPcrValue))]
public sealed class GetTpmPcrCommand : TpmCmdletBase
{
    /// <summary>PCR indices to read (default 0-23).</summary>
    [Parameter(Position = 0)]
    [ValidateRange(0, 31)]
    public int[]? Pcr { get; set; }

    /// <summary>Banks to read: sha1, sha256, sha384, sha512 (default: every active bank).</summary>
    [Parameter]
    [ValidateSet("sha1", "sha256", "sha384", "sha512")]
    [Alias("Bank")]
    public string[]? HashAlgorithm { get; set; }

    protected override void ProcessRecord() => WithTpm(tpm =>
    {
        // Only what a PCR read needs (banks and PCR count), not the whole of Get-TpmInfo.
        var active = tpm.GetPcrBanks().NonEmptyBanks;
        int pcrCount = (int)(tpm.GetTpmProperty((uint)TpmPt.PcrCount) ?? 24);
        IEnumerable<TpmAlgId> banks = HashAlgorithm is { Length: > 0 } ? HashAlgorithm.Select(ParseHashAlgorithm).Distinct() : active;
        var pcrs = (Pcr is { Length: > 0 } ? Pcr : Enumerable.Range(0, Math.Min(24, pcrCount))).Distinct().Order().ToArray();
        foreach (var bank in banks)
        {
            if (!active.Contains(bank))
            {
                WriteError(new ErrorRecord(new ArgumentException($"The TPM has no active {HashName(bank)} PCR bank (active: {string.Join(", ", active.Select(HashName))})."),
                    "PcrBankNotActive", ErrorCategory.InvalidArgument, HashName(bank)));
                continue;
            }
            var tooHigh = pcrs.Where(p => p >= pcrCount).ToArray();
            if (tooHigh.Length > 0)
            {
                WriteError(new ErrorRecord(new ArgumentException($"The TPM has {pcrCount} PCRs; PCR {string.Join(", ", tooHigh)} does not exist."),
                    "PcrIndexOutOfRange", ErrorCategory.InvalidArgument, tooHigh));
            }
            var valid = pcrs.Where(p => p < pcrCount).ToArray();
            if (valid.Length == 0) continue;
            var values = tpm.PcrRead(PcrSelection.Create(bank, valid));
            foreach (var i in valid)
            {
                if (!values.TryGet(bank, i, out var v)) continue;
                Emit(new TpmPcrValue { Bank = HashName(bank), Index = i, Value = Hex(v), Digest = v, Tpm = EffectiveTpm ?? "" });
            }
        }
    });
}

/// <summary>Reads an endorsement key, and its certificate from NV when the TPM holds one.</summary>
[Cmdlet(VerbsCommon.Get, "TpmEndorsementKey")]
[OutputType(typeof(TpmEndorsementKey))]
public sealed class GetTpmEndorsementKeyCommand : TpmCmdletBase
{
    /// <summary>Which EK: Rsa2048 (TCG template L-1, certificate at 0x01c00002; default), EccP256 (L-2, 0x01c0000a), or a high-range template (Rsa2048High, EccP256High, EccP384High).</summary>
    [Parameter(Position = 0)]
    [Alias("Kind", "Algorithm")]
    public EkKind[]? EkKind { get; set; }

    protected override void ProcessRecord() => WithTpm(tpm =>
    {
        foreach (var kind in EkKind is { Length: > 0 } ? EkKind.Distinct() : [TpmProvisioning.Tpm.EkKind.Rsa2048])
        {
            var ek = tpm.CreateEk(kind);
            try
            {
                var cert = tpm.ReadEkCertificate(kind);
                var spki = ek.Public.ToSubjectPublicKeyInfo();
                bool? matches = cert is null ? null : cert.PublicKey.ExportSubjectPublicKeyInfo().AsSpan().SequenceEqual(spki);
                if (cert is null) WriteVerbose($"No EK certificate at NV 0x{EkKinds.CertificateIndex(kind):x8}.");
                else if (matches == false)
                    WriteWarning($"The {kind} EK certificate at NV 0x{EkKinds.CertificateIndex(kind):x8} does not carry this TPM's {kind} EK public key.");
                Emit(new TpmEndorsementKey
                {
                    Kind = kind,
                    Algorithm = Describe(ek.Public),
                    Name = Hex(ek.Name),
                    PublicArea = ek.Public.ToTpm2B(),
                    PublicKey = spki,
                    Certificate = cert,
                    CertificateIndex = EkKinds.CertificateIndex(kind),
                    CertificateMatchesKey = matches,
                    Tpm = EffectiveTpm ?? "",
                });
            }
            finally { tpm.TryFlush(ek.Handle); }
        }
    });

    internal static string Describe(TpmPublic p) => p.IsRsa ? $"RSA {p.KeyBits}" : p.Curve switch
    {
        TpmEccCurve.NistP256 => "ECC NIST P-256",
        TpmEccCurve.NistP384 => "ECC NIST P-384",
        TpmEccCurve.NistP521 => "ECC NIST P-521",
        _ => $"ECC {p.Curve}",
    };
}
