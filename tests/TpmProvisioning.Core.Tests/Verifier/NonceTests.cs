using TpmProvisioning.Attestation.Verifier;

namespace TpmProvisioning.Tests.Verifier;

/// <summary>The verifier's quote nonces: Keylime's shape (20 characters of [A-Za-z0-9]), never repeated, every character equally likely.</summary>
public sealed class NonceTests
{
    private const string Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

    [Fact]
    public void NoncesHaveKeylimesShapeAndDoNotRepeat()
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < 10_000; i++)
        {
            var n = VerifierService.NewNonce();
            Assert.Equal(20, n.Length);
            Assert.All(n, c => Assert.Contains(c, Alphabet));
            Assert.True(seen.Add(n), $"nonce {n} repeated");
        }
    }

    [Fact]
    public void EveryCharacterIsEquallyLikely()
    {
        // 50,000 nonces = 1,000,000 characters, 16,129 expected of each: a standard deviation of about 126. A modulo bias (bytes
        // of 248-255 folded onto the first 8 characters) would put about 21 % more on those 8; the bounds are ±6 %, some 7.7
        // deviations, so an unbiased generator never fails them.
        var counts = new int[128];
        for (int i = 0; i < 50_000; i++)
            foreach (char c in VerifierService.NewNonce()) counts[c]++;
        double expected = 1_000_000.0 / Alphabet.Length;
        foreach (char c in Alphabet)
            Assert.InRange(counts[c], expected * 0.94, expected * 1.06);
    }
}
