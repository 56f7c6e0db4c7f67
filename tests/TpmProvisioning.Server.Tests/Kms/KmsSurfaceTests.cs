using System.Net;
using System.Security.Cryptography;
using System.Text.Json;
using TpmProvisioning.Kms;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Tests.Kms;

/// <summary>Spec 002 (vSphere providers) and spec 004 (CCKM key versions) over HTTPS, with the specs' example bodies.</summary>
public sealed class KmsSurfaceTests : IAsyncLifetime
{
    private KmsTestServer s = null!;
    private const string P = "/api/esx/trusted-infrastructure/kms/providers";
    private static readonly string Kdk = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));

    public async Task InitializeAsync() => s = await KmsTestServer.StartAsync();
    public async Task DisposeAsync() => await s.DisposeAsync();

    private static void AssertVsphereError(JsonElement body, string type, string? arg = null)
    {
        Assert.Equal(type, body.GetProperty("error_type").GetString());
        var m = body.GetProperty("messages");
        Assert.Equal(1, m.GetArrayLength());
        Assert.False(string.IsNullOrEmpty(m[0].GetProperty("id").GetString()));
        Assert.False(string.IsNullOrEmpty(m[0].GetProperty("default_message").GetString()));
        Assert.Equal(JsonValueKind.Array, m[0].GetProperty("args").ValueKind);
        if (arg is not null) Assert.Contains(arg, m[0].GetProperty("args").EnumerateArray().Select(a => a.GetString()));
    }

    private static void AssertCckmError(JsonElement body)
    {
        Assert.Equal(JsonValueKind.Number, body.GetProperty("code").ValueKind);
        Assert.False(string.IsNullOrEmpty(body.GetProperty("codeDesc").GetString()));
        Assert.False(string.IsNullOrEmpty(body.GetProperty("message").GetString()));
    }

    [Fact]
    public async Task TheSpecsProviderExampleCreatesAProviderAnd204()
    {
        var session = await s.SessionAsync();
        var seed = KmsTestServer.Seed("vsphere-provider-create.request.json");
        // As printed, the example's key_derivation_key is the placeholder "secret string": not base64, so refused, nothing stored.
        var (st, body) = await s.SendAsync(HttpMethod.Post, P, seed, session);
        Assert.True(HttpStatusCode.BadRequest == st, body.ToString());
        AssertVsphereError(body, "INVALID_ARGUMENT", "native_spec.key_derivation_key");
        Assert.Equal("", await s.SnapshotAsync());

        (st, _) = await s.SendAsync(HttpMethod.Post, P, seed.Replace("secret string", Kdk), session);
        Assert.Equal(HttpStatusCode.NoContent, st);
        (st, body) = await s.SendAsync(HttpMethod.Get, P + "/obj-103", null, session);
        Assert.Equal(HttpStatusCode.OK, st);
        Assert.Equal("OK", body.GetProperty("health").GetString());
        Assert.Equal("NATIVE", body.GetProperty("type").GetString());
        Assert.Equal(0, body.GetProperty("details").GetArrayLength());
        Assert.Equal("string", body.GetProperty("native_info").GetProperty("key_id").GetString());
        Assert.DoesNotContain("key_derivation_key", body.GetRawText());
        (st, body) = await s.SendAsync(HttpMethod.Get, P, null, session);
        Assert.Equal(HttpStatusCode.OK, st);
        Assert.Equal("obj-103", body[0].GetProperty("provider").GetString());
        Assert.Equal("OK", body[0].GetProperty("health").GetString());

        // The derived data key is HKDF-SHA256 of the key derivation key over the documented info string.
        var expected = HKDF.DeriveKey(HashAlgorithmName.SHA256, Convert.FromBase64String(Kdk), 32, [], "tpmprov-kms-data-key-v1:vm-42"u8.ToArray());
        Assert.Equal(expected, await s.Engine.DeriveDataKeyAsync("obj-103", "vm-42"));
        Assert.NotEqual(expected, await s.Engine.DeriveDataKeyAsync("obj-103", "vm-43"));
    }

    [Fact]
    public async Task ProviderErrorsHaveTheVsphereShapeAndChangeNothing()
    {
        var admin = await s.SessionAsync();
        var reader = await s.SessionAsync("reader", KmsTestServer.ReaderPassword);
        string Body(string name, string kdk, string keyId = "k1") => JsonSerializer.Serialize(new { provider = name, native_spec = new { key_id = keyId, key_derivation_key = kdk } });
        Assert.Equal(HttpStatusCode.NoContent, (await s.SendAsync(HttpMethod.Post, P, Body("p1", Kdk), admin)).Status);
        var before = await s.SnapshotAsync();

        var cases = new (string? Session, string Method, string Path, string? Json, HttpStatusCode Status, string Type, string? Arg)[]
        {
            (admin, "POST", P, Body("p1", Kdk), HttpStatusCode.BadRequest, "ALREADY_EXISTS", "provider"),
            (admin, "POST", P, Body("", Kdk), HttpStatusCode.BadRequest, "INVALID_ARGUMENT", "provider"),
            (admin, "POST", P, Body("bad name/x", Kdk), HttpStatusCode.BadRequest, "INVALID_ARGUMENT", "provider"),
            (admin, "POST", P, Body("p2", Convert.ToBase64String(new byte[16])), HttpStatusCode.BadRequest, "INVALID_ARGUMENT", "native_spec.key_derivation_key"),
            (admin, "POST", P, Body("p2", "%%%"), HttpStatusCode.BadRequest, "INVALID_ARGUMENT", "native_spec.key_derivation_key"),
            (admin, "POST", P, Body("p2", Kdk, ""), HttpStatusCode.BadRequest, "INVALID_ARGUMENT", "native_spec.key_id"),
            (admin, "POST", P, "{\"provider\":\"p2\"}", HttpStatusCode.BadRequest, "INVALID_ARGUMENT", "native_spec"),
            (admin, "POST", P, "not json", HttpStatusCode.BadRequest, "INVALID_ARGUMENT", "body"),
            (null, "POST", P, Body("p2", Kdk), HttpStatusCode.Unauthorized, "UNAUTHENTICATED", null),
            ("forged-session", "POST", P, Body("p2", Kdk), HttpStatusCode.Unauthorized, "UNAUTHENTICATED", null),
            (null, "GET", P, null, HttpStatusCode.Unauthorized, "UNAUTHENTICATED", null),
            (reader, "POST", P, Body("p2", Kdk), HttpStatusCode.Forbidden, "UNAUTHORIZED", null),
            (reader, "DELETE", P + "/p1", null, HttpStatusCode.Forbidden, "UNAUTHORIZED", null),
            (reader, "PATCH", P + "/p1", "{\"native_spec\":{\"key_id\":\"k9\"}}", HttpStatusCode.Forbidden, "UNAUTHORIZED", null),
            (admin, "PATCH", P + "/p1", "{\"native_spec\":{\"key_derivation_key\":\"" + Kdk + "\"}}", HttpStatusCode.BadRequest, "INVALID_ARGUMENT", "native_spec.key_derivation_key"),
            (admin, "GET", P + "/nope", null, HttpStatusCode.NotFound, "NOT_FOUND", "provider"),
            (admin, "DELETE", P + "/nope", null, HttpStatusCode.NotFound, "NOT_FOUND", "provider"),
        };
        foreach (var c in cases)
        {
            var (st, body) = await s.SendAsync(new HttpMethod(c.Method), c.Path, c.Json, c.Session);
            Assert.True(c.Status == st, $"{c.Method} {c.Path} {c.Json}: {st} {body}");
            AssertVsphereError(body, c.Type, c.Arg);
            Assert.DoesNotContain(Kdk, body.GetRawText());
        }
        Assert.Equal(before, await s.SnapshotAsync());
        // Reader may read; refused changes are audited.
        Assert.Equal(HttpStatusCode.OK, (await s.SendAsync(HttpMethod.Get, P + "/p1", null, reader)).Status);
        var denied = await s.Store.QueryAuditAsync(new AuditQuery { Action = "kms.provider.create", Outcome = AuditOutcome.Denied });
        Assert.Contains(denied, e => e.Actor == "reader");
    }

    [Fact]
    public async Task ProvidersUpdateAndDeleteAndSessionsEnd()
    {
        var admin = await s.SessionAsync();
        var body = JsonSerializer.Serialize(new { provider = "p1", native_spec = new { key_id = "k1", key_derivation_key = Kdk } });
        Assert.Equal(HttpStatusCode.NoContent, (await s.SendAsync(HttpMethod.Post, P, body, admin)).Status);
        var key = await s.Engine.DeriveDataKeyAsync("p1", "disk-1");
        Assert.Equal(HttpStatusCode.NoContent, (await s.SendAsync(HttpMethod.Patch, P + "/p1", "{\"native_spec\":{\"key_id\":\"k2\"}}", admin)).Status);
        var (_, got) = await s.SendAsync(HttpMethod.Get, P + "/p1", null, admin);
        Assert.Equal("k2", got.GetProperty("native_info").GetProperty("key_id").GetString());
        Assert.Equal(key, await s.Engine.DeriveDataKeyAsync("p1", "disk-1"));
        Assert.Equal(HttpStatusCode.NoContent, (await s.SendAsync(HttpMethod.Delete, P + "/p1", null, admin)).Status);
        Assert.Equal(HttpStatusCode.NotFound, (await s.SendAsync(HttpMethod.Get, P + "/p1", null, admin)).Status);

        Assert.Equal(HttpStatusCode.NoContent, (await s.SendAsync(HttpMethod.Delete, "/api/session", null, admin)).Status);
        var (st, err) = await s.SendAsync(HttpMethod.Get, P, null, admin);
        Assert.Equal(HttpStatusCode.Unauthorized, st);
        AssertVsphereError(err, "UNAUTHENTICATED");
        // Bad credentials: no session.
        using var req = new HttpRequestMessage(HttpMethod.Post, s.Url + "/api/session");
        req.Headers.Authorization = new("Basic", Convert.ToBase64String("admin:wrong-password"u8.ToArray()));
        using var resp = await s.Http.SendAsync(req);
        Assert.Equal(HttpStatusCode.Unauthorized, resp.StatusCode);
        // The store keeps only hashes of session ids.
        var raw = await File.ReadAllBytesAsync(s.DbPath).ContinueWith(t => t.Result.Concat(File.Exists(s.DbPath + "-wal") ? File.ReadAllBytes(s.DbPath + "-wal") : []).ToArray());
        Assert.Equal(-1, raw.AsSpan().IndexOf(System.Text.Encoding.ASCII.GetBytes(admin)));
    }

    private static void AssertSameShape(JsonElement expected, JsonElement actual, string path)
    {
        Assert.True(expected.ValueKind == actual.ValueKind || (expected.ValueKind is JsonValueKind.True or JsonValueKind.False && actual.ValueKind is JsonValueKind.True or JsonValueKind.False),
            $"{path}: {expected.ValueKind} expected, {actual.ValueKind} found");
        if (expected.ValueKind != JsonValueKind.Object) return;
        foreach (var p in expected.EnumerateObject())
        {
            Assert.True(actual.TryGetProperty(p.Name, out var a), $"{path}.{p.Name} missing");
            AssertSameShape(p.Value, a, path + "." + p.Name);
        }
    }

    [Fact]
    public async Task TheSpecsKeyVersionExampleGivesEveryFieldAndTheNewVersionIsPrimary()
    {
        var token = await s.TokenAsync();
        var (st, key) = await s.SendAsync(HttpMethod.Post, "/v1/cckm/oci/keys", "{\"name\":\"disk-key\"}", bearer: token);
        Assert.Equal(HttpStatusCode.Created, st);
        var id = key.GetProperty("id").GetString()!;
        var v1 = key.GetProperty("oci_params").GetProperty("current_key_version").GetString();

        var (st2, v) = await s.SendAsync(HttpMethod.Post, $"/api/v1/cckm/oci/keys/{id}/versions", KmsTestServer.Seed("cckm-key-version-create.request.json"), bearer: token);
        Assert.Equal(HttpStatusCode.Created, st2);
        using var example = JsonDocument.Parse(KmsTestServer.Seed("cckm-key-version-create.response.json"));
        AssertSameShape(example.RootElement, v, "$");
        var p = v.GetProperty("oci_key_version_params");
        Assert.Equal("native", v.GetProperty("key_material_origin").GetString());
        Assert.Equal("INTERNAL", p.GetProperty("origin").GetString());
        Assert.True(p.GetProperty("is_primary").GetBoolean());
        Assert.False(v.GetProperty("gone").GetBoolean());
        Assert.Equal("kylo:kylo:cckm:oci-key-version:" + v.GetProperty("id").GetString(), v.GetProperty("uri").GetString());
        Assert.Equal(key.GetProperty("oci_params").GetProperty("key_id").GetString(), p.GetProperty("key_id").GetString());
        Assert.NotEqual(v1, p.GetProperty("version_id").GetString());

        var (_, list) = await s.SendAsync(HttpMethod.Get, $"/v1/cckm/oci/keys/{id}/versions", bearer: token);
        Assert.Equal(2, list.GetProperty("total").GetInt32());
        var versions = list.GetProperty("resources").EnumerateArray().ToList();
        Assert.Single(versions, x => x.GetProperty("oci_key_version_params").GetProperty("is_primary").GetBoolean());
        Assert.False(versions[0].GetProperty("oci_key_version_params").GetProperty("is_primary").GetBoolean());
        var (st3, one) = await s.SendAsync(HttpMethod.Get, $"/v1/cckm/oci/keys/{id}/versions/{v.GetProperty("id").GetString()}", bearer: token);
        Assert.Equal(HttpStatusCode.OK, st3);
        Assert.Equal(v.GetProperty("id").GetString(), one.GetProperty("id").GetString());
        var (_, keys) = await s.SendAsync(HttpMethod.Get, "/v1/cckm/oci/keys", bearer: token);
        Assert.Equal(1, keys.GetProperty("total").GetInt32());
        var (_, gotKey) = await s.SendAsync(HttpMethod.Get, "/v1/cckm/oci/keys/" + id, bearer: token);
        Assert.Equal(p.GetProperty("version_id").GetString(), gotKey.GetProperty("oci_params").GetProperty("current_key_version").GetString());
    }

    [Fact]
    public async Task AKeyCannotBeNamedAfterAKeyId()
    {
        var token = await s.TokenAsync();
        var (_, first) = await s.SendAsync(HttpMethod.Post, "/v1/cckm/oci/keys", "{\"name\":\"first\"}", bearer: token);
        var id = first.GetProperty("id").GetString()!;
        var before = await s.SnapshotAsync();
        // Ids win over names when a key is looked up, so a key named after another's id (or any UUID) could never be addressed by name.
        foreach (var name in new[] { id, id.ToUpperInvariant(), Guid.NewGuid().ToString() })
        {
            var (st, err) = await s.SendAsync(HttpMethod.Post, "/v1/cckm/oci/keys", JsonSerializer.Serialize(new { name }), bearer: token);
            Assert.Equal(HttpStatusCode.BadRequest, st);
            Assert.Contains("key id", err.ToString());
        }
        Assert.Equal(before, await s.SnapshotAsync());
        var (_, got) = await s.SendAsync(HttpMethod.Get, "/v1/cckm/oci/keys/" + id, bearer: token);
        Assert.Equal("first", got.GetProperty("name").GetString());
    }

    [Fact]
    public async Task UploadedVersionsFromTheLocalTierCopyTheSourceAndAreExternal()
    {
        var token = await s.TokenAsync();
        var (_, src) = await s.SendAsync(HttpMethod.Post, "/v1/cckm/oci/keys", "{\"name\":\"source\"}", bearer: token);
        var (_, dst) = await s.SendAsync(HttpMethod.Post, "/v1/cckm/oci/keys", "{\"name\":\"target\"}", bearer: token);
        var (st, v) = await s.SendAsync(HttpMethod.Post, $"/v1/cckm/oci/keys/{dst.GetProperty("id").GetString()}/versions",
            JsonSerializer.Serialize(new { is_native = false, source_key_identifier = "source" }), bearer: token);
        Assert.Equal(HttpStatusCode.Created, st);
        Assert.Equal("EXTERNAL", v.GetProperty("oci_key_version_params").GetProperty("origin").GetString());
        Assert.Equal("local", v.GetProperty("key_material_origin").GetString());
        var (_, a) = await s.Engine.GetVersionMaterialAsync("source", null);
        var (_, b) = await s.Engine.GetVersionMaterialAsync("target", null);
        Assert.Equal(a, b);
        Assert.Equal(src.GetProperty("id").GetString(), (await s.Engine.GetKeyAsync("source")).Id);
    }

    [Fact]
    public async Task KeyErrorsHaveTheCipherTrustShapeAndChangeNothing()
    {
        var admin = await s.TokenAsync();
        var reader = await s.TokenAsync("reader", KmsTestServer.ReaderPassword);
        var (_, key) = await s.SendAsync(HttpMethod.Post, "/v1/cckm/oci/keys", "{\"name\":\"k\"}", bearer: admin);
        var id = key.GetProperty("id").GetString()!;
        var before = await s.SnapshotAsync();
        string V = $"/v1/cckm/oci/keys/{id}/versions";
        var cases = new (string? Bearer, string Method, string Path, string? Json, HttpStatusCode Status, string? MessageHas)[]
        {
            (admin, "POST", V, "{\"is_native\":false,\"source_key_identifier\":\"x\",\"source_key_tier\":\"dsm\"}", HttpStatusCode.BadRequest, "dsm"),
            (admin, "POST", V, "{\"is_native\":false,\"source_key_identifier\":\"x\",\"source_key_tier\":\"hsm-luna\"}", HttpStatusCode.BadRequest, "hsm-luna"),
            (admin, "POST", V, "{\"is_native\":false,\"source_key_identifier\":\"x\",\"source_key_tier\":\"floppy\"}", HttpStatusCode.BadRequest, "source_key_tier"),
            (admin, "POST", V, "{\"is_native\":false}", HttpStatusCode.BadRequest, "source_key_identifier"),
            (admin, "POST", V, "{\"is_native\":false,\"source_key_identifier\":\"no-such-key\"}", HttpStatusCode.BadRequest, "no-such-key"),
            (admin, "POST", V, "{\"is_native\":\"yes\"}", HttpStatusCode.BadRequest, "is_native"),
            (admin, "POST", V, "[1]", HttpStatusCode.BadRequest, "object"),
            (admin, "POST", "/v1/cckm/oci/keys/nope/versions", "{\"is_native\":true}", HttpStatusCode.NotFound, "nope"),
            (admin, "GET", "/v1/cckm/oci/keys/nope", null, HttpStatusCode.NotFound, "nope"),
            (admin, "GET", V + "/nope", null, HttpStatusCode.NotFound, "nope"),
            (admin, "POST", "/v1/cckm/oci/keys", "{\"name\":\"k\"}", HttpStatusCode.Conflict, "k"),
            (admin, "POST", "/v1/cckm/oci/keys", "{\"name\":\"\"}", HttpStatusCode.BadRequest, "name"),
            (null, "POST", V, "{\"is_native\":true}", HttpStatusCode.Unauthorized, null),
            ("forged", "GET", "/v1/cckm/oci/keys", null, HttpStatusCode.Unauthorized, null),
            (reader, "POST", V, "{\"is_native\":true}", HttpStatusCode.Forbidden, "reader"),
            (reader, "POST", "/v1/cckm/oci/keys", "{\"name\":\"k2\"}", HttpStatusCode.Forbidden, "reader"),
        };
        foreach (var c in cases)
        {
            var (st, body) = await s.SendAsync(new HttpMethod(c.Method), c.Path, c.Json, bearer: c.Bearer);
            Assert.True(c.Status == st, $"{c.Method} {c.Path} {c.Json}: {st} {body}");
            AssertCckmError(body);
            if (c.MessageHas is not null) Assert.Contains(c.MessageHas, body.GetProperty("message").GetString());
        }
        Assert.Equal(before, await s.SnapshotAsync());
        Assert.Equal(HttpStatusCode.OK, (await s.SendAsync(HttpMethod.Get, V, bearer: reader)).Status);
        // A session id is not a bearer token, and the reverse.
        var session = await s.SessionAsync();
        Assert.Equal(HttpStatusCode.Unauthorized, (await s.SendAsync(HttpMethod.Get, "/v1/cckm/oci/keys", bearer: session)).Status);
        Assert.Equal(HttpStatusCode.Unauthorized, (await s.SendAsync(HttpMethod.Get, P, session: admin)).Status);
        var (bad, err) = await s.SendAsync(HttpMethod.Post, "/api/v1/auth/tokens", "{\"grant_type\":\"password\",\"username\":\"admin\",\"password\":\"nope-nope\"}");
        Assert.Equal(HttpStatusCode.Unauthorized, bad);
        AssertCckmError(err);
        (bad, err) = await s.SendAsync(HttpMethod.Post, "/api/v1/auth/tokens", "{\"grant_type\":\"client_credential\",\"username\":\"admin\",\"password\":\"x\"}");
        Assert.Equal(HttpStatusCode.BadRequest, bad);
        AssertCckmError(err);
    }

    [Fact]
    public async Task TheDatabaseFileHoldsNoKeyDerivationKeyOrKeyMaterialInClear()
    {
        var session = await s.SessionAsync();
        var token = await s.TokenAsync();
        var kdk = RandomNumberGenerator.GetBytes(32);
        var body = JsonSerializer.Serialize(new { provider = "secret-test", native_spec = new { key_id = "k", key_derivation_key = Convert.ToBase64String(kdk) } });
        Assert.Equal(HttpStatusCode.NoContent, (await s.SendAsync(HttpMethod.Post, P, body, session)).Status);
        var (_, key) = await s.SendAsync(HttpMethod.Post, "/v1/cckm/oci/keys", "{\"name\":\"secret-key\"}", bearer: token);
        await s.SendAsync(HttpMethod.Post, $"/v1/cckm/oci/keys/{key.GetProperty("id").GetString()}/versions", "{\"is_native\":true}", bearer: token);
        var secrets = new List<byte[]> { kdk };
        foreach (var v in await s.Engine.ListVersionsAsync("secret-key")) secrets.Add((await s.Engine.GetVersionMaterialAsync("secret-key", v.Id)).Material);
        Assert.Equal(3, secrets.Count);
        var dataKey = await s.Engine.DeriveDataKeyAsync("secret-test", "vm-1");

        foreach (var file in new[] { s.DbPath, s.DbPath + "-wal" }.Where(File.Exists))
        {
            byte[] raw;
            using (var fs = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete))
            {
                raw = new byte[fs.Length];
                fs.ReadExactly(raw);
            }
            foreach (var secret in secrets.Append(dataKey))
            {
                Assert.Equal(-1, raw.AsSpan().IndexOf(secret));
                Assert.Equal(-1, raw.AsSpan().IndexOf(System.Text.Encoding.ASCII.GetBytes(Convert.ToBase64String(secret))));
                Assert.Equal(-1, raw.AsSpan().IndexOf(System.Text.Encoding.ASCII.GetBytes(Convert.ToHexString(secret))));
                Assert.Equal(-1, raw.AsSpan().IndexOf(System.Text.Encoding.ASCII.GetBytes(Convert.ToHexString(secret).ToLowerInvariant())));
            }
        }
        // The test can fail: the wrapped key derivation key is in the file.
        var wrapped = (await s.Store.GetKmsProviderAsync("secret-test"))!.WrappedKdk;
        var all = File.ReadAllBytes(s.DbPath).Concat(File.Exists(s.DbPath + "-wal") ? File.ReadAllBytes(s.DbPath + "-wal") : []).ToArray();
        Assert.NotEqual(-1, all.AsSpan().IndexOf(wrapped));
    }

    [Fact]
    public async Task RotationOldDataStillDecryptsAndNewDataUsesTheNewVersion()
    {
        var token = await s.TokenAsync();
        var (_, key) = await s.SendAsync(HttpMethod.Post, "/v1/cckm/oci/keys", "{\"name\":\"rotating\"}", bearer: token);
        var id = key.GetProperty("id").GetString()!;
        var v1 = (await s.Engine.GetVersionAsync(id, null)).Id;
        var old = await s.Engine.EncryptAsync(id, "data under version 1"u8.ToArray());
        Assert.Equal(v1, KmsEnvelope.VersionOf(old));

        var (_, v) = await s.SendAsync(HttpMethod.Post, $"/v1/cckm/oci/keys/{id}/versions", "{\"is_native\":true}", bearer: token);
        var v2 = v.GetProperty("id").GetString();
        Assert.NotEqual(v1, v2);
        Assert.Equal("data under version 1", System.Text.Encoding.UTF8.GetString(await s.Engine.DecryptAsync(id, old)));
        var fresh = await s.Engine.EncryptAsync(id, "data under version 2"u8.ToArray());
        Assert.Equal(v2, KmsEnvelope.VersionOf(fresh));
        Assert.Equal("data under version 2", System.Text.Encoding.UTF8.GetString(await s.Engine.DecryptAsync(id, fresh)));
        // Version 1's material does not open version 2's data.
        var (_, m1) = await s.Engine.GetVersionMaterialAsync(id, v1);
        Assert.Throws<KmsException>(() => KmsEnvelope.Open(id, m1, fresh));
    }
}
