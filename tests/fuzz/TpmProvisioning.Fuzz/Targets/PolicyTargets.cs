using System.Text;
using TpmProvisioning.Attestation.Measurements;
using TpmProvisioning.Attestation.Verifier;

namespace TpmProvisioning.Fuzz;

/// <summary>
/// The JSON documents inside the verifier's add-agent body, each with its own parser. The first byte picks: 0 <c>runtime_policy</c>
/// (after its base64: <see cref="RuntimePolicy.Parse"/>, then lookups and excludes), 1 <c>mb_refstate</c>
/// (<see cref="MeasuredBootPolicy.Parse"/> and its JSON round trip), 2 <c>tpm_policy</c> (<see cref="TpmPolicy.TryParse"/>),
/// 3 <c>ima_sign_verification_keys</c> / the policy's <c>verification-keys</c> (<see cref="ImaSignatureKeys.FromKeylimeKeyring"/>).
/// Bad input is a <see cref="FormatException"/> (a null result with a reason for tpm_policy).
/// </summary>
public sealed class VerifierPoliciesTarget : FuzzTarget
{
    public override string Name => "verifier-policies";
    public override string Description => "runtime_policy, mb_refstate, tpm_policy, IMA keyring JSON (first byte picks)";

    public override void Run(byte[] data)
    {
        if (data.Length == 0) return;
        var text = Encoding.UTF8.GetString(data, 1, data.Length - 1);
        switch (data[0] % 4)
        {
            case 0:
            {
                RuntimePolicy p;
                try { p = RuntimePolicy.Parse(text); }
                catch (FormatException) { return; }
                foreach (var path in (string[])["/usr/bin/ls", "/tmp/x", "boot_aggregate", ""])
                {
                    _ = p.IsExcluded(path);
                    _ = p.Check(path, new byte[32]);
                    _ = p.Check(path, new byte[20], RuntimePolicySection.Keyrings);
                    _ = p.Check(path, new byte[64], RuntimePolicySection.ImaBuf);
                }
                try { _ = ImaSignatureKeys.FromKeylimeKeyring(p.VerificationKeys); }
                catch (FormatException) { }
                break;
            }
            case 1:
            {
                MeasuredBootPolicy p;
                try { p = MeasuredBootPolicy.Parse(text); }
                catch (FormatException) { return; }
                var again = MeasuredBootPolicy.Parse(p.ToJson());
                if (again.ToJson() != p.ToJson()) throw new InvalidOperationException("mb_refstate does not survive a JSON round trip.");
                break;
            }
            case 2:
            {
                var p = TpmPolicy.TryParse(text, out var error);
                if (p is null && string.IsNullOrWhiteSpace(error)) throw new InvalidOperationException("tpm_policy refused without a reason.");
                if (p is not null && TpmPolicy.TryParse(p.Text, out _) is null) throw new InvalidOperationException("An accepted tpm_policy does not parse again.");
                break;
            }
            default:
                try { _ = ImaSignatureKeys.FromKeylimeKeyring(text).ToKeylimeKeyring(); }
                catch (FormatException) { }
                break;
        }
    }

    public override IEnumerable<(string, byte[])> Seeds()
    {
        yield return ("runtime-policy", [0, .. File.ReadAllBytes(FuzzData.File("ima-runtime-policy.json"))]);
        yield return ("runtime-policy-keylime", [0, .. """{"meta":{"version":1,"generator":2,"timestamp":"2024-01-01 00:00:00"},"release":3,"digests":{"/usr/bin/ls":["ABCDEF0123456789abcdef0123456789abcdef01"]},"excludes":["/tmp/.*","(?P<var>/var/log)/.*"],"keyrings":{".ima":["aa"]},"ima":{"ignored_keyrings":["*"],"log_hash_alg":"sha256","dm_policy":{"version":1,"match_on":"name","rules":{}}},"ima-buf":{"kexec-cmdline":["bb"]},"verification-keys":""}"""u8]);
        var refstate = MeasuredBootPolicy.FromEventLog(File.ReadAllBytes(FuzzData.File("tpm2tools-event-sd-boot-fedora37.bin")), Tpm.TpmAlgId.Sha256).ToJson();
        yield return ("mb-refstate", [1, .. Encoding.UTF8.GetBytes(refstate)]);
        yield return ("tpm-policy", [2, .. """{"mask":"0x408401","0":["0000000000000000000000000000000000000000000000000000000000000000"],"10":["ffffffffffffffffffffffffffffffffffffffff"]}"""u8]);
        using var key = System.Security.Cryptography.ECDsa.Create();
        key.ImportFromPem(File.ReadAllText(FuzzData.File("ima-signing-key.pem")));
        yield return ("keyring", [3, .. Encoding.UTF8.GetBytes(ImaSignatureKeys.FromDer(key.ExportSubjectPublicKeyInfo()).ToKeylimeKeyring())]);
    }
}
