namespace TpmProvisioning.Tpm;

/// <summary>
/// A quote with the PCR values it covers, read so that they reproduce the quoted PCR digest. This is the evidence a
/// Keylime agent returns from <c>/quotes/integrity</c>.
/// </summary>
public sealed record IntegrityQuoteEvidence(byte[] Attest, byte[] Signature, PcrSelection Selection, PcrValues PcrValues, byte[] PcrBlob)
{
    /// <summary>The Keylime quote string <c>r&lt;attest&gt;:&lt;signature&gt;:&lt;pcr blob&gt;</c>.</summary>
    public string ToKeylimeString() => KeylimeQuote.Format(Attest, Signature, PcrBlob);

    /// <summary>The parsed TPMS_ATTEST.</summary>
    public TpmsAttest ParseAttest() => TpmsAttest.Parse(Attest);
}

public sealed partial class TpmDevice
{
    /// <summary>
    /// Quotes <paramref name="selection"/> with the loaded or persistent key <paramref name="akHandle"/> over
    /// <paramref name="nonce"/>, then reads the PCR values. A PCR can be extended between the two commands, so the values
    /// are checked against the digest the TPM signed; on a mismatch the pair is taken again (up to
    /// <paramref name="attempts"/> times) before giving up with <see cref="InvalidOperationException"/>.
    /// </summary>
    public IntegrityQuoteEvidence GetIntegrityQuote(uint akHandle, ReadOnlySpan<byte> nonce, PcrSelection selection, int attempts = 5)
    {
        ArgumentNullException.ThrowIfNull(selection);
        if (selection.Count == 0) throw new ArgumentException("The PCR selection is empty.", nameof(selection));
        if (nonce.Length > TpmsAttest.MaxDataBytes - 2)
            throw new ArgumentException($"The nonce is {nonce.Length} bytes; a TPM takes at most {TpmsAttest.MaxDataBytes - 2}.", nameof(nonce));
        for (int attempt = 1; ; attempt++)
        {
            var q = Quote(akHandle, nonce, selection);
            var attest = TpmsAttest.Parse(q.Attest);
            var values = PcrRead(selection);
            // The PCR digest is made with the signing scheme's hash; its length tells which.
            var quotedAlg = (attest.PcrDigest?.Length ?? 0) switch
            {
                20 => TpmAlgId.Sha1, 48 => TpmAlgId.Sha384, 64 => TpmAlgId.Sha512, _ => TpmAlgId.Sha256,
            };
            var digest = values.ComputeDigest(attest.PcrSelect ?? selection, quotedAlg, out _);
            if (digest is not null && attest.PcrDigest is not null && digest.AsSpan().SequenceEqual(attest.PcrDigest))
                return new IntegrityQuoteEvidence(q.Attest, q.Signature, selection, values, Tpm2ToolsPcrBlob.Write(selection, values));
            if (attempt >= attempts)
                throw new InvalidOperationException($"PCRs changed between TPM2_Quote and TPM2_PCR_Read {attempts} times in a row; the values could not be matched to the quoted digest.");
        }
    }
}
