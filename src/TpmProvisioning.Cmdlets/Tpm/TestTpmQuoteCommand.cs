using System.Management.Automation;
using System.Security.Cryptography;
using System.Text;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Cmdlets;

/// <summary>
/// Verifies a quote against an AK public key and the nonce the verifier issued: magic, type, nonce, PCR selection,
/// PCR digest recomputed from the reported values, and the signature. Needs no TPM.
/// </summary>
[Cmdlet(VerbsDiagnostic.Test, "TpmQuote", DefaultParameterSetName = "Quote")]
[OutputType(typeof(TpmQuoteVerification), typeof(bool))]
public sealed class TestTpmQuoteCommand : PSCmdlet
{
    /// <summary>A quote from Get-IntegrityQuote.</summary>
    [Parameter(ParameterSetName = "Quote", Mandatory = true, ValueFromPipeline = true, Position = 0)]
    public TpmIntegrityQuote? InputObject { get; set; }

    /// <summary>A quote in Keylime's string form r&lt;attest&gt;:&lt;signature&gt;:&lt;pcrs&gt;, as a Keylime agent returns it.</summary>
    [Parameter(ParameterSetName = "Keylime", Mandatory = true, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true, Position = 0)]
    [Alias("Quote")]
    public string? KeylimeQuote { get; set; }

    /// <summary>TPMS_ATTEST bytes (tpm2_quote -m).</summary>
    [Parameter(ParameterSetName = "Parts", Mandatory = true)]
    [Alias("Message")]
    public byte[]? Attest { get; set; }

    /// <summary>TPMT_SIGNATURE bytes (tpm2_quote -s).</summary>
    [Parameter(ParameterSetName = "Parts", Mandatory = true)]
    public byte[]? Signature { get; set; }

    /// <summary>PCR values in tpm2-tools' PCR file format (tpm2_quote -o).</summary>
    [Parameter(ParameterSetName = "Parts", Mandatory = true)]
    public byte[]? PcrBlob { get; set; }

    /// <summary>
    /// The AK public key to check against: an object from New-TpmAttestationKey, TPM2B_PUBLIC or TPMT_PUBLIC bytes,
    /// DER SubjectPublicKeyInfo bytes, a PEM string, a base64 string, or the path of a file holding any of these
    /// (tpm2_createak -u / -f pem output).
    /// </summary>
    [Parameter(Mandatory = true)]
    [Alias("AkPublic", "AkPublicKey")]
    public object? AttestationKey { get; set; }

    /// <summary>The nonce the verifier issued (its UTF-8 bytes must equal the quote's extraData).</summary>
    [Parameter(Mandatory = true, ValueFromPipelineByPropertyName = true)]
    [AllowEmptyString]
    public string? Nonce { get; set; }

    /// <summary>PCRs the quote must cover (checked when given).</summary>
    [Parameter]
    [ValidateRange(0, 31)]
    public int[]? Pcr { get; set; }

    /// <summary>PCRs the quote must cover, as a Keylime-style hex mask (e.g. 0x408000).</summary>
    [Parameter]
    public string? PcrMask { get; set; }

    /// <summary>Bank of the expected PCRs (default sha256).</summary>
    [Parameter]
    [ValidateSet("sha1", "sha256", "sha384", "sha512")]
    public string HashAlgorithm { get; set; } = "sha256";

    /// <summary>Return only $true or $false.</summary>
    [Parameter]
    public SwitchParameter Quiet { get; set; }

    private PreparedAk? _ak;
    private string _akName = "";
    private PcrSelection? _expected;

    protected override void BeginProcessing()
    {
        try
        {
            var pub = AkPublicReader.Read(AttestationKey, SessionState.Path);
            _akName = TpmCmdletBase.Hex(pub.ComputeName());
            _ak = PreparedAk.Create(pub);
        }
        catch (Exception ex) when (ex is ArgumentException or TpmFormatException or CryptographicException or IOException or FormatException or NotSupportedException)
        {
            ThrowTerminatingError(new ErrorRecord(new ArgumentException("The attestation key could not be read: " + ex.Message, ex), "InvalidAttestationKey", ErrorCategory.InvalidArgument, AttestationKey));
        }
        var pcrs = TpmCmdletBase.ResolvePcrs(this, Pcr, PcrMask);
        if (pcrs is not null) _expected = PcrSelection.Create(TpmCmdletBase.ParseHashAlgorithm(HashAlgorithm), pcrs);
    }

    protected override void ProcessRecord()
    {
        var nonce = Encoding.UTF8.GetBytes(Nonce ?? "");
        QuoteVerificationResult result;
        switch (ParameterSetName)
        {
            case "Quote":
                result = VerifyParts(InputObject!.Attest, InputObject.Signature, InputObject.PcrBlob, nonce);
                break;
            case "Keylime":
                result = QuoteVerifier.VerifyKeylime(KeylimeQuote ?? "", _ak!, nonce, _expected);
                break;
            default:
                result = VerifyParts(Attest!, Signature!, PcrBlob!, nonce);
                break;
        }
        if (Quiet)
        {
            WriteObject(result.IsValid);
            return;
        }
        WriteObject(new TpmQuoteVerification
        {
            IsValid = result.IsValid,
            FailedChecks = result.Failures.Select(f => f.Code).ToArray(),
            Failures = result.Failures.ToArray(),
            Nonce = Nonce ?? "",
            PcrSelection = result.Attest?.PcrSelect?.ToString(),
            Signer = result.Attest is { } a ? TpmCmdletBase.Hex(a.QualifiedSigner) : null,
            Clock = result.Attest?.ClockInfo.Clock,
            AkName = _akName,
        });
    }

    private QuoteVerificationResult VerifyParts(byte[] attest, byte[] signature, byte[] pcrBlob, byte[] nonce)
    {
        // The Keylime path parses the PCR blob and reports a malformed one as a named failure.
        var keylime = global::TpmProvisioning.Tpm.KeylimeQuote.Format(attest, signature, pcrBlob);
        return QuoteVerifier.VerifyKeylime(keylime, _ak!, nonce, _expected);
    }

    protected override void EndProcessing() => _ak?.Dispose();
}

/// <summary>Reads an AK public key from the forms admins have at hand.</summary>
internal static class AkPublicReader
{
    public static TpmPublic Read(object? value, PathIntrinsics? paths)
    {
        value = value is PSObject pso ? pso.BaseObject : value;
        switch (value)
        {
            case null:
                throw new ArgumentException("No attestation key given.");
            case TpmAttestationKey ak:
                return TpmPublic.ParseTpm2B(ak.PublicArea);
            case TpmPublic p:
                return p;
            case byte[] bytes:
                return FromBytes(bytes);
            case object[] arr when arr.All(o => (o is PSObject ps ? ps.BaseObject : o) is byte):
                return FromBytes(arr.Select(o => (byte)(o is PSObject ps ? ps.BaseObject : o)).ToArray());
            case FileInfo fi:
                return FromFile(fi.FullName);
            case string s:
                s = s.Trim();
                if (s.StartsWith("-----BEGIN", StringComparison.Ordinal)) return FromPem(s);
                string? path = null;
                try { path = paths?.GetUnresolvedProviderPathFromPSPath(s) ?? Path.GetFullPath(s); } catch (Exception) { }
                if (path is not null && File.Exists(path)) return FromFile(path);
                try { return FromBytes(Convert.FromBase64String(s)); }
                catch (FormatException) { throw new ArgumentException($"'{(s.Length > 40 ? s[..40] + "…" : s)}' is neither a file, PEM nor base64."); }
            default:
                throw new ArgumentException($"A {value.GetType().Name} is not an attestation key; pass a TpmAttestationKey, bytes, PEM, base64 or a file path.");
        }
    }

    private static TpmPublic FromFile(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var text = Encoding.ASCII.GetString(bytes, 0, Math.Min(bytes.Length, 64));
        return text.TrimStart().StartsWith("-----BEGIN", StringComparison.Ordinal) ? FromPem(Encoding.ASCII.GetString(bytes)) : FromBytes(bytes);
    }

    private static TpmPublic FromPem(string pem)
    {
        var fields = PemEncoding.Find(pem);
        var der = Convert.FromBase64String(pem[fields.Base64Data]);
        return FromBytes(der);
    }

    public static TpmPublic FromBytes(byte[] bytes)
    {
        if (bytes.Length > 2 && (bytes[0] << 8 | bytes[1]) == bytes.Length - 2)
        {
            try { return TpmPublic.ParseTpm2B(bytes); } catch (TpmFormatException) { }
        }
        if (bytes.Length > 0 && bytes[0] == 0x30)
        {
            // DER SubjectPublicKeyInfo: rebuild the public area from the module's AK template of the key's type.
            using var probe = System.Security.Cryptography.RSA.Create();
            try
            {
                probe.ImportSubjectPublicKeyInfo(bytes, out _);
                return TpmPublic.FromSubjectPublicKeyInfo(bytes, TpmTemplates.AkRsa2048);
            }
            catch (CryptographicException)
            {
                return TpmPublic.FromSubjectPublicKeyInfo(bytes, TpmTemplates.AkEccP256);
            }
        }
        return TpmPublic.Parse(bytes);
    }
}
