using System.Security.Cryptography;

namespace TpmProvisioning.Tpm;

/// <summary>TPM2 commands, one method each, marshaled as TPM 2.0 Part 3 lays them out.</summary>
public sealed partial class TpmDevice
{
    private const uint TpmPtNvBufferMax = 0x12C;
    private const uint TpmPtInputBuffer = 0x10D;
    private const TpmCc CcHashSequenceStart = (TpmCc)0x186;
    private const TpmCc CcSequenceUpdate = (TpmCc)0x15C;
    private const TpmCc CcSequenceComplete = (TpmCc)0x13E;

    private static readonly TpmAuthSession[] NoAuth = [TpmAuthSession.Password()];

    private static IReadOnlyList<TpmAuthSession> Pw(byte[]? password) => password is null || password.Length == 0 ? NoAuth : [TpmAuthSession.Password(password)];

    // ------------------------------------------------------------------ startup, random, capability

    /// <summary>TPM2_Startup(CLEAR or STATE). TPM_RC_INITIALIZE (already started) is not an error.</summary>
    public void Startup(bool clear = true) =>
        Execute(TpmCc.Startup, [], null, w => w.U16(clear ? (ushort)0 : (ushort)1), acceptCode: rc => rc == 0x100);

    /// <summary>TPM2_GetRandom, repeated until <paramref name="count"/> bytes arrived (a TPM returns at most a digest's worth per call).</summary>
    public byte[] GetRandom(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        var result = new byte[count];
        int got = 0;
        while (got < count)
        {
            ushort ask = (ushort)Math.Min(count - got, 64);
            var r = Execute(TpmCc.GetRandom, [], null, w => w.U16(ask));
            var rd = new TpmReader(r.Parameters, "TPM2_GetRandom response");
            var bytes = rd.B2();
            if (bytes.Length == 0) throw new TpmFormatException("TPM2_GetRandom returned no bytes.");
            int n = Math.Min(bytes.Length, count - got);
            bytes.AsSpan(0, n).CopyTo(result.AsSpan(got));
            got += n;
        }
        return result;
    }

    /// <summary>One TPM2_GetCapability call: returns moreData and the TPMS_CAPABILITY_DATA's union bytes (after the capability selector).</summary>
    public (bool MoreData, byte[] Data) GetCapability(TpmCap capability, uint property, uint count)
    {
        var r = Execute(TpmCc.GetCapability, [], null, w => w.U32((uint)capability).U32(property).U32(count));
        var rd = new TpmReader(r.Parameters, "TPM2_GetCapability response");
        bool more = rd.U8() != 0;
        uint cap = rd.U32();
        if (cap != (uint)capability) throw new TpmFormatException($"TPM2_GetCapability answered capability {cap} for request {(uint)capability}.");
        return (more, rd.Bytes(rd.Remaining).ToArray());
    }

    /// <summary>TPM properties (TPM_CAP_TPM_PROPERTIES) from <paramref name="first"/> on, following moreData.</summary>
    public IReadOnlyDictionary<uint, uint> GetTpmProperties(uint first, uint count)
    {
        var result = new SortedDictionary<uint, uint>();
        uint next = first, end = first + count;
        while (next < end)
        {
            var (more, data) = GetCapability(TpmCap.TpmProperties, next, end - next);
            var rd = new TpmReader(data, "TPML_TAGGED_TPM_PROPERTY");
            uint n = rd.U32();
            uint last = next;
            for (int i = 0; i < n; i++)
            {
                uint p = rd.U32(), v = rd.U32();
                if (p >= end) { more = false; break; }
                result[p] = v;
                last = p;
            }
            if (!more || n == 0) break;
            next = last + 1;
        }
        return result;
    }

    /// <summary>One TPM property, or null if the TPM does not report it.</summary>
    public uint? GetTpmProperty(uint property) => GetTpmProperties(property, 1).TryGetValue(property, out var v) ? v : null;

    /// <summary>Handles in a range (TPM_CAP_HANDLES), e.g. <see cref="TpmHandle.HrPersistent"/> or <see cref="TpmHandle.HrNvIndex"/>.</summary>
    public IReadOnlyList<uint> GetHandles(uint rangeStart)
    {
        var list = new List<uint>();
        uint next = rangeStart;
        uint rangeEnd = (rangeStart & 0xFF000000) + 0x01000000;
        while (true)
        {
            var (more, data) = GetCapability(TpmCap.Handles, next, 254);
            var rd = new TpmReader(data, "TPML_HANDLE");
            uint n = rd.U32();
            for (int i = 0; i < n; i++)
            {
                uint h = rd.U32();
                if (h >= rangeEnd) { more = false; break; }
                list.Add(h);
            }
            if (!more || n == 0) break;
            next = list[^1] + 1;
        }
        return list;
    }

    /// <summary>The PCR banks and the PCRs allocated in each (TPM_CAP_PCRS).</summary>
    public PcrSelection GetPcrBanks()
    {
        var (_, data) = GetCapability(TpmCap.Pcrs, 0, 1);
        return PcrSelection.Parse(data);
    }

    /// <summary>Manufacturer, vendor strings, firmware version, PCR banks, persistent handles and NV indices.</summary>
    public TpmInfo GetInfo()
    {
        var p = GetTpmProperties((uint)TpmPt.FamilyIndicator, 0x40);
        uint Get(TpmPt pt) => p.TryGetValue((uint)pt, out var v) ? v : 0;
        static string Chars(uint v) => new string([(char)(v >> 24), (char)((v >> 16) & 0xFF), (char)((v >> 8) & 0xFF), (char)(v & 0xFF)]);
        static string Clean(string s) => s.TrimEnd('\0', ' ').Replace("\0", "");
        return new TpmInfo
        {
            Manufacturer = Clean(Chars(Get(TpmPt.Manufacturer))),
            ManufacturerId = Get(TpmPt.Manufacturer),
            VendorString = Clean(Chars(Get(TpmPt.VendorString1)) + Chars(Get(TpmPt.VendorString2)) + Chars(Get(TpmPt.VendorString3)) + Chars(Get(TpmPt.VendorString4))),
            VendorTpmType = Get(TpmPt.VendorTpmType),
            FirmwareVersion = ((ulong)Get(TpmPt.FirmwareVersion1) << 32) | Get(TpmPt.FirmwareVersion2),
            Family = Clean(Chars(Get(TpmPt.FamilyIndicator))),
            SpecRevision = Get(TpmPt.Revision),
            SpecYear = Get(TpmPt.Year),
            PcrCount = (int)Get(TpmPt.PcrCount),
            PcrBanks = GetPcrBanks(),
            PersistentHandles = GetHandles(TpmHandle.HrPersistent),
            NvIndices = GetHandles(TpmHandle.HrNvIndex),
            MaxNvBuffer = p.TryGetValue(TpmPtNvBufferMax, out var nb) ? (int)nb : 1024,
        };
    }

    /// <summary>TPM_PT_NV_BUFFER_MAX, cached: the largest chunk NV_Read accepts.</summary>
    public int MaxNvBuffer
    {
        get => _maxNvBuffer ??= (int)(GetTpmProperty(TpmPtNvBufferMax) ?? 512);
        internal set => _maxNvBuffer = value;
    }

    /// <summary>TPM_PT_INPUT_BUFFER, cached: the largest TPM2B_MAX_BUFFER (TPM2_Hash input, sequence chunk).</summary>
    public int MaxInputBuffer => _maxInputBuffer ??= (int)(GetTpmProperty(TpmPtInputBuffer) ?? 1024);

    // ------------------------------------------------------------------ PCRs

    /// <summary>
    /// TPM2_PCR_Read over any selection: the TPM answers a limited number of PCRs per call (8 on most), so this repeats
    /// with what is left until all are read. PCRs in unallocated banks are absent from the result.
    /// </summary>
    public PcrValues PcrRead(PcrSelection selection) => PcrRead(selection, out _);

    /// <summary>TPM2_PCR_Read over any selection; <paramref name="updateCounter"/> is the last call's pcrUpdateCounter.</summary>
    public PcrValues PcrRead(PcrSelection selection, out uint updateCounter)
    {
        ArgumentNullException.ThrowIfNull(selection);
        var remaining = new Dictionary<TpmAlgId, uint>();
        var order = new List<TpmAlgId>();
        foreach (var b in selection.Banks)
        {
            if (!remaining.ContainsKey(b.Hash)) order.Add(b.Hash);
            remaining[b.Hash] = (remaining.TryGetValue(b.Hash, out var m) ? m : 0) | b.Mask;
        }
        var values = new PcrValues();
        updateCounter = 0;
        for (int guard = 0; guard < 64 && remaining.Values.Any(v => v != 0); guard++)
        {
            var ask = new PcrSelection(order.Where(a => remaining[a] != 0).Select(a => Bank(a, remaining[a])));
            var r = Execute(TpmCc.PCR_Read, [], null, ask.Marshal);
            var rd = new TpmReader(r.Parameters, "TPM2_PCR_Read response");
            updateCounter = rd.U32();
            var got = PcrSelection.Read(ref rd);
            uint count = rd.U32();
            var digests = new List<byte[]>((int)count);
            for (int i = 0; i < count; i++) digests.Add(rd.B2());
            int k = 0;
            foreach (var (bank, index) in got.Enumerate())
            {
                if (k >= digests.Count) throw new TpmFormatException("TPM2_PCR_Read returned fewer digests than PCRs selected.");
                values.Set(bank, index, digests[k++]);
                if (remaining.TryGetValue(bank, out var m)) remaining[bank] = m & ~(1u << index);
            }
            if (k == 0) break; // nothing more can be read: the rest is in unallocated banks
        }
        return values;

        static PcrBankSelection Bank(TpmAlgId alg, uint mask)
        {
            var l = new List<int>();
            for (int i = 0; i < 32; i++) if ((mask & (1u << i)) != 0) l.Add(i);
            return PcrSelection.Bank(alg, l);
        }
    }

    /// <summary>TPM2_PCR_Extend of one PCR with one digest per bank given.</summary>
    public void PcrExtend(int pcr, params (TpmAlgId Bank, byte[] Digest)[] digests)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(pcr);
        Execute(TpmCc.PCR_Extend, [(uint)pcr], NoAuth, w =>
        {
            w.U32((uint)digests.Length);
            foreach (var (bank, d) in digests)
            {
                if (d.Length != TpmHash.DigestSize(bank)) throw new ArgumentException($"Digest for {bank} must be {TpmHash.DigestSize(bank)} bytes, not {d.Length}.", nameof(digests));
                w.Alg(bank).Bytes(d);
            }
        });
    }

    /// <summary>TPM2_PCR_Reset: sets a resettable PCR (such as 16, the debug PCR) to zeros in every bank.</summary>
    public void PcrReset(int pcr)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(pcr);
        Execute(TpmCc.PCR_Reset, [(uint)pcr], NoAuth, _ => { });
    }

    // ------------------------------------------------------------------ NV

    /// <summary>TPM2_NV_ReadPublic.</summary>
    public TpmNvPublic NvReadPublic(uint nvIndex)
    {
        var r = Execute(TpmCc.NV_ReadPublic, [nvIndex], null, null);
        var rd = new TpmReader(r.Parameters, "TPM2_NV_ReadPublic response");
        var pub = new TpmReader(rd.Sized16(), "TPMS_NV_PUBLIC");
        uint index = pub.U32();
        var alg = pub.Alg();
        uint attrs = pub.U32();
        var policy = pub.B2();
        ushort size = pub.U16();
        var name = rd.B2();
        return new TpmNvPublic(index, alg, attrs, policy, size, name);
    }

    /// <summary>True when the NV index is defined.</summary>
    public bool NvExists(uint nvIndex)
    {
        try { NvReadPublic(nvIndex); return true; }
        catch (TpmException e) when ((e.ResponseCode & 0xBF) == 0x8B) { return false; }
    }

    /// <summary>
    /// TPM2_NV_Read of <paramref name="size"/> bytes from <paramref name="offset"/>, in chunks of at most <see cref="MaxNvBuffer"/>.
    /// <paramref name="authHandle"/> defaults to the index itself (AUTHREAD); pass <see cref="TpmHandle.RhOwner"/> for OWNERREAD.
    /// </summary>
    public byte[] NvRead(uint nvIndex, int offset, int size, uint? authHandle = null, byte[]? password = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        uint auth = authHandle ?? nvIndex;
        var result = new byte[size];
        int chunk = Math.Max(1, MaxNvBuffer);
        int done = 0;
        while (done < size)
        {
            ushort n = (ushort)Math.Min(chunk, size - done);
            ushort at = checked((ushort)(offset + done));
            var r = Execute(TpmCc.NV_Read, [auth, nvIndex], Pw(password), w => w.U16(n).U16(at));
            var rd = new TpmReader(r.Parameters, "TPM2_NV_Read response");
            var data = rd.B2();
            if (data.Length != n) throw new TpmFormatException($"TPM2_NV_Read returned {data.Length} bytes for {n} asked.");
            data.CopyTo(result, done);
            done += n;
        }
        return result;
    }

    /// <summary>The whole data area of an NV index (size from NV_ReadPublic).</summary>
    public byte[] NvReadAll(uint nvIndex, uint? authHandle = null, byte[]? password = null) =>
        NvRead(nvIndex, 0, NvReadPublic(nvIndex).DataSize, authHandle, password);

    // ------------------------------------------------------------------ objects

    private static void WriteSensitiveCreate(TpmWriter w, byte[]? userAuth) =>
        w.Sized16(s => s.B2(userAuth ?? []).B2([]));

    /// <summary>
    /// TPM2_CreatePrimary under <paramref name="hierarchy"/> (owner, endorsement, platform, null) from a template.
    /// The returned object is transient: flush it or persist it.
    /// </summary>
    public TpmObject CreatePrimary(uint hierarchy, TpmPublic template, byte[]? hierarchyAuth = null, byte[]? objectAuth = null)
    {
        ArgumentNullException.ThrowIfNull(template);
        var r = Execute(TpmCc.CreatePrimary, [hierarchy], Pw(hierarchyAuth), w =>
        {
            WriteSensitiveCreate(w, objectAuth);
            w.Sized16(template.Marshal);
            w.B2([]);       // outsideInfo
            w.U32(0);       // creationPCR: none
        }, responseHandleCount: 1);
        var rd = new TpmReader(r.Parameters, "TPM2_CreatePrimary response");
        var pubBytes = rd.Sized16().ToArray();
        rd.Sized16();       // creationData
        rd.B2();            // creationHash
        SkipTicket(ref rd); // creationTicket
        var name = rd.B2();
        return new TpmObject(r.Handles[0], TpmPublic.Parse(pubBytes), pubBytes, name);
    }

    /// <summary>TPM2_Create: a new key under a loaded parent. Returns TPM2B_PRIVATE contents and the TPMT_PUBLIC bytes.</summary>
    public (byte[] Private, byte[] Public) Create(uint parentHandle, TpmPublic template, byte[]? parentAuth = null, byte[]? objectAuth = null)
    {
        ArgumentNullException.ThrowIfNull(template);
        var r = Execute(TpmCc.Create, [parentHandle], Pw(parentAuth), w =>
        {
            WriteSensitiveCreate(w, objectAuth);
            w.Sized16(template.Marshal);
            w.B2([]);
            w.U32(0);
        });
        var rd = new TpmReader(r.Parameters, "TPM2_Create response");
        var priv = rd.B2();
        var pub = rd.Sized16().ToArray();
        return (priv, pub);
    }

    /// <summary>TPM2_Load of a key created under <paramref name="parentHandle"/>.</summary>
    public TpmObject Load(uint parentHandle, byte[] privateBlob, byte[] publicBytes, byte[]? parentAuth = null)
    {
        var r = Execute(TpmCc.Load, [parentHandle], Pw(parentAuth), w => { w.B2(privateBlob); w.B2(publicBytes); }, responseHandleCount: 1);
        var rd = new TpmReader(r.Parameters, "TPM2_Load response");
        var name = rd.B2();
        return new TpmObject(r.Handles[0], TpmPublic.Parse(publicBytes), publicBytes, name);
    }

    /// <summary>TPM2_ReadPublic: the public area, Name and qualified Name of a loaded or persistent object.</summary>
    public (TpmObject Object, byte[] QualifiedName) ReadPublic(uint handle)
    {
        var r = Execute(TpmCc.ReadPublic, [handle], null, null);
        var rd = new TpmReader(r.Parameters, "TPM2_ReadPublic response");
        var pub = rd.Sized16().ToArray();
        var name = rd.B2();
        var qn = rd.B2();
        return (new TpmObject(handle, TpmPublic.Parse(pub), pub, name), qn);
    }

    /// <summary>TPM2_FlushContext of a transient object or session.</summary>
    public void FlushContext(uint handle) => Execute(TpmCc.FlushContext, [], null, w => w.U32(handle));

    /// <summary>Flushes and ignores errors (for cleanup paths where the handle may already be gone).</summary>
    public void TryFlush(uint handle)
    {
        try { FlushContext(handle); } catch (TpmException) { }
    }

    /// <summary>
    /// TPM2_EvictControl: makes a transient object persistent at <paramref name="persistentHandle"/>, or, given a persistent
    /// object and its own handle, removes it.
    /// </summary>
    public void EvictControl(uint objectHandle, uint persistentHandle, uint auth = TpmHandle.RhOwner, byte[]? authValue = null) =>
        Execute(TpmCc.EvictControl, [auth, objectHandle], Pw(authValue), w => w.U32(persistentHandle));

    // ------------------------------------------------------------------ quote, hash, sign

    private static void WriteSigScheme(TpmWriter w, TpmScheme scheme)
    {
        w.Alg(scheme.Scheme);
        if (!scheme.IsNull)
        {
            w.Alg(scheme.HashAlg);
            if (scheme.Scheme == TpmAlgId.EcDaa) w.U16(scheme.Count);
        }
    }

    /// <summary>
    /// TPM2_Quote with <paramref name="signHandle"/> over <paramref name="pcrs"/>, <paramref name="qualifyingData"/> as extraData.
    /// A null <paramref name="scheme"/> uses the key's own scheme (TPM_ALG_NULL).
    /// </summary>
    public TpmQuoteResult Quote(uint signHandle, ReadOnlySpan<byte> qualifyingData, PcrSelection pcrs, TpmScheme? scheme = null, byte[]? keyAuth = null)
    {
        ArgumentNullException.ThrowIfNull(pcrs);
        var qd = qualifyingData.ToArray();
        var r = Execute(TpmCc.Quote, [signHandle], Pw(keyAuth), w =>
        {
            w.B2(qd);
            WriteSigScheme(w, scheme ?? TpmScheme.Null);
            pcrs.Marshal(w);
        });
        var rd = new TpmReader(r.Parameters, "TPM2_Quote response");
        var attest = rd.B2();
        var sig = rd.Bytes(rd.Remaining).ToArray();
        return new TpmQuoteResult(attest, sig);
    }

    /// <summary>
    /// TPM2_Hash of up to <see cref="MaxInputBuffer"/> bytes. Returns the digest and the TPMT_TK_HASHCHECK ticket bytes; the
    /// ticket is a real one (not the NULL ticket) only when the data does not start with TPM_GENERATED_VALUE.
    /// </summary>
    public (byte[] Digest, byte[] Ticket) Hash(ReadOnlySpan<byte> data, TpmAlgId hashAlg, uint hierarchy = TpmHandle.RhOwner)
    {
        var d = data.ToArray();
        var r = Execute(TpmCc.Hash, [], null, w => w.B2(d).Alg(hashAlg).U32(hierarchy));
        var rd = new TpmReader(r.Parameters, "TPM2_Hash response");
        var digest = rd.B2();
        var ticket = rd.Bytes(rd.Remaining).ToArray();
        return (digest, ticket);
    }

    /// <summary>
    /// Hashes any amount of data in the TPM (TPM2_Hash when it fits, else a hash sequence) and returns the digest with a
    /// TPMT_TK_HASHCHECK ticket that lets a restricted key sign it.
    /// </summary>
    public (byte[] Digest, byte[] Ticket) HashWithTicket(ReadOnlySpan<byte> data, TpmAlgId hashAlg, uint hierarchy = TpmHandle.RhOwner)
    {
        int max = MaxInputBuffer;
        if (data.Length <= max) return Hash(data, hashAlg, hierarchy);
        var start = Execute(CcHashSequenceStart, [], null, w => w.B2([]).Alg(hashAlg), responseHandleCount: 1);
        uint seq = start.Handles[0];
        try
        {
            int at = 0;
            while (data.Length - at > max)
            {
                var chunk = data.Slice(at, max).ToArray();
                Execute(CcSequenceUpdate, [seq], NoAuth, w => w.B2(chunk));
                at += max;
            }
            var last = data[at..].ToArray();
            var r = Execute(CcSequenceComplete, [seq], NoAuth, w => w.B2(last).U32(hierarchy));
            seq = 0; // SequenceComplete flushes the sequence
            var rd = new TpmReader(r.Parameters, "TPM2_SequenceComplete response");
            var digest = rd.B2();
            return (digest, rd.Bytes(rd.Remaining).ToArray());
        }
        finally
        {
            if (seq != 0) TryFlush(seq);
        }
    }

    /// <summary>
    /// TPM2_Sign of <paramref name="digest"/>. A restricted key needs the <paramref name="ticket"/> from <see cref="Hash"/>;
    /// null sends the NULL ticket, which only unrestricted keys accept. Returns the TPMT_SIGNATURE bytes.
    /// </summary>
    public byte[] Sign(uint keyHandle, ReadOnlySpan<byte> digest, TpmScheme? scheme = null, byte[]? ticket = null, byte[]? keyAuth = null)
    {
        var dg = digest.ToArray();
        var r = Execute(TpmCc.Sign, [keyHandle], Pw(keyAuth), w =>
        {
            w.B2(dg);
            WriteSigScheme(w, scheme ?? TpmScheme.Null);
            if (ticket is null) w.U16((ushort)TpmSt.Hashcheck).U32(TpmHandle.RhNull).U16(0);
            else w.Bytes(ticket);
        });
        return r.Parameters;
    }

    private static void SkipTicket(ref TpmReader rd)
    {
        rd.U16();
        rd.U32();
        rd.B2();
    }

    // ------------------------------------------------------------------ sessions and policy

    /// <summary>
    /// TPM2_StartAuthSession: an unbound, unsalted session (policy by default) with <paramref name="authHash"/>, no parameter
    /// encryption. Returns the session handle.
    /// </summary>
    public uint StartAuthSession(TpmSe type = TpmSe.Policy, TpmAlgId authHash = TpmAlgId.Sha256)
    {
        var nonce = RandomNumberGenerator.GetBytes(TpmHash.DigestSize(authHash));
        var r = Execute(TpmCc.StartAuthSession, [TpmHandle.RhNull, TpmHandle.RhNull], null, w =>
        {
            w.B2(nonce);          // nonceCaller
            w.B2([]);             // encryptedSalt
            w.U8((byte)type);
            w.Alg(TpmAlgId.Null); // symmetric: none
            w.Alg(authHash);
        }, responseHandleCount: 1);
        return r.Handles[0];
    }

    /// <summary>TPM2_PolicySecret: asserts knowledge of <paramref name="authHandle"/>'s authValue (password session) in <paramref name="policySession"/>.</summary>
    public void PolicySecret(uint authHandle, uint policySession, byte[]? authValue = null)
    {
        Execute(TpmCc.PolicySecret, [authHandle, policySession], Pw(authValue), w =>
        {
            w.B2([]);  // nonceTPM
            w.B2([]);  // cpHashA
            w.B2([]);  // policyRef
            w.U32(0);  // expiration
        });
    }

    /// <summary>TPM2_PolicyOR: the session's digest must equal one of <paramref name="branches"/> (2 to 8 digests).</summary>
    public void PolicyOR(uint policySession, IReadOnlyList<byte[]> branches)
    {
        ArgumentNullException.ThrowIfNull(branches);
        Execute(TpmCc.PolicyOR, [policySession], null, w =>
        {
            w.U32((uint)branches.Count);
            foreach (var b in branches) w.B2(b);
        });
    }

    /// <summary>TPM2_PolicyGetDigest: the session's current policy digest.</summary>
    public byte[] PolicyGetDigest(uint policySession)
    {
        var r = Execute(TpmCc.PolicyGetDigest, [policySession], null, null);
        var rd = new TpmReader(r.Parameters, "TPM2_PolicyGetDigest response");
        return rd.B2();
    }

    /// <summary>
    /// TPM2_ActivateCredential with explicit authorizations, in the same argument order as
    /// <see cref="ActivateCredential(uint, uint, byte[], byte[], byte[], byte[])"/>: the EK (the decryption key, usually
    /// authorized by a satisfied policy session in <paramref name="ekAuth"/>) and the AK (the object the credential names,
    /// <paramref name="akAuth"/>). The TPM receives them as activateHandle = AK, keyHandle = EK, so a TPM error's "handle 1" /
    /// "session 1" is the AK and "handle 2" / "session 2" the EK. <paramref name="idObject"/> and
    /// <paramref name="encryptedSecret"/> are TPM2B contents without size prefixes.
    /// </summary>
    public byte[] ActivateCredentialWithSessions(uint ekHandle, uint akHandle, byte[] idObject, byte[] encryptedSecret,
        TpmAuthSession ekAuth, TpmAuthSession akAuth)
    {
        ArgumentNullException.ThrowIfNull(idObject);
        ArgumentNullException.ThrowIfNull(encryptedSecret);
        var r = Execute(TpmCc.ActivateCredential, [akHandle, ekHandle], [akAuth, ekAuth], w =>
        {
            w.B2(idObject);
            w.B2(encryptedSecret);
        });
        var rd = new TpmReader(r.Parameters, "TPM2_ActivateCredential response");
        return rd.B2();
    }
}
