using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using TpmProvisioning.Attestation.Measurements;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Measurements;

public class ImaVerifierTests
{
    private static readonly HashAlgorithmName Sha1 = HashAlgorithmName.SHA1, Sha256 = HashAlgorithmName.SHA256;

    // Real lines: Keylime's documentation and its ast tests (kernel-written, template hashes as logged).
    public static TheoryData<string, ImaTemplate> RealLines() => new()
    {
        { "10 3c93cea361cd6892bc8b9e3458e22ce60ef2e632 ima-ng sha1:ac7dd11bf0e3bec9a7eb2c01e495072962fb9dfa boot_aggregate", ImaTemplate.ImaNg },
        { "10 3d1452eb1fcbe51ad137f3fc21d3cf4a7c2e625b ima-ng sha1:a212d835ca43d7deedd4ee806898e77eab53dafa /usr/lib/systemd/systemd", ImaTemplate.ImaNg },
        { "10 1e70a3e1af66f42826ad63b761b4cb9c4df195e1 ima-sig sha256:d33d5d13792292e202dbf69a6f1b07bc8a02f01424db8489ba7bb7d43c0290ef /usr/bin/dd 030204f3452d2301009dd340c852f37e35748363586939d4199b6684be27e7c1236ca1528f708372ed9cd52a0d991f66448790f5616ed5bd7f9bbd22193b1e3e54f6bf29a1497945a34d1b418b24f4cbeaef897bf3cebca27065ebb8761b46bc2662fe76f141245b9186a5ac8493c7f4976cf0d6dfc085c3e503e3f771bc3ccb121230db76fd8aba4f45f060ad64ab3afd99b4e52824b9eba12e93e46f9dcb2fa01d9cef89f298a0da02a82a4fb56924afd3e3c277a1302d99f770d488449df2d43eb5b174a0a528827e6877b965c2f0b7c89cf1aa26a7417a892df4c2294e2872d62748b72ea04ecb0689b5d792e615a9bf9d56f6e0f298560bf9441df0a22729c5f23389f028c25f", ImaTemplate.ImaSig },
        { "10 5d4d5141ccd5066d50dc3f21d79ba02fedc24256 ima-sig sha256:b8ae0b8dd04a5935cd8165aa2260cd11b658bd71629bdb52256a675a1f73907b /usr/bin/zmore 030204531f402500483046022100fe24678d21083ead47660e1a2d553a592d777c478d1b0466de6ed484b54956b3022100cad3adb37f277bbb03544d6107751b4cd4f2289d8353fa36257400a99334d5c3", ImaTemplate.ImaSig },
        { "10 5426cf3031a43f5bfca183d79950698a95a728f6 ima-sig sha256:f1125b940480d20ad841d26d5ea253edc0704b5ec1548c891edf212cb1a9365e /lib/modules/5.4.48-openpower1/kernel/drivers/usb/common/usb-common.ko ", ImaTemplate.ImaSig },
        { "10 b7862dbbf1383ac6c7cca7f02d981a081aacb1f1 ima-buf sha1:6e0e6fc8a188ef4f059638949adca4d221946906 device_resume 6e616d653d544553543b757569643d43525950542d5645524954592d39656633326535623635623034343234613561386562343436636630653731332d544553543b63617061636974793d303b6d616a6f723d3235333b6d696e6f723d303b6d696e6f725f636f756e743d313b6e756d5f746172676574733d313b6163746976655f7461626c655f686173683d346565383065333365353635643336333430356634303238393436653837623365396563306335383661666639656630656436663561653762656237326431333b", ImaTemplate.ImaBuf },
        { "10 d7026dc672344d3ee372217bdbc7395947788671 ima 6f66d1d8e2fffcc12dfcb78c04b81fe5b8bbae4e /usr/bin/kmod", ImaTemplate.Ima },
    };

    [Theory]
    [MemberData(nameof(RealLines))]
    public void RealKernelLines_ParseAndTheirTemplateHashesRecompute(string line, ImaTemplate template)
    {
        var r = ImaMeasurementList.Parse(line + "\n", 7);
        Assert.True(r.Success, string.Join("; ", r.Errors));
        var e = Assert.Single(r.Entries);
        Assert.Equal(7, e.EntryNumber);
        Assert.Equal(template, e.Template);
        Assert.True(e.TemplateHashMatches);
        Assert.Equal(10, e.Pcr);

        var tampered = ImaMeasurementList.Parse(line.Replace(e.DigestHex[..4], e.DigestHex[..4] == "0000" ? "1111" : "0000"), 0).Entries.Single();
        Assert.False(tampered.TemplateHashMatches);
    }

    private static ImaVerifyResult Verify(ImaListBuilder list, TpmAlgId bank = TpmAlgId.Sha256, RuntimePolicy? policy = null,
        ImaSignatureKeys? keys = null, byte[]? pcr = null, int first = 0, ImaVerifierState? state = null, string? text = null,
        IReadOnlyDictionary<int, byte[]>? bootPcrs = null, bool failOnViolations = false) =>
        ImaVerifier.Verify(new ImaVerifyInput
        {
            MeasurementList = text ?? list.Text(first),
            FirstEntry = first,
            PcrBank = bank,
            QuotedPcr10 = pcr ?? list.Pcr(bank == TpmAlgId.Sha1 ? Sha1 : Sha256),
            PreviousState = state,
            Policy = policy,
            Keys = keys,
            BootPcrs = bootPcrs,
            FailOnViolations = failOnViolations,
        });

    private static string Ids(ImaVerifyResult r) => string.Join(",", r.Failures.Select(f => f.EventId).Distinct());

    [Theory]
    [InlineData(TpmAlgId.Sha1)]
    [InlineData(TpmAlgId.Sha256)]
    [InlineData(TpmAlgId.Sha384)]
    public void GoodList_ReplaysToTheQuotedPcr_InEachBank(TpmAlgId bank)
    {
        var list = ImaListBuilder.System(20).Legacy("/sbin/init", SHA1.HashData("init"u8)).Buf("kexec-cmdline", "root=/dev/sda1"u8.ToArray());
        var name = bank switch { TpmAlgId.Sha1 => Sha1, TpmAlgId.Sha256 => Sha256, _ => HashAlgorithmName.SHA384 };
        var r = Verify(list, bank, pcr: list.Pcr(name));
        Assert.True(r.Passed, r.ToString());
        Assert.Equal(list.Count, r.EntriesChecked);
        Assert.Equal(list.Count, r.NewState.NextEntry);
        Assert.Equal(list.Pcr(name), r.NewState.Aggregate);
    }

    [Fact]
    public void PcrMismatch_Fails()
    {
        var list = ImaListBuilder.System(5);
        var r = Verify(list, pcr: ImaListBuilder.Digest("not pcr 10"));
        Assert.False(r.Passed);
        var f = Assert.Single(r.Failures);
        Assert.Equal(MeasurementEventIds.ImaPcrMismatch, f.EventId);
        Assert.Equal(10, f.Pcr);
        Assert.Equal(0, r.NewState.NextEntry);
    }

    [Fact]
    public void ChangedDigestOrPath_FailsTheTemplateHash()
    {
        var list = ImaListBuilder.System(5);
        var lines = list.Lines.ToList();
        var digest = ImaListBuilder.Hex(ImaListBuilder.Digest("f2"));
        lines[3] = lines[3].Replace(digest, ImaListBuilder.Hex(ImaListBuilder.Digest("evil")));
        var r = Verify(list, text: string.Join("\n", lines) + "\n");
        Assert.Contains(r.Failures, f => f.EventId == MeasurementEventIds.ImaTemplateHash && f.Path == "/usr/lib/pkg2/file2.so");
        Assert.False(r.Passed);

        lines = list.Lines.ToList();
        lines[2] = lines[2].Replace("/usr/lib/pkg1/file1.so", "/usr/lib/pkg1/evil.so");
        r = Verify(list, text: string.Join("\n", lines) + "\n");
        Assert.Contains(r.Failures, f => f.EventId == MeasurementEventIds.ImaTemplateHash && f.Path == "/usr/lib/pkg1/evil.so");
    }

    [Fact]
    public void ReorderedEntries_FailThePcr()
    {
        var list = ImaListBuilder.System(5);
        var lines = list.Lines.ToList();
        (lines[2], lines[3]) = (lines[3], lines[2]);
        var r = Verify(list, text: string.Join("\n", lines) + "\n");
        Assert.Equal(MeasurementEventIds.ImaPcrMismatch, Ids(r));
    }

    [Fact]
    public void Policy_NotInPolicy_DigestNotAllowed_Excluded()
    {
        var list = ImaListBuilder.System(3).Ng("/tmp/scratch", ImaListBuilder.Digest("tmp")).Ng("/usr/bin/new", ImaListBuilder.Digest("new"));
        var policy = RuntimePolicy.FromImaList(ImaListBuilder.System(3).Text(), ["/tmp/.*"]);
        var r = Verify(list, policy: policy);
        var f = Assert.Single(r.Failures);
        Assert.Equal(MeasurementEventIds.ImaNotInAllowlist, f.EventId);
        Assert.Equal("/usr/bin/new", f.Path);
        Assert.Contains("/usr/bin/new", f.Reason);

        policy.AddDigest("/usr/bin/new", ImaListBuilder.Hex(ImaListBuilder.Digest("old")));
        r = Verify(list, policy: policy);
        f = Assert.Single(r.Failures);
        Assert.Equal(MeasurementEventIds.ImaDigestNotAllowed, f.EventId);
        Assert.Equal("/usr/bin/new", f.Path);

        policy.AddDigest("/usr/bin/new", ImaListBuilder.Hex(ImaListBuilder.Digest("new")));
        Assert.True(Verify(list, policy: policy).Passed);
        Assert.Equal(RuntimePolicyDecision.Excluded, policy.Check("/tmp/scratch", new byte[32]));
        Assert.Equal(RuntimePolicyDecision.NotInPolicy, policy.Check("/var/tmp/x", new byte[32])); // excludes anchor at the start
    }

    [Fact]
    public void LegacyImaTemplate_IsCheckedAgainstThePolicy()
    {
        var sha1 = SHA1.HashData("kmod"u8);
        var list = new ImaListBuilder().Legacy("/usr/bin/kmod", sha1);
        var policy = new RuntimePolicy();
        Assert.Equal(MeasurementEventIds.ImaNotInAllowlist, Ids(Verify(list, TpmAlgId.Sha1, policy)));
        policy.AddDigest("/usr/bin/kmod", Convert.ToHexString(sha1));
        Assert.True(Verify(list, TpmAlgId.Sha1, policy).Passed);
    }

    private static (ImaSignatureKeys Keys, Func<byte[], byte[]> Sign) RsaSigner()
    {
        var rsa = RSA.Create(2048);
        var spki = rsa.ExportSubjectPublicKeyInfo();
        uint id = ImaSignatureKeys.KeyIdOf(spki);
        return (ImaSignatureKeys.FromPem(rsa.ExportSubjectPublicKeyInfoPem()),
            d => ImaSignatureKeys.BuildSignatureBlob("sha256", id, rsa.SignHash(d, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1)));
    }

    private static (ImaSignatureKeys Keys, Func<byte[], byte[]> Sign) EcdsaCertSigner()
    {
        var ec = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest("CN=IMA test signer", ec, HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(req.PublicKey, false));
        using var cert = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
        var skid = ((X509SubjectKeyIdentifierExtension)cert.Extensions["2.5.29.14"]!).SubjectKeyIdentifierBytes.ToArray();
        uint id = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(skid.AsSpan(skid.Length - 4));
        return (ImaSignatureKeys.FromDer(cert.RawData),
            d => ImaSignatureKeys.BuildSignatureBlob("sha256", id, ec.SignHash(d, DSASignatureFormat.Rfc3279DerSequence)));
    }

    [Fact]
    public void ImaSig_RsaAndEcdsa_SignedPass_UnsignedOrBadSignatureFail()
    {
        foreach (var (keys, sign) in new[] { RsaSigner(), EcdsaCertSigner() })
        {
            var d1 = ImaListBuilder.Digest("signed");
            var good = new ImaListBuilder().Sig("/usr/bin/signed", d1, sign(d1));
            Assert.True(Verify(good, keys: keys).Passed);
            Assert.Equal(good.Count, ImaMeasurementList.Parse(good.Text()).Entries.Count(e => e.Signature is not null));

            var unsigned = new ImaListBuilder().Sig("/usr/bin/unsigned", d1, null);
            var r = Verify(unsigned, keys: keys);
            Assert.Equal(MeasurementEventIds.ImaInvalidSignature, Ids(r));
            Assert.Equal("/usr/bin/unsigned", r.Failures[0].Path);

            var d2 = ImaListBuilder.Digest("other");
            var wrong = new ImaListBuilder().Sig("/usr/bin/wrong", d2, sign(d1)); // signature over another digest
            Assert.Equal(MeasurementEventIds.ImaInvalidSignature, Ids(Verify(wrong, keys: keys)));

            var sig = sign(d1);
            sig[^3] ^= 0x40;
            var flipped = new ImaListBuilder().Sig("/usr/bin/flipped", d1, sig);
            Assert.Equal(MeasurementEventIds.ImaInvalidSignature, Ids(Verify(flipped, keys: keys)));

            // Without keys, ima-sig is not judged by signature (Keylime); with a policy the digest may still allow it.
            Assert.True(Verify(wrong).Passed);
            var policy = new RuntimePolicy();
            policy.AddDigest("/usr/bin/wrong", ImaListBuilder.Hex(d2));
            Assert.True(Verify(wrong, keys: keys, policy: policy).Passed);
        }
        var (otherKeys, _) = RsaSigner();
        var (_, signEc) = EcdsaCertSigner();
        var d = ImaListBuilder.Digest("x");
        Assert.Contains("no key", Verify(new ImaListBuilder().Sig("/x", d, signEc(d)), keys: otherKeys).Failures[0].Reason);
    }

    [Fact]
    public void PolicyVerificationKeys_AreUsedForImaSig()
    {
        var (keys, sign) = RsaSigner();
        var policy = new RuntimePolicy { VerificationKeys = keys.ToKeylimeKeyring() };
        var d = ImaListBuilder.Digest("signed");
        var list = new ImaListBuilder().Sig("/usr/bin/signed", d, sign(d));
        Assert.True(Verify(list, policy: RuntimePolicy.Parse(policy.ToJson())).Passed);
        Assert.Equal(MeasurementEventIds.ImaNotInAllowlist, Ids(Verify(new ImaListBuilder().Sig("/usr/bin/x", d, null), policy: policy)));
    }

    [Fact]
    public void KeyringMeasurement_AllowedByPolicy_TeachesAKeyForLaterEntries()
    {
        var ec = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest("CN=IMA keyring key", ec, HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(new byte[] { 1, 2, 3, 4, 5, 6, 7, 8 }, false));
        using var cert = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
        uint id = ImaSignatureKeys.FromDer(cert.RawData).KeyIds.Single();
        Assert.Equal(0x05060708u, id); // the last four bytes of the Subject Key Identifier
        var d = ImaListBuilder.Digest("app");
        var list = new ImaListBuilder().Buf(".ima", cert.RawData).Sig("/usr/bin/app", d,
            ImaSignatureKeys.BuildSignatureBlob("sha256", id, ec.SignHash(d, DSASignatureFormat.Rfc3279DerSequence)));
        var policy = new RuntimePolicy();
        policy.AddDigest(".ima", ImaListBuilder.Hex(SHA256.HashData(cert.RawData)), RuntimePolicySection.Keyrings);
        var r = Verify(list, policy: policy, keys: new ImaSignatureKeys());
        Assert.True(r.Passed, r.ToString());
        Assert.Single(r.NewState.LearnedKeys);

        var other = new RuntimePolicy();
        r = Verify(list, policy: other, keys: new ImaSignatureKeys());
        Assert.Contains(r.Failures, f => f.EventId == MeasurementEventIds.ImaNotInAllowlist && f.Path == ".ima");
    }

    [Fact]
    public void Incremental_ListAheadOfQuote_KeepsPositionAtTheMatchingEntry()
    {
        var list = ImaListBuilder.System(10);
        // The quote saw 6 entries, the agent already logged 11.
        var r1 = Verify(list, pcr: list.Pcr(Sha256, 6));
        Assert.True(r1.Passed, r1.ToString());
        Assert.Equal(5, r1.MatchedAtEntry);
        Assert.Equal(6, r1.NewState.NextEntry);

        var stored = ImaVerifierState.FromJson(r1.NewState.ToJson());
        Assert.Equal(r1.NewState.Aggregate, stored.Aggregate);
        list.Ng("/usr/bin/later", ImaListBuilder.Digest("later"));
        var r2 = Verify(list, first: stored.NextEntry, state: stored, pcr: list.Pcr(Sha256));
        Assert.True(r2.Passed, r2.ToString());
        Assert.Equal(list.Count, r2.NewState.NextEntry);

        // A quote with no new entries: the stored aggregate already equals PCR 10.
        var r3 = Verify(list, first: r2.NewState.NextEntry, state: r2.NewState, pcr: list.Pcr(Sha256));
        Assert.True(r3.Passed, r3.ToString());
        Assert.Equal(list.Count, r3.NewState.NextEntry);

        // The agent answers from another offset than the stored state expects.
        var r4 = Verify(list, first: 3, state: r2.NewState);
        Assert.Equal(MeasurementEventIds.ImaListOffset, Ids(r4));
        // ... or the state is for another bank.
        Assert.Equal(MeasurementEventIds.ImaListOffset, Ids(Verify(list, TpmAlgId.Sha1, first: r2.NewState.NextEntry, state: r2.NewState, pcr: list.Pcr(Sha1))));
        // Entry 0 always restarts.
        Assert.True(Verify(list, state: r2.NewState).Passed);
    }

    [Theory]
    [InlineData("")]
    [InlineData("[]")]
    [InlineData("{\"next_entry\":-1,\"bank\":\"sha256\",\"aggregate\":\"00\"}")]
    [InlineData("{\"next_entry\":1,\"bank\":\"md5\",\"aggregate\":\"00\"}")]
    [InlineData("{\"next_entry\":1,\"bank\":\"sha1\",\"aggregate\":\"zz\"}")]
    [InlineData("{\"next_entry\":\"x\",\"bank\":\"sha1\",\"aggregate\":\"00\"}")]
    public void State_BadJson_IsFormatException(string json) =>
        Assert.ThrowsAny<FormatException>(() => ImaVerifierState.FromJson(json));

    [Fact]
    public void ViolationEntries_ExtendAllOnes_AndFailOnlyWhenConfigured()
    {
        var list = ImaListBuilder.System(3).Violation("/var/log/open-for-write").Ng("/usr/bin/after", ImaListBuilder.Digest("after"));
        var entries = ImaMeasurementList.Parse(list.Text()).Entries;
        Assert.True(entries[4].IsViolation);
        Assert.True(Verify(list).Passed);
        Assert.True(Verify(list, TpmAlgId.Sha1, pcr: list.Pcr(Sha1)).Passed);
        Assert.Equal(MeasurementEventIds.ImaViolation, Ids(Verify(list, failOnViolations: true)));
    }

    [Theory]
    [InlineData(TpmAlgId.Sha1)]
    [InlineData(TpmAlgId.Sha256)]
    public void BootAggregate_IsCheckedAgainstQuotedPcrs(TpmAlgId bank)
    {
        var name = bank == TpmAlgId.Sha1 ? Sha1 : Sha256;
        int size = bank == TpmAlgId.Sha1 ? 20 : 32;
        var pcrs = Enumerable.Range(0, 10).ToDictionary(i => i, i => ImaListBuilder.Hash(name, [(byte)i])[..size]);
        int last = bank == TpmAlgId.Sha1 ? 7 : 9;
        var aggregate = ImaListBuilder.Hash(name, Enumerable.Range(0, last + 1).SelectMany(i => pcrs[i]).ToArray());
        var alg = bank == TpmAlgId.Sha1 ? "sha1" : "sha256";
        var list = new ImaListBuilder().Ng("boot_aggregate", aggregate, alg).Ng("/usr/bin/a", ImaListBuilder.Digest("a"));
        var policy = new RuntimePolicy();
        policy.AddDigest("/usr/bin/a", ImaListBuilder.Hex(ImaListBuilder.Digest("a")));

        Assert.True(Verify(list, bank, policy, pcr: list.Pcr(name), bootPcrs: pcrs).Passed); // not in policy, but proven by the quote
        Assert.Equal(MeasurementEventIds.ImaNotInAllowlist, Ids(Verify(list, bank, policy, pcr: list.Pcr(name)))); // Keylime: boot_aggregate must be listed
        pcrs[last] = new byte[size];
        var r = Verify(list, bank, policy, pcr: list.Pcr(name), bootPcrs: pcrs);
        Assert.Equal(MeasurementEventIds.ImaBootAggregate, Ids(r));
        Assert.Equal("boot_aggregate", r.Failures[0].Path);
        Assert.Equal(aggregate, ImaVerifier.ComputeBootAggregate(bank, Enumerable.Range(0, 10).ToDictionary(i => i, i => ImaListBuilder.Hash(name, [(byte)i])[..size])));
    }

    public static TheoryData<string, string> BadLines() => new()
    {
        { "10 3d1452eb1fcbe51ad137f3fc21d3cf4a7c2e625b ima-ng", "truncated" },
        { "10 3d1452eb1fcbe51ad137f3fc21d3cf4a7c2e62 ima-ng sha1:a212d835ca43d7deedd4ee806898e77eab53dafa /x", "template hash" },
        { "10 zz1452eb1fcbe51ad137f3fc21d3cf4a7c2e625b ima-ng sha1:a212d835ca43d7deedd4ee806898e77eab53dafa /x", "template hash" },
        { "10 3d1452eb1fcbe51ad137f3fc21d3cf4a7c2e625b ima-ng sha1:a212d835ca43d7deedd4ee806898e77eab53dafz /x", "not hex" },
        { "10 3d1452eb1fcbe51ad137f3fc21d3cf4a7c2e625b ima-ng sha256:a212d835ca43d7deedd4ee806898e77eab53dafa /x", "expected 32" },
        { "10 3d1452eb1fcbe51ad137f3fc21d3cf4a7c2e625b not-ima sha1:a212d835ca43d7deedd4ee806898e77eab53dafa /x", "unknown template" },
        { "10 3d1452eb1fcbe51ad137f3fc21d3cf4a7c2e625b ima-ng sha1:a212d835ca43d7deedd4ee806898e77eab53dafa", "expected 'alg:digest path'" },
        { "10 3d1452eb1fcbe51ad137f3fc21d3cf4a7c2e625b ima-buf sha1:a212d835ca43d7deedd4ee806898e77eab53dafa name", "buffer missing" },
        { "10 3d1452eb1fcbe51ad137f3fc21d3cf4a7c2e625b ima-buf sha1:a212d835ca43d7deedd4ee806898e77eab53dafa name 0g", "not hex" },
        { "10 3d1452eb1fcbe51ad137f3fc21d3cf4a7c2e625b ima-sig sha1:a212d835ca43d7deedd4ee806898e77eab53dafa /x 030", "not hex" },
        { "x 3d1452eb1fcbe51ad137f3fc21d3cf4a7c2e625b ima-ng sha1:a212d835ca43d7deedd4ee806898e77eab53dafa /x", "PCR" },
        { "this is text not an ima entry", "PCR" },
        { "", "empty" },
    };

    [Theory]
    [MemberData(nameof(BadLines))]
    public void MalformedLines_AreLineNumberedErrors_AndParserFailures(string line, string why)
    {
        var good = ImaListBuilder.System(2);
        var text = good.Text() + line + "\n" + "10 3d1452eb1fcbe51ad137f3fc21d3cf4a7c2e625b ima-ng sha1:a212d835ca43d7deedd4ee806898e77eab53dafa /usr/lib/systemd/systemd\n";
        var r = ImaMeasurementList.Parse(text, 100);
        var err = Assert.Single(r.Errors);
        Assert.Equal(103, err.EntryNumber);
        Assert.Contains(why, err.Message);
        Assert.Equal(4, r.Entries.Count);
        Assert.Equal(104, r.Entries[^1].EntryNumber);

        var v = Verify(good, text: good.Text() + line + "\n");
        Assert.Contains(v.Failures, f => f.EventId == MeasurementEventIds.ImaParser && f.Reason.Contains("entry 3"));
    }

    [Fact]
    public void EntryForAnotherPcr_Fails()
    {
        var good = ImaListBuilder.System(2);
        var text = good.Text() + good.Lines[1].Replace("10 ", "11 ") + "\n";
        var r = Verify(good, text: text);
        Assert.Equal(MeasurementEventIds.ImaEntryPcr, Ids(r));
        Assert.Equal(11, r.Failures[0].Pcr);
    }

    [Fact]
    public void Fuzz_RandomTruncatedAndBitFlippedLists_NeverThrow()
    {
        var (keys, sign) = RsaSigner();
        var d = ImaListBuilder.Digest("s");
        var list = ImaListBuilder.System(30).Sig("/usr/bin/s", d, sign(d)).Buf("kexec-cmdline", "x"u8.ToArray()).Legacy("/old", new byte[20]).Violation("/v");
        var text = list.Text();
        var policy = RuntimePolicy.FromImaList(text, ["/usr/lib/pkg1.*"]);
        var rng = new Random(42);
        for (int i = 0; i < 400; i++)
        {
            var chars = text.ToCharArray();
            string mutated = (i % 4) switch
            {
                0 => text[..rng.Next(text.Length)],
                1 => Flip(chars, rng),
                2 => new string(Enumerable.Range(0, rng.Next(300)).Select(_ => (char)rng.Next(1, 128)).ToArray()),
                _ => string.Join("\n", text.Split('\n').OrderBy(_ => rng.Next())),
            };
            var parsed = ImaMeasurementList.Parse(mutated, rng.Next(0, 1000));
            Assert.True(parsed.Entries.Count + parsed.Errors.Count <= parsed.LineCount);
            var r = ImaVerifier.Verify(new ImaVerifyInput { MeasurementList = mutated, PcrBank = TpmAlgId.Sha256, QuotedPcr10 = list.Pcr(Sha256), Policy = policy, Keys = keys });
            if (mutated != text && !r.Passed) Assert.NotEmpty(r.Failures);
        }
    }

    private static string Flip(char[] chars, Random rng)
    {
        for (int f = rng.Next(1, 6); f > 0; f--)
        {
            int at = rng.Next(chars.Length);
            chars[at] = (char)(chars[at] ^ (1 << rng.Next(7)));
        }
        return new string(chars);
    }

    [Fact]
    public void TenThousandLines_AgainstTenThousandEntryPolicy()
    {
        var list = ImaListBuilder.System(10_000);
        var policy = RuntimePolicy.FromImaList(list.Text());
        Assert.Equal(10_001, policy.Digests.Count);
        var r = Verify(list, policy: policy);
        Assert.True(r.Passed, r.ToString());
        Assert.Equal(10_001, r.EntriesChecked);

        var many = Verify(list, policy: new RuntimePolicy());
        Assert.Equal(1001, many.Failures.Count); // capped, plus one counting the rest
        Assert.Equal(MeasurementEventIds.ImaTooManyFailures, many.Failures[^1].EventId);
    }
}
