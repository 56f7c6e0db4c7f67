using System.Globalization;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Kms;

namespace TpmProvisioning.Cmdlets;

/// <summary>What the KMS admin cmdlets do, locally on the engine or remotely over the vSphere and CCKM REST routes; the same objects either way.</summary>
internal interface IKmsBackend : IDisposable
{
    void CreateProvider(string name, string keyId, byte[] keyDerivationKey);
    IReadOnlyList<KmsProvider> ListProviders();
    KmsProvider GetProvider(string name);
    void UpdateProvider(string name, string keyId);
    void RemoveProvider(string name);
    KmsKey CreateKey(string name, string? compartmentId);
    IReadOnlyList<KmsKey> ListKeys();
    KmsKey GetKey(string idOrName);
    KmsKeyVersion AddVersion(string key, bool isNative, string? sourceKeyIdentifier, string? sourceKeyTier);
    IReadOnlyList<KmsKeyVersion> ListVersions(string key);
    KmsKeyVersion GetVersion(string key, string version);
}

/// <summary>The engine on a data path's store (the server need not run).</summary>
internal sealed class LocalKmsBackend(KmsEngine engine, Storage.IStore store, KmsCaller caller) : IKmsBackend
{
    public KmsEngine Engine => engine;
    private static T Run<T>(Task<T> t) => t.GetAwaiter().GetResult();
    private static void Run(Task t) => t.GetAwaiter().GetResult();

    public void CreateProvider(string name, string keyId, byte[] kdk) => Run(engine.CreateProviderAsync(name, keyId, kdk, caller));
    public IReadOnlyList<KmsProvider> ListProviders() => Run(engine.ListProvidersAsync()).Select(KmsProvider.From).ToList();
    public KmsProvider GetProvider(string name) => KmsProvider.From(Run(engine.GetProviderAsync(name)));
    public void UpdateProvider(string name, string keyId) => Run(engine.UpdateProviderAsync(name, keyId, caller));
    public void RemoveProvider(string name) => Run(engine.DeleteProviderAsync(name, caller));
    public KmsKey CreateKey(string name, string? compartmentId) => KmsKey.From(Run(engine.CreateKeyAsync(name, compartmentId, caller)));
    public IReadOnlyList<KmsKey> ListKeys() => Run(engine.ListKeysAsync()).Select(KmsKey.From).ToList();
    public KmsKey GetKey(string idOrName) => KmsKey.From(Run(engine.GetKeyAsync(idOrName)));
    public KmsKeyVersion AddVersion(string key, bool isNative, string? sourceKeyIdentifier, string? sourceKeyTier) =>
        KmsKeyVersion.From(Run(engine.AddVersionAsync(key, isNative, sourceKeyIdentifier, sourceKeyTier, caller)));
    public IReadOnlyList<KmsKeyVersion> ListVersions(string key) => Run(engine.ListVersionsAsync(key)).Select(KmsKeyVersion.From).ToList();
    public KmsKeyVersion GetVersion(string key, string version) => KmsKeyVersion.From(Run(engine.GetVersionAsync(key, version)));

    public void Dispose()
    {
        engine.Dispose();
        store.Dispose();
    }
}

/// <summary>How the cmdlets reach a KMS server over HTTPS.</summary>
internal sealed record KmsServerOptions(Uri Server, X509Certificate2? CaCertificate, bool SkipCertificateCheck, X509Certificate2? ClientCertificate = null);

/// <summary>
/// A KMS server's REST routes: providers through a vSphere session (<c>POST /api/session</c>, ended at dispose), keys and versions
/// through a CipherTrust bearer token (<c>POST /api/v1/auth/tokens</c>). Errors come back as <see cref="KmsException"/> of the kind
/// the server's answer names, so the cmdlets report them as they do local ones.
/// </summary>
internal sealed class RemoteKmsBackend : IKmsBackend
{
    private const string Providers = "/api/esx/trusted-infrastructure/kms/providers";
    private const string Keys = "/v1/cckm/oci/keys";
    private readonly HttpClient _http;
    private readonly Uri _base;
    private readonly string _user;
    private readonly string _password;
    private string? _session, _bearer;

    public RemoteKmsBackend(KmsServerOptions options, string user, string password)
    {
        _base = options.Server;
        _user = user;
        _password = password;
        _http = CreateHttpClient(options);
    }

    internal static HttpClient CreateHttpClient(KmsServerOptions options)
    {
        var handler = new SocketsHttpHandler { SslOptions = new SslClientAuthenticationOptions() };
        if (options.ClientCertificate is { } cc) handler.SslOptions.LocalCertificateSelectionCallback = (_, _, _, _, _) => cc;
        if (options.SkipCertificateCheck) handler.SslOptions.RemoteCertificateValidationCallback = (_, _, _, _) => true;
        else if (options.CaCertificate is { } ca) handler.SslOptions.RemoteCertificateValidationCallback = (_, cert, _, errors) => Pki.PinnedCaTls.Validates(ca, cert, errors);
        return new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(60) };
    }

    // ------------------------------------------------------------------ transport

    private (int Status, JsonElement Body) Send(HttpMethod method, string path, object? body, Action<HttpRequestMessage>? auth)
    {
        using var req = new HttpRequestMessage(method, new Uri(_base, path));
        if (body is not null) req.Content = new StringContent(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json");
        auth?.Invoke(req);
        using var resp = _http.Send(req);
        var text = resp.Content.ReadAsStringAsync().GetAwaiter().GetResult();
        JsonElement parsed = default;
        if (text.Length > 0)
        {
            try { parsed = JsonDocument.Parse(text).RootElement.Clone(); }
            catch (JsonException) when ((int)resp.StatusCode >= 300) { }
            catch (JsonException) { throw new KmsException(KmsErrorKind.Unavailable, null, $"The server answered {(int)resp.StatusCode} with a body that is not JSON."); }
        }
        return ((int)resp.StatusCode, parsed);
    }

    private static string? Text(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    /// <summary>A vSphere error body as the engine's exception.</summary>
    private static KmsException VsphereError(int status, JsonElement body)
    {
        var type = Text(body, "error_type") ?? "";
        string message = $"The server answered {status}", field = "";
        if (body.ValueKind == JsonValueKind.Object && body.TryGetProperty("messages", out var ms) && ms.ValueKind == JsonValueKind.Array && ms.GetArrayLength() > 0)
        {
            message = Text(ms[0], "default_message") ?? message;
            if (ms[0].TryGetProperty("args", out var a) && a.ValueKind == JsonValueKind.Array && a.GetArrayLength() > 0) field = a[0].GetString() ?? "";
        }
        var kind = type switch
        {
            "INVALID_ARGUMENT" => KmsErrorKind.InvalidArgument,
            "ALREADY_EXISTS" => KmsErrorKind.AlreadyExists,
            "NOT_FOUND" => KmsErrorKind.NotFound,
            "UNAUTHENTICATED" => KmsErrorKind.Unauthenticated,
            "UNAUTHORIZED" => KmsErrorKind.Unauthorized,
            _ => status switch { 429 => KmsErrorKind.Throttled, 400 => KmsErrorKind.InvalidArgument, 401 => KmsErrorKind.Unauthenticated, 403 => KmsErrorKind.Unauthorized, 404 => KmsErrorKind.NotFound, _ => KmsErrorKind.Unavailable },
        };
        return new KmsException(kind, field.Length == 0 ? null : field, message);
    }

    /// <summary>A CipherTrust error body as the engine's exception; <paramref name="field"/> names what a 404 or 409 is about.</summary>
    private static KmsException CckmError(int status, JsonElement body, string? field)
    {
        var message = Text(body, "message") ?? $"The server answered {status}";
        var kind = status switch
        {
            400 => KmsErrorKind.InvalidArgument,
            401 => KmsErrorKind.Unauthenticated,
            403 => KmsErrorKind.Unauthorized,
            404 => KmsErrorKind.NotFound,
            409 => KmsErrorKind.AlreadyExists,
            429 => KmsErrorKind.Throttled,
            _ => KmsErrorKind.Unavailable,
        };
        return new KmsException(kind, status is 404 or 409 ? field : null, message);
    }

    private void Session(HttpRequestMessage req)
    {
        if (_session is null)
        {
            using var login = new HttpRequestMessage(HttpMethod.Post, new Uri(_base, "/api/session"));
            login.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes(_user + ":" + _password)));
            using var resp = _http.Send(login);
            var text = resp.Content.ReadAsStringAsync().GetAwaiter().GetResult();
            JsonElement body = default;
            try { if (text.Length > 0) body = JsonDocument.Parse(text).RootElement.Clone(); } catch (JsonException) { }
            if ((int)resp.StatusCode != 201 || body.ValueKind != JsonValueKind.String) throw VsphereError((int)resp.StatusCode, body);
            _session = body.GetString();
        }
        req.Headers.Add("vmware-api-session-id", _session);
    }

    private void Bearer(HttpRequestMessage req)
    {
        if (_bearer is null)
        {
            var (status, body) = Send(HttpMethod.Post, "/api/v1/auth/tokens", new Dictionary<string, string> { ["grant_type"] = "password", ["username"] = _user, ["password"] = _password }, null);
            if (status != 200 || Text(body, "jwt") is not { } jwt) throw CckmError(status, body, null);
            _bearer = jwt;
        }
        req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _bearer);
    }

    private JsonElement Vsphere(HttpMethod method, string path, object? body, int expect)
    {
        var (status, answer) = Send(method, path, body, Session);
        if (status != expect) throw VsphereError(status, answer);
        return answer;
    }

    private JsonElement Cckm(HttpMethod method, string path, object? body, int expect, string? field)
    {
        var (status, answer) = Send(method, path, body, Bearer);
        if (status != expect) throw CckmError(status, answer, field);
        return answer;
    }

    private static string Segment(string s) => Uri.EscapeDataString(s);

    // ------------------------------------------------------------------ providers

    public void CreateProvider(string name, string keyId, byte[] kdk)
    {
        var text = Convert.ToBase64String(kdk);
        Vsphere(HttpMethod.Post, Providers, new { provider = name, native_spec = new { key_id = keyId, key_derivation_key = text } }, 204);
    }

    public IReadOnlyList<KmsProvider> ListProviders()
    {
        var list = Vsphere(HttpMethod.Get, Providers, null, 200);
        return list.EnumerateArray().Select(p => Text(p, "provider")).OfType<string>().Select(GetProvider).ToList();
    }

    public KmsProvider GetProvider(string name)
    {
        KmsEngine.CheckName(name, "provider");
        var p = Vsphere(HttpMethod.Get, Providers + "/" + Segment(name), null, 200);
        return new KmsProvider
        {
            Name = name, Health = Text(p, "health") ?? "", Type = Text(p, "type") ?? "NATIVE",
            KeyId = p.TryGetProperty("native_info", out var ni) ? Text(ni, "key_id") ?? "" : "",
        };
    }

    public void UpdateProvider(string name, string keyId)
    {
        KmsEngine.CheckName(name, "provider");
        Vsphere(HttpMethod.Patch, Providers + "/" + Segment(name), new { native_spec = new { key_id = keyId } }, 204);
    }

    public void RemoveProvider(string name)
    {
        KmsEngine.CheckName(name, "provider");
        Vsphere(HttpMethod.Delete, Providers + "/" + Segment(name), null, 204);
    }

    // ------------------------------------------------------------------ keys and versions

    private static DateTimeOffset Time(JsonElement e, string name) => KmsTime.Ms(
        DateTimeOffset.Parse(Text(e, name) ?? throw new KmsException(KmsErrorKind.Unavailable, null, $"The server's answer has no {name}."), CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal));

    /// <summary>Every resource of a CipherTrust list, page by page.</summary>
    private List<JsonElement> All(string path, string field)
    {
        var all = new List<JsonElement>();
        while (true)
        {
            var page = Cckm(HttpMethod.Get, $"{path}?skip={all.Count}&limit=1000", null, 200, field);
            var resources = page.GetProperty("resources");
            all.AddRange(resources.EnumerateArray());
            if (resources.GetArrayLength() == 0 || all.Count >= page.GetProperty("total").GetInt32()) return all;
        }
    }

    private KmsKey Key(JsonElement k)
    {
        var id = Text(k, "id")!;
        var oci = k.GetProperty("oci_params");
        var versions = All(Keys + "/" + Segment(id) + "/versions", "id");
        var primary = versions.FirstOrDefault(v => v.GetProperty("oci_key_version_params").GetProperty("is_primary").GetBoolean());
        var shape = oci.GetProperty("key_shape");
        return new KmsKey
        {
            Id = id, Name = Text(k, "name") ?? "", CompartmentId = Text(oci, "compartment_id") ?? "", VaultId = Text(oci, "vault_id") ?? "",
            OciKeyId = Text(oci, "key_id") ?? "", Algorithm = Text(shape, "algorithm") ?? "", Length = shape.GetProperty("length").GetInt32(),
            CurrentVersionId = primary.ValueKind == JsonValueKind.Object ? Text(primary, "id") : null, CurrentOciVersionId = Text(oci, "current_key_version"),
            VersionCount = versions.Count, Created = Time(k, "createdAt"), Updated = Time(k, "updatedAt"),
        };
    }

    /// <summary>A version of <paramref name="key"/>; the REST answer has no number, so it is the version's place in the key's list (ordered by number).</summary>
    private KmsKeyVersion Version(KmsKey key, JsonElement v, IReadOnlyList<JsonElement> all)
    {
        var id = Text(v, "id")!;
        var p = v.GetProperty("oci_key_version_params");
        int index = all.Select((x, i) => (x, i)).FirstOrDefault(t => Text(t.x, "id") == id).i;
        return new KmsKeyVersion
        {
            Id = id, KeyId = key.Id, KeyName = key.Name, Number = index + 1, OciVersionId = Text(p, "version_id") ?? "", OciKeyId = Text(p, "key_id") ?? "",
            CompartmentId = Text(p, "compartment_id") ?? "", VaultId = Text(p, "vault_id") ?? "", Origin = Text(p, "origin") ?? "",
            KeyMaterialOrigin = Text(v, "key_material_origin") ?? "", LifecycleState = Text(p, "lifecycle_state") ?? "",
            IsPrimary = p.GetProperty("is_primary").GetBoolean(), Created = Time(v, "createdAt"), Updated = Time(v, "updatedAt"),
        };
    }

    public KmsKey CreateKey(string name, string? compartmentId)
    {
        var body = new Dictionary<string, string> { ["name"] = name };
        if (compartmentId is not null) body["compartment_id"] = compartmentId;
        return Key(Cckm(HttpMethod.Post, Keys, body, 201, "name"));
    }

    public IReadOnlyList<KmsKey> ListKeys() => All(Keys, "id").Select(Key).ToList();

    public KmsKey GetKey(string idOrName) => Key(Cckm(HttpMethod.Get, Keys + "/" + Segment(idOrName), null, 200, "id"));

    public KmsKeyVersion AddVersion(string key, bool isNative, string? sourceKeyIdentifier, string? sourceKeyTier)
    {
        var k = GetKey(key);
        var body = new Dictionary<string, object?> { ["is_native"] = isNative };
        if (!isNative)
        {
            body["source_key_identifier"] = sourceKeyIdentifier;
            if (sourceKeyTier is not null) body["source_key_tier"] = sourceKeyTier;
        }
        var added = Cckm(HttpMethod.Post, Keys + "/" + Segment(k.Id) + "/versions", body, 201, "id");
        return Version(k, added, All(Keys + "/" + Segment(k.Id) + "/versions", "id"));
    }

    public IReadOnlyList<KmsKeyVersion> ListVersions(string key)
    {
        var k = GetKey(key);
        var all = All(Keys + "/" + Segment(k.Id) + "/versions", "id");
        return all.Select(v => Version(k, v, all)).ToList();
    }

    public KmsKeyVersion GetVersion(string key, string version)
    {
        var k = GetKey(key);
        var v = Cckm(HttpMethod.Get, Keys + "/" + Segment(k.Id) + "/versions/" + Segment(version), null, 200, "version");
        return Version(k, v, All(Keys + "/" + Segment(k.Id) + "/versions", "id"));
    }

    public void Dispose()
    {
        if (_session is { } s)
        {
            try
            {
                using var req = new HttpRequestMessage(HttpMethod.Delete, new Uri(_base, "/api/session"));
                req.Headers.Add("vmware-api-session-id", s);
                using var _ = _http.Send(req);
            }
            catch (HttpRequestException) { }
            catch (TaskCanceledException) { }
        }
        _http.Dispose();
    }
}
