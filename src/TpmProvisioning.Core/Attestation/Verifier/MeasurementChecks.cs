using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using TpmProvisioning.Attestation.Measurements;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Attestation.Verifier;

/// <summary>The measurement checks a verifier runs after the quote checks: IMA against the runtime policy, measured boot against <c>mb_refstate</c>.</summary>
public static class MeasurementChecks
{
    public static IReadOnlyList<IMeasurementCheck> Default { get; } = [new ImaCheck(), new MeasuredBootCheck()];

    internal static AttestationFailure ToFailure(MeasurementFailure f) => new() { EventId = f.EventId, Reason = f.Reason, Pcr = f.Pcr, Path = f.Path };

    /// <summary>
    /// Parsed policies, keyed by the text they came from: a runtime policy of a big system is megabytes, parsed once, not
    /// once per quote. The same string object (a watched agent's request, held by its watch) is found by reference without
    /// hashing it; another copy of the same text (another agent with the same policy) by its SHA-256, sharing the parsed
    /// object (the measurement engine's objects are safe across threads).
    /// </summary>
    internal sealed class ParsedCache<T>(Func<string, T> parse) where T : class
    {
        private const int MaxEntries = 1024;
        private readonly ConcurrentDictionary<string, T> _byHash = new(StringComparer.Ordinal);
        private readonly System.Runtime.CompilerServices.ConditionalWeakTable<string, T> _byReference = new();

        public T Get(string text)
        {
            if (_byReference.TryGetValue(text, out var v)) return v;
            var key = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text)));
            if (!_byHash.TryGetValue(key, out v))
            {
                v = parse(text);
                if (_byHash.Count >= MaxEntries) _byHash.Clear();
                _byHash[key] = v;
            }
            _byReference.AddOrUpdate(text, v);
            return v;
        }
    }

    internal static IReadOnlyDictionary<int, byte[]> Quoted(PcrValues pcrs, TpmAlgId bank, int from, int to)
    {
        var d = new Dictionary<int, byte[]>();
        for (int i = from; i <= to; i++) if (pcrs.TryGet(bank, i, out var v)) d[i] = v;
        return d;
    }
}

/// <summary>
/// IMA: the agent's measurement list (from the next unchecked entry) replayed into PCR 10 and compared with the quote, each
/// entry's template hash recomputed, each file digest compared with the runtime policy and ima-sig signatures checked with
/// the tenant's keys. The position and the running PCR 10 are kept, so each quote checks only new entries.
/// </summary>
public sealed class ImaCheck : IMeasurementCheck, IConfigValidator
{
    private readonly MeasurementChecks.ParsedCache<RuntimePolicy> _policies = new(ParsePolicy);
    private readonly MeasurementChecks.ParsedCache<ImaSignatureKeys> _keys = new(ParseKeys);

    private static bool HasKeys(VerifierAgentConfig c) => c.ImaSignVerificationKeys is { } k && k.Trim() is not ("" or "[]" or "null" or "{}" or "\"\"");

    /// <summary>PCR 10 when the tenant gave a runtime policy or IMA keys.</summary>
    public uint RequiredMask(VerifierAgentConfig config) => config.HasRuntimePolicy || HasKeys(config) ? 1u << AgentService.ImaPcr : 0;

    /// <summary>The runtime policy is base64 of a Keylime 7 runtime policy; the keys a Keylime keyring or a list of PEM keys.</summary>
    public string? Validate(VerifierAgentConfig config)
    {
        if (config.HasRuntimePolicy)
        {
            if (VerifierAgentRequest.TryBase64(config.RuntimePolicy!.Trim()) is null) return "runtime_policy: not base64";
            try { _policies.Get(config.RuntimePolicy!); }
            catch (FormatException ex) { return "runtime_policy: " + ex.Message; }
        }
        if (!string.IsNullOrEmpty(config.RuntimePolicySig) || !string.IsNullOrEmpty(config.RuntimePolicyKey))
        {
            if (string.IsNullOrEmpty(config.RuntimePolicySig) || string.IsNullOrEmpty(config.RuntimePolicyKey))
                return "runtime_policy_sig: runtime_policy_sig and runtime_policy_key go together";
            if (!config.HasRuntimePolicy) return "runtime_policy_sig: there is no runtime_policy to verify";
            if (VerifyPolicySignature(config) is { } why) return "runtime_policy_sig: " + why;
        }
        if (HasKeys(config))
        {
            try { _keys.Get(config.ImaSignVerificationKeys!); }
            catch (Exception ex) when (ex is FormatException or CryptographicException or System.Text.Json.JsonException or ArgumentException)
            { return "ima_sign_verification_keys: " + ex.Message; }
        }
        return null;
    }

    /// <summary>
    /// Keylime's detached runtime-policy signature: <c>runtime_policy_key</c> is base64 of a PEM public key or certificate,
    /// <c>runtime_policy_sig</c> base64 of the signature over the policy bytes: ECDSA-SHA256 (DER) or RSA-PSS-SHA256.
    /// Null when it verifies, else why not.
    /// </summary>
    public static string? VerifyPolicySignature(VerifierAgentConfig config)
    {
        var policy = VerifierAgentRequest.TryBase64(config.RuntimePolicy!.Trim());
        var sig = VerifierAgentRequest.TryBase64(config.RuntimePolicySig!.Trim());
        var keyBytes = VerifierAgentRequest.TryBase64(config.RuntimePolicyKey!.Trim());
        if (policy is null || sig is null || keyBytes is null) return "the policy, signature and key must be base64";
        string pem = Encoding.UTF8.GetString(keyBytes);
        try
        {
            if (pem.Contains("CERTIFICATE", StringComparison.Ordinal))
            {
                using var cert = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPem(pem);
                using var ec = cert.GetECDsaPublicKey();
                if (ec is not null) return ec.VerifyData(policy, sig, HashAlgorithmName.SHA256, DSASignatureFormat.Rfc3279DerSequence) ? null : "the signature does not verify";
                using var rsaFromCert = cert.GetRSAPublicKey();
                if (rsaFromCert is not null) return RevocationNotifier.VerifyPssSha256(rsaFromCert, policy, sig) ? null : "the signature does not verify";
                return "the certificate's key is neither ECDSA nor RSA";
            }
            using (var ecKey = TryEc(pem))
                if (ecKey is not null)
                    return ecKey.VerifyData(policy, sig, HashAlgorithmName.SHA256, DSASignatureFormat.Rfc3279DerSequence) ? null : "the signature does not verify";
            using var rsa = RSA.Create();
            rsa.ImportFromPem(pem);
            return RevocationNotifier.VerifyPssSha256(rsa, policy, sig) ? null : "the signature does not verify";
        }
        catch (Exception ex) when (ex is CryptographicException or ArgumentException)
        {
            return "runtime_policy_key is not a PEM public key or certificate";
        }
    }

    private static ECDsa? TryEc(string pem)
    {
        var ec = ECDsa.Create();
        try { ec.ImportFromPem(pem); return ec; }
        catch (Exception ex) when (ex is CryptographicException or ArgumentException) { ec.Dispose(); return null; }
    }

    /// <summary>The runtime policy from its base64 form (validated as base64 before the agent was added).</summary>
    private static RuntimePolicy ParsePolicy(string base64) =>
        RuntimePolicy.Parse(Encoding.UTF8.GetString(VerifierAgentRequest.TryBase64(base64.Trim()) ?? throw new FormatException("runtime_policy: not base64")));

    private static ImaSignatureKeys ParseKeys(string text)
    {
        var t = text.Trim();
        if (t.StartsWith('['))
        {
            // Our convenience form: a JSON list of PEM public keys or certificates.
            var keys = new ImaSignatureKeys();
            foreach (var e in System.Text.Json.JsonDocument.Parse(t).RootElement.EnumerateArray())
                keys.AddPem(e.GetString() ?? throw new FormatException("a key is not a string"));
            return keys;
        }
        return ImaSignatureKeys.FromKeylimeKeyring(t);
    }

    public (IReadOnlyList<AttestationFailure> Failures, VerifierAgentProgress Progress) Check(VerifierAgentConfig config, VerifierAgentProgress progress,
        QuoteResponse response, TpmAlgId bank, PcrValues pcrs, bool rebooted)
    {
        if (RequiredMask(config) == 0 || !pcrs.TryGet(bank, AgentService.ImaPcr, out var pcr10)) return ([], progress);
        RuntimePolicy? policy = config.HasRuntimePolicy ? _policies.Get(config.RuntimePolicy!) : null;
        ImaSignatureKeys? keys = HasKeys(config) ? _keys.Get(config.ImaSignVerificationKeys!) : null;
        ImaVerifierState? state = null;
        if (!rebooted && progress.ImaState is { } json)
        {
            try { state = ImaVerifierState.FromJson(json); }
            catch (FormatException) { state = null; }
        }
        var boot = MeasurementChecks.Quoted(pcrs, bank, 0, 9);
        var result = ImaVerifier.Verify(new ImaVerifyInput
        {
            MeasurementList = response.ImaMeasurementList ?? "",
            FirstEntry = response.ImaMeasurementListEntry ?? 0,
            PcrBank = bank,
            QuotedPcr10 = pcr10,
            PreviousState = state,
            Policy = policy,
            Keys = keys,
            BootPcrs = boot.Count == 10 ? boot : null,
        });
        var next = progress with { ImaState = result.NewState.ToJson(), NextImaEntry = result.NewState.NextEntry };
        return (result.Failures.Select(MeasurementChecks.ToFailure).ToList(), result.Passed ? next : progress with { ImaState = null, NextImaEntry = 0 });
    }
}

/// <summary>Measured boot: the agent's UEFI event log replayed into PCRs 0-7 and compared with the quote, then its events checked against <c>mb_refstate</c>.</summary>
public sealed class MeasuredBootCheck : IMeasurementCheck, IConfigValidator
{
    private readonly MeasurementChecks.ParsedCache<MeasuredBootPolicy> _policies = new(MeasuredBootPolicy.Parse);

    /// <summary>PCRs 0-7 when the tenant gave a refstate (PCR 0 also makes the agent send its event log).</summary>
    public uint RequiredMask(VerifierAgentConfig config) => config.HasMbRefstate ? 0xFFu : 0;

    public string? Validate(VerifierAgentConfig config)
    {
        if (!config.HasMbRefstate) return null;
        try { _policies.Get(config.MbRefstate!); return null; }
        catch (FormatException ex) { return "mb_refstate: " + ex.Message; }
    }

    public (IReadOnlyList<AttestationFailure> Failures, VerifierAgentProgress Progress) Check(VerifierAgentConfig config, VerifierAgentProgress progress,
        QuoteResponse response, TpmAlgId bank, PcrValues pcrs, bool rebooted)
    {
        if (!config.HasMbRefstate) return ([], progress);
        byte[]? log = response.MbMeasurementList is { } b64 ? VerifierAgentRequest.TryBase64(b64) : null;
        if (log is null)
            return ([new AttestationFailure { EventId = MeasurementEventIds.BootLogInvalid, Reason = "The agent sent no UEFI event log (mb_measurement_list) although PCR 0 was quoted." }], progress);
        var result = MeasuredBootVerifier.Verify(log, bank, MeasurementChecks.Quoted(pcrs, bank, 0, 7), _policies.Get(config.MbRefstate!));
        return (result.Failures.Select(MeasurementChecks.ToFailure).ToList(), progress);
    }
}
