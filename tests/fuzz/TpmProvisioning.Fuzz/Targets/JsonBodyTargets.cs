using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TpmProvisioning.Attestation;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Kms;
using TpmProvisioning.Pki;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tests.Software;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Fuzz;

/// <summary>Runs an engine call to completion on the fuzzing thread.</summary>
internal static class Sync
{
    public static T Run<T>(Func<Task<T>> f) => Task.Run(f).GetAwaiter().GetResult();
    public static void Run(Func<Task> f) => Task.Run(f).GetAwaiter().GetResult();
}

/// <summary>
/// Spec 000's provisioning request exactly as <c>ProvisioningRole</c> reads it (System.Text.Json with the engine's source-generated
/// context) and then <see cref="ProvisioningService.ProvisionAsync"/> over a real SQLite store and TPM CA, trusting the manufacturer
/// that issued the seeds' EK certificates. A body whose <c>api_key</c> is <c>@apikey</c> gets the harness's valid key, so inputs
/// reach the field checks. Bad input is a 4xx outcome; a 500 outcome or an exception is a crash.
/// </summary>
public sealed class ProvisioningRequestTarget : FuzzTarget
{
    private const string KeyPlaceholder = "@apikey";
    private static readonly Lazy<(ProvisioningService Service, string Key)> Setup = new(() => Sync.Run(async () =>
    {
        var store = await SqliteStore.OpenAsync(Scratch.File("provisioning.db"));
        var ca = TpmCa.Create(Scratch.File("tpm-ca"));
        var root = X509CertificateLoader.LoadCertificateFromFile(FuzzData.File("provisioning-ek-root.der"));
        var issuer = X509CertificateLoader.LoadCertificateFromFile(FuzzData.File("provisioning-ek-issuer.der"));
        var service = new ProvisioningService(store, ca, new EkTrustStore([root], [issuer]));
        var key = await new ApiKeyManager(store).CreateAsync("fuzz", ["Contoso"], 0);
        return (service, key.Key);
    }));

    public override string Name => "provisioning-request";
    public override string Description => "POST /api/tpm/tpm/provision body: JSON binding, then ProvisioningService.ProvisionAsync";

    public override void Run(byte[] data)
    {
        var (service, key) = Setup.Value;
        ProvisioningRequest? request;
        try { request = JsonSerializer.Deserialize(data, ProvisioningJsonContext.Default.ProvisioningRequest); }
        catch (JsonException) { return; }
        if (request is not null && request.ApiKey == KeyPlaceholder) request.ApiKey = key;
        var outcome = Sync.Run(() => service.ProvisionAsync(request));
        Verbose.Say($"provisioning: {outcome.Status} {outcome.Error}");
        if (outcome.Status >= 500) throw new InvalidOperationException($"Provisioning answered {outcome.Status}: {outcome.Error}", outcome.Fault);
    }

    public override IEnumerable<(string, byte[])> Seeds()
    {
        // A software manufacturer and device; the manufacturer's certificates go to data/ so the harness trusts them.
        using var maker = new TestManufacturer("Fuzz TPM Manufacturer");
        File.WriteAllBytes(Path.Combine(SeedOutput.DataDirectory, "provisioning-ek-root.der"), maker.Root.RawData);
        File.WriteAllBytes(Path.Combine(SeedOutput.DataDirectory, "provisioning-ek-issuer.der"), maker.Issuer.RawData);
        using var rsaAk = new SoftwareDevice(maker, new DeviceIdentity("sensor-01", "SN-0001", "Contoso", "1.0"));
        using var eccAk = new SoftwareDevice(maker, new DeviceIdentity("sensor-02", "SN-0002", "Contoso", "1.0"), eccAk: true);
        yield return ("rsa-ak-tpm2b", Json(rsaAk.Request(KeyPlaceholder)));
        yield return ("ecc-ak-spki", Json(eccAk.Request(KeyPlaceholder, akAsSpki: true)));
        yield return ("no-key", """{"device":{"name":"x","serial":"1","vendor":"Contoso","version":"1"}}"""u8.ToArray());

        static byte[] Json(ProvisioningRequest r) => JsonSerializer.SerializeToUtf8Bytes(r, ProvisioningJsonContext.Default.ProvisioningRequest);
    }
}

/// <summary>
/// The registrar's <c>POST /v2.1/agents/{id}</c> body through <see cref="RegistrarService.RegisterAsync(string, ReadOnlyMemory{byte}, AttestationCallInfo?, CancellationToken)"/>
/// over a real SQLite store (EK chain checks off, so EK and AK structures are reached). Every outcome is a status; an exception is a crash.
/// </summary>
public sealed class RegistrarRegistrationTarget : FuzzTarget
{
    private static readonly Lazy<RegistrarService> Service = new(() => Sync.Run(async () =>
        new RegistrarService(await SqliteStore.OpenAsync(Scratch.File("registrar.db")), (EkTrustStore?)null, new RegistrarSettings { VerifyEkCertificateChain = false })));

    public override string Name => "registrar-registration";
    public override string Description => "POST /v2.1/agents/{id} body: AgentRegistration.Parse and RegistrarService.RegisterAsync";

    public override void Run(byte[] data)
    {
        var svc = Service.Value;
        var id = Guid.NewGuid().ToString();
        var outcome = Sync.Run(() => svc.RegisterAsync(id, data));
        Verbose.Say($"registrar: {outcome.Status} {outcome.Message}");
        if (outcome.Status >= 500) throw new InvalidOperationException($"Registrar answered {outcome.Status}: {outcome.Message}");
        if (outcome.Status == 200) Sync.Run(() => svc.DeleteAsync(id));
    }

    public override IEnumerable<(string, byte[])> Seeds()
    {
        yield return ("keylime-seed", File.ReadAllBytes(SeedOutput.RepoFile("seeds/keylime/registrar-post-agent.request.json")));
        yield return ("swtpm-rsa", Encoding.UTF8.GetBytes(new JsonObject
        {
            ["ek_tpm"] = SwtpmQuoteFixtures.EkPub, ["aik_tpm"] = SwtpmQuoteFixtures.AkPub, ["ip"] = "127.0.0.1", ["port"] = "9002", ["mtls_cert"] = "disabled",
        }.ToJsonString()));
        yield return ("swtpm-ecc-ek", Encoding.UTF8.GetBytes(new JsonObject { ["ek_tpm"] = SwtpmQuoteFixtures.EkeccPub, ["aik_tpm"] = SwtpmQuoteFixtures.AkPub, ["port"] = 9002 }.ToJsonString()));
    }
}

/// <summary>
/// The verifier's add-agent body (<c>POST /v2.1/agents/{id}</c>): <see cref="VerifierAgentRequest.Parse"/>, every measurement check's
/// <c>Validate</c> (as <see cref="VerifierService.AddAsync"/> runs them), and for an accepted body what a watch prepares from it
/// (the PCR policy, the quote mask and the AK verifier), which must not fail once the body was accepted.
/// </summary>
public sealed class VerifierAgentTarget : FuzzTarget
{
    private static readonly IReadOnlyList<IMeasurementCheck> Checks = MeasurementChecks.Default;

    public override string Name => "verifier-agent";
    public override string Description => "POST /v2.1/agents/{id} (verifier) body: parse, checks' Validate, watch preparation";

    public override void Run(byte[] data)
    {
        var config = VerifierAgentRequest.Parse(data, requireMtls: false, out var error);
        if (config is null)
        {
            Verbose.Say($"verifier: 400 {error}");
            if (string.IsNullOrWhiteSpace(error)) throw new InvalidOperationException("Refused without a reason.");
            return;
        }
        foreach (var c in Checks.OfType<IConfigValidator>()) if (c.Validate(config) is { } why) { Verbose.Say($"verifier: 400 {why}"); return; }
        Verbose.Say("verifier: accepted");
        var policy = TpmPolicy.TryParse(config.TpmPolicy, out _) ?? throw new InvalidOperationException("Accepted tpm_policy does not parse again.");
        _ = QuoteJudge.QuoteMask(config, policy, Checks);
        using var ak = PreparedAk.FromTpm2B(Convert.FromBase64String(config.AkTpm));
    }

    public override IEnumerable<(string, byte[])> Seeds()
    {
        yield return ("keylime-seed", File.ReadAllBytes(SeedOutput.RepoFile("seeds/keylime/verifier-post-agent.request.json")));
        var policy = Convert.ToBase64String(File.ReadAllBytes(FuzzData.File("ima-runtime-policy.json")));
        yield return ("swtpm-ak-policies", Encoding.UTF8.GetBytes(new JsonObject
        {
            ["cloudagent_ip"] = "127.0.0.1", ["cloudagent_port"] = 9002, ["ak_tpm"] = SwtpmQuoteFixtures.AkPub, ["mtls_cert"] = "disabled",
            ["tpm_policy"] = """{"mask":"0x400","0":["0000000000000000000000000000000000000000000000000000000000000000"]}""",
            ["runtime_policy"] = policy,
            ["mb_refstate"] = """{"meta":{"version":1},"bank":"sha256","pcrs":{"0":["00"]}}""",
            ["ima_sign_verification_keys"] = "",
            ["accept_tpm_hash_algs"] = new JsonArray("sha256"), ["accept_tpm_signing_algs"] = new JsonArray("rsassa"),
        }.ToJsonString()));
    }
}

/// <summary>
/// The KMS bodies' engine calls. The first byte picks the route: 0 a revocation notice as received
/// (<see cref="KeyReleaseService.VerifyRevocation"/>), 1 a revocation message signed here so its inner JSON is reached, 2 a vSphere
/// provider (<c>provider</c>, <c>native_spec.key_id</c>, <c>native_spec.key_derivation_key</c>), 3 a CCKM key (<c>name</c>,
/// <c>compartment_id</c>), 4 a CCKM key version (<c>key</c>, <c>is_native</c>, <c>source_key_identifier</c>, <c>source_key_tier</c>).
/// Bad input is a <see cref="KmsException"/>; anything else is a crash.
/// </summary>
public sealed class KmsBodiesTarget : FuzzTarget
{
    private static readonly Lazy<(KmsEngine Engine, RSA Signer, string PublicPem)> Setup = new(() => Sync.Run(async () =>
    {
        var store = await SqliteStore.OpenAsync(Scratch.File("kms.db"));
        var settings = new KmsSettings { MasterKey = MasterKeyKind.InsecureFile };
        var (engine, _) = await KmsEngineFactory.OpenAsync(store, Scratch.File("data"), settings);
        var caller = new KmsCaller("fuzz");
        await engine.CreateKeyAsync("key-1", null, caller);
        var rsa = RSA.Create(2048);
        return (engine, rsa, rsa.ExportSubjectPublicKeyInfoPem());
    }));

    private static readonly KmsCaller Caller = new("fuzz");

    public override string Name => "kms-bodies";
    public override string Description => "KMS bodies: revocation notice, provider, CCKM key and key version (first byte picks)";

    public override void Run(byte[] data)
    {
        if (data.Length == 0) return;
        var (engine, signer, pem) = Setup.Value;
        var body = data[1..];
        try
        {
            switch (data[0] % 5)
            {
                case 0:
                    _ = KeyReleaseService.VerifyRevocation(body, pem);
                    break;
                case 1:
                {
                    var msg = Encoding.UTF8.GetString(body);
                    var sig = signer.SignData(Encoding.UTF8.GetBytes(msg), HashAlgorithmName.SHA256, RSASignaturePadding.Pss);
                    var notice = new JsonObject { ["msg"] = msg, ["signature"] = Convert.ToBase64String(sig) }.ToJsonString();
                    _ = KeyReleaseService.VerifyRevocation(Encoding.UTF8.GetBytes(notice), pem);
                    break;
                }
                default:
                    if (Object(body) is not { } o) return;
                    string? err = null;
                    switch (data[0] % 5)
                    {
                        case 2:
                        {
                            var name = Str(o, "provider", ref err);
                            var spec = o.TryGetProperty("native_spec", out var s) && s.ValueKind == JsonValueKind.Object ? s : default;
                            var keyId = spec.ValueKind == JsonValueKind.Object ? Str(spec, "key_id", ref err) : null;
                            var kdkText = spec.ValueKind == JsonValueKind.Object ? Str(spec, "key_derivation_key", ref err) : null;
                            if (err is not null) return;
                            KmsEngine.CheckName(name, "provider");
                            var kdk = KmsEngine.DecodeKeyDerivationKey(kdkText);
                            Sync.Run(() => engine.CreateProviderAsync(name, keyId, kdk, Caller));
                            _ = Sync.Run(() => engine.DeriveDataKeyAsync(name!, keyId));
                            Sync.Run(() => engine.DeleteProviderAsync(name!, Caller));
                            break;
                        }
                        case 3:
                        {
                            var name = Str(o, "name", ref err);
                            var compartment = Str(o, "compartment_id", ref err);
                            if (err is not null) return;
                            var key = Sync.Run(() => engine.CreateKeyAsync(name, compartment, Caller));
                            _ = Sync.Run(() => engine.GetKeyAsync(key.Id));
                            break;
                        }
                        default:
                        {
                            var keyName = Str(o, "key", ref err) ?? "key-1";
                            bool isNative = o.TryGetProperty("is_native", out var n) && n.ValueKind == JsonValueKind.True;
                            var sourceId = Str(o, "source_key_identifier", ref err);
                            var tier = Str(o, "source_key_tier", ref err);
                            if (err is not null) return;
                            var v = Sync.Run(() => engine.AddVersionAsync(keyName, isNative, sourceId, tier, Caller));
                            _ = Sync.Run(() => engine.GetVersionAsync(keyName, v.Number.ToString(System.Globalization.CultureInfo.InvariantCulture)));
                            break;
                        }
                    }
                    break;
            }
        }
        catch (KmsException e) { Verbose.Say($"kms: {e.Kind} {e.Message}"); }
    }

    /// <summary>The KMS role's body rule: valid UTF-8, JSON, an object.</summary>
    private static JsonElement? Object(byte[] body)
    {
        if (body.Length == 0 || !System.Text.Unicode.Utf8.IsValid(body)) return null;
        try
        {
            using var doc = JsonDocument.Parse(body);
            return doc.RootElement.ValueKind == JsonValueKind.Object ? doc.RootElement.Clone() : null;
        }
        catch (JsonException) { return null; }
    }

    private static string? Str(JsonElement obj, string name, ref string? error)
    {
        if (!obj.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.String) return v.GetString();
        error ??= $"{name}: must be a string";
        return null;
    }

    public override IEnumerable<(string, byte[])> Seeds()
    {
        yield return ("revocation-outer", [0, .. """{"msg":"{\"agent_id\":\"d432fbb3-d2f1-4a97-9ef7-75bd81c00000\",\"type\":\"revocation\"}","signature":"AAAA"}"""u8]);
        yield return ("revocation-msg", [1, .. """{"agent_id":"d432fbb3-d2f1-4a97-9ef7-75bd81c00000","type":"revocation","event_id":"pcr_mismatch","time":"2024-01-01"}"""u8]);
        yield return ("provider", [2, .. File.ReadAllBytes(SeedOutput.RepoFile("seeds/kms/vsphere-provider-create.request.json"))]);
        yield return ("provider-valid", [2, .. Encoding.UTF8.GetBytes(new JsonObject
        {
            ["provider"] = "prov-1", ["native_spec"] = new JsonObject { ["key_id"] = "kid-1", ["key_derivation_key"] = Convert.ToBase64String(new byte[32]) },
        }.ToJsonString())]);
        yield return ("key", [3, .. """{"name":"disk-key","compartment_id":"ocid1.compartment.oc1..x"}"""u8]);
        yield return ("version", [4, .. File.ReadAllBytes(SeedOutput.RepoFile("seeds/kms/cckm-key-version-create.request.json"))]);
    }
}

/// <summary>Where <c>--seeds</c> reads repository files and writes harness data.</summary>
internal static class SeedOutput
{
    public static string RepoRoot
    {
        get
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "TpmProvisioning.sln"))) return d.FullName;
            throw new DirectoryNotFoundException("Run --seeds from a build inside the repository.");
        }
    }

    public static string RepoFile(string relative) => Path.Combine(RepoRoot, relative);
    public static string DataDirectory => Path.Combine(RepoRoot, "tests", "fuzz", "data");
}
