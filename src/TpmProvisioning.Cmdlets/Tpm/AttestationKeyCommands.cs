using System.Management.Automation;
using System.Security.Cryptography;
using System.Text;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Cmdlets;

/// <summary>Creates a restricted signing attestation key (AK) under the TPM's storage root key; persists it unless -Transient.</summary>
[Cmdlet(VerbsCommon.New, "TpmAttestationKey", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(TpmAttestationKey))]
public sealed class NewTpmAttestationKeyCommand : TpmCmdletBase
{
    /// <summary>First handle tried when no -AkHandle is given (owner hierarchy range, after the conventional SRK 0x81000001).</summary>
    public const uint FirstAutoHandle = TpmProvisioning.Provisioning.DeviceProvisioning.DefaultAkHandleSearchStart;
    /// <summary>Last handle tried automatically.</summary>
    public const uint LastAutoHandle = 0x810000FF;

    /// <summary>Rsa (RSA 2048, RSASSA-SHA256; default) or Ecc (NIST P-256, ECDSA-SHA256).</summary>
    [Parameter(Position = 0)]
    [ValidateSet("Rsa", "Ecc")]
    public string Algorithm { get; set; } = "Rsa";

    /// <summary>Persistent handle (0x81000000-0x81FFFFFF) for the AK. Default: the first free handle from 0x81000002.</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [Alias("PersistentHandle", "Handle")]
    [TpmHandleTransformation]
    public uint? AkHandle { get; set; }

    /// <summary>Keep the key transient: nothing is stored in the TPM; the output carries the wrapped private blob to reload it.</summary>
    [Parameter]
    public SwitchParameter Transient { get; set; }

    /// <summary>Replace an object already persisted at -AkHandle.</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void BeginProcessing()
    {
        if (Transient && AkHandle is not null)
            ThrowTerminatingError(new ErrorRecord(new ArgumentException("-Transient and -AkHandle exclude each other."), "TransientWithHandle", ErrorCategory.InvalidArgument, AkHandle));
    }

    protected override void ProcessRecord() => WithTpm(tpm =>
    {
        bool ecc = Algorithm.Equals("Ecc", StringComparison.OrdinalIgnoreCase);
        var template = ecc ? TpmTemplates.AkEccP256 : TpmTemplates.AkRsa2048;
        uint? handle = null;
        if (!Transient)
        {
            if (AkHandle is { } h)
            {
                if ((h & 0xFF000000) != TpmHandle.HrPersistent)
                    throw new ArgumentException($"0x{h:x8} is not a persistent handle (0x81000000-0x81FFFFFF).");
                if (!Force && tpm.GetHandles(TpmHandle.HrPersistent).Contains(h))
                {
                    WriteError(new ErrorRecord(new InvalidOperationException($"The TPM already holds an object at 0x{h:x8}. Use -Force to replace it or choose another -AkHandle."),
                        "PersistentHandleInUse", ErrorCategory.ResourceExists, $"0x{h:x8}"));
                    return;
                }
                handle = h;
            }
            else
            {
                handle = tpm.FindFreePersistentHandle(FirstAutoHandle, LastAutoHandle);
                if (handle is null)
                {
                    WriteError(new ErrorRecord(new InvalidOperationException($"No free persistent handle between 0x{FirstAutoHandle:x8} and 0x{LastAutoHandle:x8}; pass -AkHandle."),
                        "NoFreePersistentHandle", ErrorCategory.LimitsExceeded, EffectiveTpm));
                    return;
                }
            }
        }
        var what = handle is { } ph ? $"Create a {Algorithm} attestation key and persist it at 0x{ph:x8}" : $"Create a transient {Algorithm} attestation key";
        if (!ShouldProcess(EffectiveTpm, what)) return;

        var created = tpm.CreateAk(template);
        var ak = created.Key;
        try
        {
            if (handle is { } target)
            {
                WriteVerbose($"Persisting AK at 0x{target:x8}.");
                tpm.PersistObject(ak.Handle, target, replace: Force);
            }
        }
        finally { tpm.TryFlush(ak.Handle); }
        Emit(new TpmAttestationKey
        {
            Algorithm = ecc ? "ECC" : "RSA",
            Handle = handle,
            Name = Hex(ak.Name),
            PublicArea = ak.Public.ToTpm2B(),
            PublicKey = ak.Public.ToSubjectPublicKeyInfo(),
            PrivateBlob = handle is null ? created.PrivateBlob : null,
            ParentTemplate = "Rsa2048",
            Tpm = EffectiveTpm ?? "",
        });
    });
}

/// <summary>Quotes PCRs with an attestation key over a nonce, and reads the PCR values that go with the quote.</summary>
[Cmdlet(VerbsCommon.Get, "IntegrityQuote", DefaultParameterSetName = "Key")]
[OutputType(typeof(TpmIntegrityQuote))]
public sealed class GetIntegrityQuoteCommand : TpmCmdletBase
{
    /// <summary>The AK from New-TpmAttestationKey (persistent, or transient and reloaded for this quote).</summary>
    [Parameter(ParameterSetName = "Key", Mandatory = true, ValueFromPipeline = true, Position = 0)]
    public TpmAttestationKey? AttestationKey { get; set; }

    /// <summary>Persistent handle of an AK already in the TPM, e.g. 0x81000010.</summary>
    [Parameter(ParameterSetName = "Handle", Mandatory = true, ValueFromPipelineByPropertyName = true)]
    [TpmHandleTransformation]
    public uint AkHandle { get; set; }

    /// <summary>The verifier's nonce; its UTF-8 bytes become the quote's extraData (as Keylime does). Default: 20 random characters.</summary>
    [Parameter]
    [ValidateLength(1, 64)]
    public string? Nonce { get; set; }

    /// <summary>PCR indices to quote (default 0-23).</summary>
    [Parameter]
    [ValidateRange(0, 31)]
    public int[]? Pcr { get; set; }

    /// <summary>PCRs as a Keylime-style hex bit mask, e.g. 0x408000 for PCRs 15 and 22.</summary>
    [Parameter]
    public string? PcrMask { get; set; }

    /// <summary>PCR bank to quote: sha1, sha256 (default), sha384, sha512.</summary>
    [Parameter]
    [ValidateSet("sha1", "sha256", "sha384", "sha512")]
    public string HashAlgorithm { get; set; } = "sha256";

    protected override void BeginProcessing() => Pcr = ResolvePcrs(this, Pcr, PcrMask);

    protected override void ProcessRecord()
    {
        if (AttestationKey is not null && string.IsNullOrEmpty(Tpm) && !string.IsNullOrEmpty(AttestationKey.Tpm)) Tpm = AttestationKey.Tpm;
        WithTpm(tpm =>
        {
            var nonce = Nonce ?? RandomNonce();
            var nonceBytes = Encoding.UTF8.GetBytes(nonce);
            if (nonceBytes.Length > 64) throw new ArgumentException("The nonce is longer than 64 bytes in UTF-8; a TPM takes at most 64.");
            var bank = ParseHashAlgorithm(HashAlgorithm);
            var pcrs = (Pcr is { Length: > 0 } ? Pcr : Enumerable.Range(0, 24)).Distinct().Order().ToArray();
            var selection = PcrSelection.Create(bank, pcrs);

            uint handle;
            uint? loaded = null;
            byte[] name;
            if (AttestationKey is { } key && key.Handle is null)
            {
                if (key.PrivateBlob is null) throw new ArgumentException("The attestation key has neither a persistent handle nor a private blob to load.");
                var srk = tpm.CreateSrk();
                try { loaded = tpm.Load(srk.Handle, key.PrivateBlob, key.PublicArea.AsSpan(2).ToArray()).Handle; }
                finally { tpm.TryFlush(srk.Handle); }
                handle = loaded.Value;
            }
            else handle = AttestationKey?.Handle ?? AkHandle;
            try
            {
                name = tpm.ReadPublic(handle).Object.Name;
                WriteVerbose($"Quoting {selection} with AK 0x{handle:x8} over nonce '{nonce}'.");
                var evidence = tpm.GetIntegrityQuote(handle, nonceBytes, selection);
                var attest = evidence.ParseAttest();
                Emit(new TpmIntegrityQuote
                {
                    Nonce = nonce,
                    NonceBytes = nonceBytes,
                    HashAlgorithm = HashName(bank),
                    Pcr = pcrs,
                    PcrSelection = selection.ToString(),
                    Attest = evidence.Attest,
                    Signature = evidence.Signature,
                    PcrBlob = evidence.PcrBlob,
                    PcrValues = pcrs.Select(i => evidence.PcrValues.TryGet(bank, i, out var v)
                        ? new TpmPcrValue { Bank = HashName(bank), Index = i, Value = Hex(v), Digest = v, Tpm = EffectiveTpm ?? "" } : null)
                        .Where(v => v is not null).ToArray()!,
                    KeylimeQuote = evidence.ToKeylimeString(),
                    AkName = Hex(name),
                    Clock = attest.ClockInfo.Clock,
                    ResetCount = attest.ClockInfo.ResetCount,
                    Tpm = EffectiveTpm ?? "",
                    Time = DateTimeOffset.Now,
                });
            }
            finally { if (loaded is { } l) tpm.TryFlush(l); }
        });
    }

    private static string RandomNonce()
    {
        const string alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        return RandomNumberGenerator.GetString(alphabet, 20);
    }
}
