using System.Security.Cryptography;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tpm;
using TpmProvisioning.Tpm.Simulator;

namespace TpmProvisioning.Tests.Device;

public class CredentialTests : IClassFixture<SwtpmFixture>
{
    private const uint EkPersistent = 0x81010100;
    private const uint AkPersistent = 0x81000B01;
    private readonly SwtpmFixture tpm;

    public CredentialTests(SwtpmFixture fixture)
    {
        tpm = fixture;
        tpm.FlushTransients();
    }

    /// <summary>Persists an EK of <paramref name="kind"/> and an RSA AK for tpm2-tools; returns their public areas and Names.</summary>
    private (TpmObject Ek, TpmObject Ak) PersistEkAndAk(EkKind kind)
    {
        using var dev = tpm.Open();
        var ek = dev.CreateEk(kind);
        try { dev.PersistObject(ek.Handle, EkPersistent, replace: true); }
        finally { dev.FlushContext(ek.Handle); }
        var ak = dev.CreateAk().Key;
        try { dev.PersistObject(ak.Handle, AkPersistent, replace: true); }
        finally { dev.FlushContext(ak.Handle); }
        return (ek, ak);
    }

    private void EvictBoth()
    {
        using var dev = tpm.Open();
        var persistent = dev.GetHandles(TpmHandle.HrPersistent);
        if (persistent.Contains(EkPersistent)) dev.EvictPersistent(EkPersistent);
        if (persistent.Contains(AkPersistent)) dev.EvictPersistent(AkPersistent);
    }

    [Theory]
    [InlineData(EkKind.Rsa2048)]
    [InlineData(EkKind.EccP256)]
    public void OurMakeCredentialIsRecoveredByTpm2ActivateCredential(EkKind kind)
    {
        var (ek, ak) = PersistEkAndAk(kind);
        using var tmp = new TempDir();
        try
        {
            var secret = RandomNumberGenerator.GetBytes(32);
            var blob = Credential.MakeCredential(ek.Public, ak.Name, secret);
            File.WriteAllBytes(tmp["cred.out"], Credential.ToTpm2ToolsFile(blob));
            tpm.Tools("tpm2_startauthsession", "--policy-session", "-S", tmp["session.ctx"]);
            tpm.Tools("tpm2_policysecret", "-S", tmp["session.ctx"], "-c", "e");
            tpm.Tools("tpm2_activatecredential", "-c", "0x" + AkPersistent.ToString("x"), "-C", "0x" + EkPersistent.ToString("x"),
                "-i", tmp["cred.out"], "-o", tmp["actcred.out"], "-P", "session:" + tmp["session.ctx"]);
            Assert.Equal(secret, File.ReadAllBytes(tmp["actcred.out"]));
        }
        finally
        {
            EvictBoth();
        }
    }

    [Theory]
    [InlineData(EkKind.Rsa2048)]
    [InlineData(EkKind.EccP256)]
    public void Tpm2MakeCredentialIsRecoveredByOurActivateCredential(EkKind kind)
    {
        var (ek, ak) = PersistEkAndAk(kind);
        using var tmp = new TempDir();
        try
        {
            var secret = RandomNumberGenerator.GetBytes(16);
            File.WriteAllBytes(tmp["secret.bin"], secret);
            File.WriteAllBytes(tmp["ek.pub"], ek.Public.ToTpm2B());
            Tpm2Tools.Run(null, "tpm2_makecredential", "-T", "none", "-u", tmp["ek.pub"], "-s", tmp["secret.bin"],
                "-n", Convert.ToHexString(ak.Name).ToLowerInvariant(), "-o", tmp["cred.out"]);
            var blob = Credential.FromTpm2ToolsFile(File.ReadAllBytes(tmp["cred.out"]));
            using var dev = tpm.Open();
            Assert.Equal(secret, dev.ActivateCredential(EkPersistent, AkPersistent, blob));
        }
        finally
        {
            EvictBoth();
        }
    }

    [Theory]
    [InlineData(EkKind.Rsa2048)]
    [InlineData(EkKind.EccP256)]
    [InlineData(EkKind.Rsa2048High)]
    [InlineData(EkKind.EccP256High)]
    [InlineData(EkKind.EccP384High)]
    public void ActivateCredentialWithTransientEkOfEveryTemplateFamily(EkKind kind)
    {
        using var dev = tpm.Open();
        var ek = dev.CreateEk(kind);
        try
        {
            var ak = dev.CreateAk().Key;
            try
            {
                var secret = RandomNumberGenerator.GetBytes(TpmHash.DigestSize(ek.Public.NameAlg));
                var blob = Credential.MakeCredential(ek.Public, ak.Name, secret);
                Assert.Equal(secret, dev.ActivateCredential(ek.Handle, ak.Handle, blob.IdObject, blob.EncryptedSecret));
            }
            finally { dev.FlushContext(ak.Handle); }
        }
        finally { dev.FlushContext(ek.Handle); }
        Assert.Empty(dev.GetHandles(TpmHandle.HrPolicySession)); // the policy session was consumed
    }

    [Fact]
    public void ActivateCredentialWithSwtpmsPersistentHighRangeP384Ek()
    {
        using var dev = tpm.Open();
        var ek = dev.ReadPublic(SwtpmInstance.PersistentEccEk).Object;
        var ak = dev.CreateAk(TpmTemplates.AkEccP256).Key;
        try
        {
            var secret = "the AK certificate's key"u8.ToArray();
            var blob = Credential.MakeCredential(ek.Public, ak.Name, secret);
            Assert.Equal(secret, dev.ActivateCredential(SwtpmInstance.PersistentEccEk, ak.Handle, blob));
        }
        finally { dev.FlushContext(ak.Handle); }
    }

    [Fact]
    public void HighRangeEkRefusesABarePolicySecretSession()
    {
        using var dev = tpm.Open();
        var ek = dev.CreateEk(EkKind.Rsa2048High);
        var ak = dev.CreateAk().Key;
        uint session = 0;
        try
        {
            var blob = Credential.MakeCredential(ek.Public, ak.Name, [1, 2, 3]);
            session = dev.StartAuthSession(TpmSe.Policy, TpmAlgId.Sha256);
            dev.PolicySecret(TpmHandle.RhEndorsement, session);
            var ex = Assert.Throws<TpmException>(() => dev.ActivateCredentialWithSessions(ek.Handle, ak.Handle, blob.IdObject, blob.EncryptedSecret,
                TpmAuthSession.Policy(session, continueSession: true), TpmAuthSession.Password()));
            Assert.Equal(TpmCc.ActivateCredential, ex.Command);
            Assert.Equal("TPM_RC_POLICY_FAIL", ex.Decoded.Name);
            Assert.Equal(2, ex.Decoded.Session);
            Assert.Contains("TPM2_ActivateCredential", ex.Message);
            Assert.Contains("TPM_RC_POLICY_FAIL", ex.Message);
            Assert.Contains("session 2", ex.Message);
        }
        finally
        {
            if (session != 0) dev.TryFlush(session);
            dev.FlushContext(ak.Handle);
            dev.FlushContext(ek.Handle);
        }
    }

    [Fact]
    public void CredentialForAnotherTpmCannotBeActivated()
    {
        using var other = SwtpmInstance.Start(new SwtpmOptions { StateMode = SwtpmStateMode.Fresh });
        TpmPublic otherEk;
        using (var devB = TpmDevice.Open(other.ConnectionString))
        {
            otherEk = devB.ReadPublic(SwtpmInstance.PersistentRsaEk).Object.Public;
        }
        using var dev = tpm.Open();
        var ourEk = dev.ReadPublic(SwtpmInstance.PersistentRsaEk).Object;
        Assert.NotEqual(ourEk.Public.Modulus, otherEk.Modulus); // fresh provisioning: distinct EKs

        var ak = dev.CreateAk().Key;
        try
        {
            var secret = RandomNumberGenerator.GetBytes(32);
            // Made for the other TPM's EK, with our AK's Name: our EK cannot recover the seed.
            var blob = Credential.MakeCredential(otherEk, ak.Name, secret);
            var ex = Assert.Throws<TpmException>(() => dev.ActivateCredential(SwtpmInstance.PersistentRsaEk, ak.Handle, blob));
            Assert.Equal(TpmCc.ActivateCredential, ex.Command);
            // And made for our EK but another object's Name: the integrity check fails.
            var wrongName = (byte[])ak.Name.Clone();
            wrongName[^1] ^= 1;
            var blob2 = Credential.MakeCredential(ourEk.Public, wrongName, secret);
            var ex2 = Assert.Throws<TpmException>(() => dev.ActivateCredential(SwtpmInstance.PersistentRsaEk, ak.Handle, blob2));
            Assert.Equal("TPM_RC_INTEGRITY", ex2.Decoded.Name);
        }
        finally { dev.FlushContext(ak.Handle); }
        Assert.Empty(dev.GetHandles(TpmHandle.HrPolicySession)); // failed activations flush their policy session
    }
}
