using System.Buffers.Binary;
using System.Security.Cryptography.X509Certificates;

namespace TpmProvisioning.Tpm;

/// <summary>The operations the product performs with a TPM, built from the commands.</summary>
public sealed partial class TpmDevice
{
    // ------------------------------------------------------------------ EK certificate

    /// <summary>
    /// Reads the EK certificate of <paramref name="kind"/> from its NV index and returns its DER bytes, or null when the index
    /// is not defined. The NV area may be larger than the certificate (padding): the DER header's length decides.
    /// </summary>
    public byte[]? ReadEkCertificateDer(EkKind kind) => ReadCertificateFromNv(EkKinds.CertificateIndex(kind));

    /// <summary>The EK certificate of <paramref name="kind"/>, or null when the TPM has none at its index.</summary>
    /// <exception cref="System.Security.Cryptography.CryptographicException">The NV data is not an X.509 certificate.</exception>
    public X509Certificate2? ReadEkCertificate(EkKind kind)
    {
        var der = ReadEkCertificateDer(kind);
        return der is null ? null : X509CertificateLoader.LoadCertificate(der);
    }

    /// <summary>
    /// Reads a DER certificate stored in an NV index (EK or platform certificate), trimmed to its DER length, or null when the
    /// index does not exist. Reads with the index's own authorization if AUTHREAD is set, else with the owner's.
    /// </summary>
    /// <exception cref="TpmFormatException">The NV data does not start with a DER SEQUENCE that fits the area.</exception>
    public byte[]? ReadCertificateFromNv(uint nvIndex)
    {
        TpmNvPublic pub;
        try { pub = NvReadPublic(nvIndex); }
        catch (TpmException e) when (e.Decoded.BaseCode == 0x08B) { return null; } // TPM_RC_HANDLE: not defined
        uint auth = pub.AuthRead ? nvIndex : TpmHandle.RhOwner;
        int headLen = Math.Min(pub.DataSize, (ushort)6);
        if (headLen < 2) throw new TpmFormatException($"NV index 0x{nvIndex:X8} is too small ({pub.DataSize} bytes) to hold a certificate.");
        var head = NvRead(nvIndex, 0, headLen, auth);
        int total = DerTotalLength(head, nvIndex);
        if (total > pub.DataSize)
            throw new TpmFormatException($"NV index 0x{nvIndex:X8}: the DER certificate claims {total} bytes but the index holds {pub.DataSize}.");
        return NvRead(nvIndex, 0, total, auth);
    }

    /// <summary>Length of a DER SEQUENCE (tag, length, contents) from its first bytes.</summary>
    internal static int DerTotalLength(ReadOnlySpan<byte> head, uint nvIndex = 0)
    {
        if (head.Length < 2 || head[0] != 0x30)
            throw new TpmFormatException($"NV index 0x{nvIndex:X8} does not hold a DER certificate (first byte 0x{(head.Length > 0 ? head[0] : 0):X2}).");
        int b = head[1];
        if (b < 0x80) return 2 + b;
        int n = b & 0x7F;
        if (n is 0 or > 3 || head.Length < 2 + n)
            throw new TpmFormatException($"NV index 0x{nvIndex:X8}: unsupported DER length encoding 0x{b:X2}.");
        int len = 0;
        for (int i = 0; i < n; i++) len = (len << 8) | head[2 + i];
        return 2 + n + len;
    }

    // ------------------------------------------------------------------ keys

    /// <summary>Creates the EK from <paramref name="template"/> in the endorsement hierarchy (transient; flush or persist it).</summary>
    public TpmObject CreateEk(TpmPublic template, byte[]? endorsementAuth = null) =>
        CreatePrimary(TpmHandle.RhEndorsement, template, endorsementAuth);

    /// <summary>Creates the EK whose template belongs with the certificate index of <paramref name="kind"/>.</summary>
    public TpmObject CreateEk(EkKind kind, byte[]? endorsementAuth = null) => CreateEk(EkKinds.Template(kind), endorsementAuth);

    /// <summary>Creates a storage primary key in the owner hierarchy (default: <see cref="TpmTemplates.SrkRsa2048"/>).</summary>
    public TpmObject CreateSrk(TpmPublic? template = null, byte[]? ownerAuth = null) =>
        CreatePrimary(TpmHandle.RhOwner, template ?? TpmTemplates.SrkRsa2048, ownerAuth);

    /// <summary>
    /// Creates and loads a restricted signing key (AK) under a loaded storage parent (default template
    /// <see cref="TpmTemplates.AkRsa2048"/>). The parent may be flushed afterwards; the AK stays loaded.
    /// </summary>
    public TpmCreatedKey CreateAk(uint parentHandle, TpmPublic? template = null, byte[]? parentAuth = null, byte[]? akAuth = null)
    {
        var t = template ?? TpmTemplates.AkRsa2048;
        if (!t.IsRestrictedSigningKey(out var problem))
            throw new ArgumentException($"The AK template is not a restricted signing key: {problem}", nameof(template));
        var (priv, pub) = Create(parentHandle, t, parentAuth, akAuth);
        var loaded = Load(parentHandle, priv, pub, parentAuth);
        return new TpmCreatedKey(loaded, priv);
    }

    /// <summary>
    /// Creates an SRK (<paramref name="srkTemplate"/>, default RSA 2048), an AK under it, loads the AK and flushes the SRK.
    /// </summary>
    public TpmCreatedKey CreateAk(TpmPublic? akTemplate = null, TpmPublic? srkTemplate = null, byte[]? ownerAuth = null)
    {
        var srk = CreateSrk(srkTemplate, ownerAuth);
        try { return CreateAk(srk.Handle, akTemplate); }
        finally { TryFlush(srk.Handle); }
    }

    /// <summary>
    /// Makes a transient object persistent at <paramref name="persistentHandle"/> (0x81000000-0x81FFFFFF). With
    /// <paramref name="replace"/>, an object already there is evicted first. Returns the persistent object as the TPM reports it.
    /// </summary>
    public TpmObject PersistObject(uint transientHandle, uint persistentHandle, bool replace = false, byte[]? ownerAuth = null)
    {
        if ((persistentHandle & 0xFF000000) != TpmHandle.HrPersistent)
            throw new ArgumentOutOfRangeException(nameof(persistentHandle), $"0x{persistentHandle:X8} is not a persistent handle (0x81xxxxxx).");
        if (replace && GetHandles(TpmHandle.HrPersistent).Contains(persistentHandle))
            EvictControl(persistentHandle, persistentHandle, TpmHandle.RhOwner, ownerAuth);
        EvictControl(transientHandle, persistentHandle, TpmHandle.RhOwner, ownerAuth);
        return ReadPublic(persistentHandle).Object;
    }

    /// <summary>The lowest persistent handle from <paramref name="first"/> to <paramref name="last"/> that holds no object, or null.</summary>
    public uint? FindFreePersistentHandle(uint first, uint last)
    {
        var taken = GetHandles(TpmHandle.HrPersistent).ToHashSet();
        for (uint c = first; c <= last && c >= first; c++)
            if (!taken.Contains(c)) return c;
        return null;
    }

    /// <summary>Removes a persistent object.</summary>
    public void EvictPersistent(uint persistentHandle, byte[]? ownerAuth = null) =>
        EvictControl(persistentHandle, persistentHandle, TpmHandle.RhOwner, ownerAuth);

    // ------------------------------------------------------------------ EK policy and credential activation

    /// <summary>PolicyA for a name algorithm: TPM2_PolicySecret(TPM_RH_ENDORSEMENT) from an empty digest, empty policyRef.</summary>
    public static byte[] EkPolicyA(TpmAlgId nameAlg)
    {
        int n = TpmHash.DigestSize(nameAlg);
        var buf = new byte[n + 8];
        BinaryPrimitives.WriteUInt32BigEndian(buf.AsSpan(n), (uint)TpmCc.PolicySecret);
        BinaryPrimitives.WriteUInt32BigEndian(buf.AsSpan(n + 4), TpmHandle.RhEndorsement);
        return TpmHash.Hash(nameAlg, TpmHash.Hash(nameAlg, buf));
    }

    /// <summary>PolicyC (PolicyAuthorizeNV on the EK policy index) for a name algorithm, as published in the EK Credential Profile.</summary>
    public static byte[] EkPolicyC(TpmAlgId nameAlg) => nameAlg switch
    {
        TpmAlgId.Sha256 => TpmTemplates.PolicyCSha256,
        TpmAlgId.Sha384 => TpmTemplates.PolicyCSha384,
        TpmAlgId.Sha512 => Convert.FromHexString("589EE1E146544716E8DEAFE6DB247B01B81E9F9C7DD16B814AA159138749105FBA5388DD1DEA702F35240C184933121E2C61B8F50D3EF91393A49A38C3F73FC8"),
        _ => throw new NotSupportedException($"No EK PolicyC is published for {nameAlg}."),
    };

    /// <summary>The PolicyOR digest over <paramref name="branches"/> from an empty session digest.</summary>
    public static byte[] PolicyOrDigest(TpmAlgId nameAlg, IReadOnlyList<byte[]> branches)
    {
        var w = new TpmWriter();
        w.Bytes(new byte[TpmHash.DigestSize(nameAlg)]).U32((uint)TpmCc.PolicyOR);
        foreach (var b in branches) w.Bytes(b);
        return TpmHash.Hash(nameAlg, w.Span);
    }

    /// <summary>
    /// Starts a policy session that satisfies an EK's authPolicy: PolicySecret(TPM_RH_ENDORSEMENT) for the low-range templates
    /// (PolicyA), followed by PolicyOR(PolicyA, PolicyC) for the high-range ones (PolicyB). The caller flushes the session
    /// (or uses it once without continueSession).
    /// </summary>
    /// <exception cref="NotSupportedException">The EK's authPolicy is neither PolicyA nor PolicyB for its name algorithm.</exception>
    public uint StartEkPolicySession(TpmPublic ekPublic, byte[]? endorsementAuth = null)
    {
        ArgumentNullException.ThrowIfNull(ekPublic);
        var alg = ekPublic.NameAlg;
        var a = EkPolicyA(alg);
        IReadOnlyList<byte[]>? orBranches = null;
        if (!ekPublic.AuthPolicy.AsSpan().SequenceEqual(a))
        {
            var c = EkPolicyC(alg);
            if (!ekPublic.AuthPolicy.AsSpan().SequenceEqual(PolicyOrDigest(alg, [a, c])))
                throw new NotSupportedException($"The EK's authPolicy {Convert.ToHexString(ekPublic.AuthPolicy)} is neither PolicyA nor PolicyB for {alg}; cannot satisfy it.");
            orBranches = [a, c];
        }
        uint session = StartAuthSession(TpmSe.Policy, alg);
        try
        {
            PolicySecret(TpmHandle.RhEndorsement, session, endorsementAuth);
            if (orBranches is not null) PolicyOR(session, orBranches);
            return session;
        }
        catch
        {
            TryFlush(session);
            throw;
        }
    }

    /// <summary>
    /// TPM2_ActivateCredential: the EK (<paramref name="ekHandle"/>) decrypts the seed in <paramref name="encryptedSecret"/>
    /// and releases the credential if <paramref name="idObject"/> was made for the Name of <paramref name="akHandle"/>.
    /// The EK is authorized with a policy session matching its template family; the AK with a password.
    /// Both blobs are TPM2B contents without size prefixes. Returns the credential (certInfo).
    /// </summary>
    public byte[] ActivateCredential(uint ekHandle, uint akHandle, byte[] idObject, byte[] encryptedSecret, byte[]? akAuth = null, byte[]? endorsementAuth = null)
    {
        ArgumentNullException.ThrowIfNull(idObject);
        ArgumentNullException.ThrowIfNull(encryptedSecret);
        var ek = ReadPublic(ekHandle).Object;
        uint session = StartEkPolicySession(ek.Public, endorsementAuth);
        bool consumed = false;
        try
        {
            var cred = ActivateCredentialWithSessions(ekHandle, akHandle, idObject, encryptedSecret,
                TpmAuthSession.Policy(session, continueSession: false), TpmAuthSession.Password(akAuth));
            consumed = true;
            return cred;
        }
        finally
        {
            if (!consumed) TryFlush(session);
        }
    }

    /// <summary><see cref="ActivateCredential(uint, uint, byte[], byte[], byte[], byte[])"/> for a <see cref="CredentialBlob"/>.</summary>
    public byte[] ActivateCredential(uint ekHandle, uint akHandle, CredentialBlob blob, byte[]? akAuth = null, byte[]? endorsementAuth = null)
    {
        ArgumentNullException.ThrowIfNull(blob);
        return ActivateCredential(ekHandle, akHandle, blob.IdObject, blob.EncryptedSecret, akAuth, endorsementAuth);
    }

    // ------------------------------------------------------------------ signing with a restricted key

    /// <summary>
    /// Signs <paramref name="message"/> (for example a CSR's CertificationRequestInfo) with a restricted signing key: the TPM
    /// hashes the message itself (TPM2_Hash or a hash sequence) and issues the hashcheck ticket TPM2_Sign demands. The TPM
    /// refuses messages that start with TPM_GENERATED_VALUE, so nothing signed here can pass for a quote.
    /// Returns the digest and the TPMT_SIGNATURE bytes.
    /// </summary>
    public (byte[] Digest, byte[] Signature) SignWithRestrictedKey(uint keyHandle, ReadOnlySpan<byte> message, TpmAlgId hashAlg = TpmAlgId.Sha256, TpmScheme? scheme = null, byte[]? keyAuth = null)
    {
        if (message.Length >= 4 && BinaryPrimitives.ReadUInt32BigEndian(message) == TpmGenerated.Value)
            throw new ArgumentException("A restricted key cannot sign data that starts with TPM_GENERATED_VALUE.", nameof(message));
        var (digest, ticket) = HashWithTicket(message, hashAlg);
        var sig = Sign(keyHandle, digest, scheme, ticket, keyAuth);
        return (digest, sig);
    }
}
