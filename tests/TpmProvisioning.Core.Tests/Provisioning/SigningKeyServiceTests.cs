using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Data.Sqlite;
using TpmProvisioning.Kms;
using TpmProvisioning.Pki;
using TpmProvisioning.Station;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Tests.Provisioning;

/// <summary>
/// The signing-key engine on a real SQLite store: stored keys, the active key resolved per call and cached until it
/// changes, sealing with the master key and its stable id, and secrets at rest without a master key.
/// </summary>
public sealed class SigningKeyServiceTests : IAsyncLifetime
{
    private readonly string _dir = Directory.CreateTempSubdirectory("tpmprov-keys-").FullName;
    private SqliteStore _store = null!;
    private TpmCa _builtin = null!;

    public async Task InitializeAsync()
    {
        _store = await SqliteStore.OpenAsync(Path.Combine(_dir, "store.db"));
        _builtin = TpmCa.Create(Path.Combine(_dir, "tpm-ca"));
    }

    public Task DisposeAsync()
    {
        _store.Dispose();
        _builtin.Dispose();
        SqliteConnection.ClearAllPools();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
        return Task.CompletedTask;
    }

    private static SecretKeyRing Ring(byte[]? key)
    {
        var ring = new SecretKeyRing();
        if (key is not null) ring.Add(key, "test key", MasterKeyKind.InsecureFile);
        return ring;
    }

    private static (string Cert, string Key) NewCa(string name)
    {
        using var ec = ECDsa.Create(ECCurve.NamedCurves.nistP384);
        var req = new CertificateRequest("CN=" + name, ec, HashAlgorithmName.SHA384);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        using var cert = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddYears(1));
        return (cert.ExportCertificatePem(), ec.ExportPkcs8PrivateKeyPem());
    }

    [Fact]
    public void AMasterKeyHasAStableIdThatDiffersBetweenKeys()
    {
        var a = RandomNumberGenerator.GetBytes(32);
        var b = RandomNumberGenerator.GetBytes(32);
        Assert.Matches("^[0-9a-f]{16}$", SecretKeyRing.KeyIdOf(a));
        Assert.Equal(SecretKeyRing.KeyIdOf(a), SecretKeyRing.KeyIdOf(a.ToArray()));
        Assert.NotEqual(SecretKeyRing.KeyIdOf(a), SecretKeyRing.KeyIdOf(b));
        // The id is not a prefix of the key or of its plain hash.
        Assert.DoesNotContain(SecretKeyRing.KeyIdOf(a), Convert.ToHexString(a).ToLowerInvariant() + Convert.ToHexString(SHA256.HashData(a)).ToLowerInvariant());
        using var ring = Ring(a);
        var sealedValue = ring.Seal("secret", "row/1");
        Assert.Equal(SecretKeyRing.KeyIdOf(a), ring.Identify(sealedValue, "row/1"));
        Assert.Null(ring.Identify(sealedValue, "row/2"));
        using var other = Ring(b);
        Assert.Null(other.Identify(sealedValue, "row/1"));
        Assert.Throws<KmsException>(() => other.Open(sealedValue, "row/1"));
    }

    [Fact]
    public async Task TheActiveKeyIsResolvedPerCallAndCachedUntilItChanges()
    {
        var master = RandomNumberGenerator.GetBytes(32);
        using var keys = new SigningKeyService(_store, Path.Combine(_dir, "tpm-ca"), () => Ring(master));
        var (certA, keyA) = NewCa("CA A");
        var (certB, keyB) = NewCa("CA B");
        var a = await keys.UploadAsync("a", certA, keyA);
        Assert.Equal("pem-wrapped", a.Location);
        Assert.Equal(SecretKeyRing.KeyIdOf(master), a.WrapKeyId);
        await keys.UploadAsync("b", certB, keyB);

        Assert.Same(_builtin, await keys.ResolveAsync(_builtin));
        await keys.ActivateAsync("a");
        var caA = await keys.ResolveAsync(_builtin);
        Assert.Equal("CN=CA A", caA.Certificate.Subject);
        Assert.Same(caA, await keys.ResolveAsync(_builtin));
        await keys.ActivateAsync("b");
        Assert.Equal("CN=CA B", (await keys.ResolveAsync(_builtin)).Certificate.Subject);
        Assert.Single(await _store.ListSigningKeysAsync(), k => k.Active);
        await Assert.ThrowsAsync<StationException>(() => keys.RemoveAsync("b"));
        await keys.ActivateAsync(SigningKeyService.BuiltinLabel);
        Assert.Same(_builtin, await keys.ResolveAsync(_builtin));
        Assert.DoesNotContain(await _store.ListSigningKeysAsync(), k => k.Active);
        await keys.RemoveAsync("b");
        Assert.Equal(["builtin", "a"], (await keys.ListAsync()).Select(k => k.Label));
    }

    [Fact]
    public async Task WithoutAMasterKeyAKeyIsStoredPlaintextCountedAndNotMigrated()
    {
        using var keys = new SigningKeyService(_store, Path.Combine(_dir, "tpm-ca"), () => Ring(null));
        var (cert, key) = NewCa("Lab CA");
        var k = await keys.UploadAsync("lab", cert, key);
        Assert.Equal("pem", k.Location);
        var status = await SecretsAtRest.StatusAsync(_store, keys.Ring);
        Assert.Null(status.MasterKeyId);
        Assert.Equal(1, status.TotalPlaintext);
        var ex = await Assert.ThrowsAsync<StationException>(() => SecretsAtRest.MigrateAsync(_store, keys.Ring, "all", "test", "local"));
        Assert.Equal("NO_MASTER_KEY", ex.Code);
        Assert.Equal(1, (await SecretsAtRest.StatusAsync(_store, keys.Ring)).TotalPlaintext);
        Assert.Equal("NO_MASTER_KEY", (await Assert.ThrowsAsync<StationException>(() => keys.WrapAsync("lab"))).Code);

        // Once a master key exists, wrap seals it (and a second wrap changes nothing).
        var master = RandomNumberGenerator.GetBytes(32);
        using var sealing = new SigningKeyService(_store, Path.Combine(_dir, "tpm-ca"), () => Ring(master));
        var wrapped = await sealing.WrapAsync("lab");
        Assert.Equal("pem-wrapped", wrapped.Location);
        Assert.Equal(wrapped, await sealing.WrapAsync("lab"));
        Assert.Equal(0, (await SecretsAtRest.StatusAsync(_store, sealing.Ring)).TotalPlaintext);
        await sealing.ActivateAsync("lab");
        Assert.Equal("CN=Lab CA", (await sealing.ResolveAsync(_builtin)).Certificate.Subject);

        // A server with another master key cannot open it: activation is refused, resolution is a 503-style failure.
        using var stranger = new SigningKeyService(_store, Path.Combine(_dir, "tpm-ca"), () => Ring(RandomNumberGenerator.GetBytes(32)));
        Assert.Equal("KEY_SEAL_UNREADABLE", (await Assert.ThrowsAsync<StationException>(() => stranger.ActivateAsync("lab"))).Code);
        await Assert.ThrowsAsync<SigningKeyUnavailableException>(() => stranger.ResolveAsync(_builtin));
    }
}
