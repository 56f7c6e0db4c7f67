using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using TpmProvisioning.Attestation.Measurements;
using TpmProvisioning.Attestation.Verifier;

namespace TpmProvisioning.Tests.Verifier;

/// <summary>
/// Keylime's detached runtime-policy signature (<c>runtime_policy_sig</c> with <c>runtime_policy_key</c>): ECDSA-SHA256 and
/// RSA-PSS-SHA256 over the policy bytes, with a PEM key or certificate; anything else, or a changed policy, is refused.
/// </summary>
public sealed class RuntimePolicySignatureTests
{
    private static readonly byte[] Policy = MakePolicy();

    private static byte[] MakePolicy()
    {
        var p = new RuntimePolicy();
        p.AddDigest("/usr/bin/bash", new string('a', 64));
        return Encoding.UTF8.GetBytes(p.ToJson());
    }

    private static VerifierAgentConfig Config(byte[] policy, byte[] sig, string keyPem) => new()
    {
        RuntimePolicy = Convert.ToBase64String(policy),
        RuntimePolicySig = Convert.ToBase64String(sig),
        RuntimePolicyKey = Convert.ToBase64String(Encoding.UTF8.GetBytes(keyPem)),
    };

    /// <summary>The policy with one digest changed (still valid JSON).</summary>
    private static byte[] Changed()
    {
        var text = Encoding.UTF8.GetString(Policy);
        int i = text.IndexOf(new string('a', 64), StringComparison.Ordinal);
        return Encoding.UTF8.GetBytes(text[..i] + "b" + text[(i + 1)..]);
    }

    [Fact]
    public void EcdsaAndRsaPssSignaturesVerifyWithAKeyOrACertificateAndAChangedPolicyDoesNot()
    {
        using var ec = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var ecSig = ec.SignData(Policy, HashAlgorithmName.SHA256, DSASignatureFormat.Rfc3279DerSequence);
        Assert.Null(ImaCheck.VerifyPolicySignature(Config(Policy, ecSig, ec.ExportSubjectPublicKeyInfoPem())));

        using var rsa = RSA.Create(2048);
        // pyca's PSS.MAX_LENGTH salt, as Keylime signs (RevocationNotifier.Sign makes exactly that).
        var rsaSig = Convert.FromBase64String(RevocationNotifier.Sign(rsa.ExportPkcs8PrivateKeyPem(), Policy));
        Assert.Null(ImaCheck.VerifyPolicySignature(Config(Policy, rsaSig, rsa.ExportSubjectPublicKeyInfoPem())));
        var netSig = rsa.SignData(Policy, HashAlgorithmName.SHA256, RSASignaturePadding.Pss);
        Assert.Null(ImaCheck.VerifyPolicySignature(Config(Policy, netSig, rsa.ExportSubjectPublicKeyInfoPem())));

        var req = new CertificateRequest("CN=policy signer", ec, HashAlgorithmName.SHA256);
        using var cert = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        Assert.Null(ImaCheck.VerifyPolicySignature(Config(Policy, ecSig, cert.ExportCertificatePem())));

        var changed = Changed();
        Assert.Equal("the signature does not verify", ImaCheck.VerifyPolicySignature(Config(changed, ecSig, ec.ExportSubjectPublicKeyInfoPem())));
        Assert.Equal("the signature does not verify", ImaCheck.VerifyPolicySignature(Config(changed, rsaSig, rsa.ExportSubjectPublicKeyInfoPem())));
        using var other = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        Assert.Equal("the signature does not verify", ImaCheck.VerifyPolicySignature(Config(Policy, ecSig, other.ExportSubjectPublicKeyInfoPem())));
        Assert.NotNull(ImaCheck.VerifyPolicySignature(Config(Policy, ecSig, "not a key")));
        Assert.NotNull(ImaCheck.VerifyPolicySignature(Config(Policy, [1, 2, 3], ec.ExportSubjectPublicKeyInfoPem())));
    }

    [Fact]
    public void TheAddRequestIsRefusedWhenTheSignatureDoesNotVerifyOrComesWithoutItsKey()
    {
        using var ec = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var sig = ec.SignData(Policy, HashAlgorithmName.SHA256, DSASignatureFormat.Rfc3279DerSequence);
        var check = new ImaCheck();
        var good = Config(Policy, sig, ec.ExportSubjectPublicKeyInfoPem());
        Assert.Null(check.Validate(good));
        var changed = Changed();
        Assert.StartsWith("runtime_policy_sig:", check.Validate(Config(changed, sig, ec.ExportSubjectPublicKeyInfoPem())));
        Assert.StartsWith("runtime_policy_sig:", check.Validate(good with { RuntimePolicyKey = null }));
        Assert.StartsWith("runtime_policy_sig:", check.Validate(good with { RuntimePolicySig = "" }));
    }

    [Fact]
    public void AnRsaSignatureValueAboveTheModulusIsRefusedNotThrown()
    {
        using var rsa = RSA.Create(2048);
        var big = Enumerable.Repeat((byte)0xFF, 256).ToArray();
        Assert.False(RevocationNotifier.VerifyPssSha256(rsa, Policy, big));
        Assert.False(RevocationNotifier.VerifyPssSha256(rsa, Policy, [1, 2, 3]));
        Assert.False(RevocationNotifier.VerifyPssSha256(rsa, Policy, new byte[300]));
        Assert.Equal("the signature does not verify", ImaCheck.VerifyPolicySignature(Config(Policy, big, rsa.ExportSubjectPublicKeyInfoPem())));
    }
}
