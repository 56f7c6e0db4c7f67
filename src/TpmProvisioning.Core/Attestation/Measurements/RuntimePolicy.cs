using System.Buffers;
using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Attestation.Measurements;

/// <summary>The outcome of checking one measured file (or buffer) against a runtime policy.</summary>
public enum RuntimePolicyDecision
{
    /// <summary>The path is in the policy with this digest.</summary>
    Allowed,
    /// <summary>The path matches an exclude pattern.</summary>
    Excluded,
    /// <summary>The path is not in the policy.</summary>
    NotInPolicy,
    /// <summary>The path is in the policy, with other digests.</summary>
    DigestNotAllowed,
}

/// <summary>Which digest map of the policy a lookup uses (Keylime: <c>digests</c>, <c>keyrings</c>, <c>ima-buf</c>).</summary>
public enum RuntimePolicySection
{
    /// <summary>File digests by path.</summary>
    Digests,
    /// <summary>Key digests by keyring name (ima-buf entries that carry a key).</summary>
    Keyrings,
    /// <summary>Buffer digests by ima-buf name.</summary>
    ImaBuf,
}

/// <summary>
/// A Keylime 7 runtime policy (format version 1): allowed digests per path, exclude regexes, keyring and ima-buf digests,
/// IMA settings and verification keys. See docs/attestation-policies.md. Parse once and reuse: lookups are dictionary
/// reads and the exclude patterns are compiled once (and shared between policies with the same patterns).
/// </summary>
public sealed class RuntimePolicy
{
    /// <summary>The runtime policy format version this engine reads and writes (Keylime's RUNTIME_POLICY_CURRENT_VERSION).</summary>
    public const int CurrentVersion = 1;
    /// <summary>Keylime's generator value for a policy made from a list or a directory (CompatibleAllowList).</summary>
    public const int GeneratorCompatibleAllowList = 2;
    private static readonly TimeSpan MatchTimeout = TimeSpan.FromMilliseconds(250);
    private static readonly ConcurrentDictionary<string, Regex> RegexCache = new(StringComparer.Ordinal);

    private readonly Dictionary<string, List<string>> _digests = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<string>> _keyrings = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<string>> _imaBuf = new(StringComparer.Ordinal);
    private readonly List<string> _excludes = new();
    private readonly List<string> _ignoredKeyrings = new();
    private Regex? _excludeRegex;

    /// <summary>An empty policy (Keylime's EMPTY_RUNTIME_POLICY shape).</summary>
    public RuntimePolicy() { }

    /// <summary>meta.version.</summary>
    public int Version { get; private set; } = CurrentVersion;
    /// <summary>meta.generator (null when absent).</summary>
    public int? Generator { get; set; }
    /// <summary>meta.timestamp (null when absent).</summary>
    public string? Timestamp { get; set; }
    /// <summary>release.</summary>
    public long Release { get; set; }
    /// <summary>ima.log_hash_alg: the algorithm of the list's template hashes (informational here: the parser infers it from each hash's length).</summary>
    public string LogHashAlgorithm { get; set; } = "sha1";
    /// <summary>ima.dm_policy, kept as JSON (device-mapper validation is not implemented; a non-null value is carried, not enforced).</summary>
    public JsonNode? DmPolicy { get; set; }
    /// <summary>verification-keys: a Keylime keyring string with ima-sig verification keys ("" when none).</summary>
    public string VerificationKeys { get; set; } = "";

    /// <summary>Allowed digests (lower-case hex) by path.</summary>
    public IReadOnlyDictionary<string, List<string>> Digests => _digests;
    /// <summary>Allowed key digests by keyring name.</summary>
    public IReadOnlyDictionary<string, List<string>> Keyrings => _keyrings;
    /// <summary>Allowed buffer digests by ima-buf name.</summary>
    public IReadOnlyDictionary<string, List<string>> ImaBuf => _imaBuf;
    /// <summary>Exclude regexes (Python syntax as Keylime stores them; matched at the start of the path).</summary>
    public IReadOnlyList<string> Excludes => _excludes;
    /// <summary>ima.ignored_keyrings.</summary>
    public IReadOnlyList<string> IgnoredKeyrings => _ignoredKeyrings;

    /// <summary>Adds an allowed digest (hex) for a path; throws <see cref="FormatException"/> for bad hex.</summary>
    public void AddDigest(string path, string digestHex, RuntimePolicySection section = RuntimePolicySection.Digests)
    {
        ArgumentNullException.ThrowIfNull(path);
        var hex = MeasurementHex.Normalize(digestHex) ?? throw new FormatException($"Digest for '{path}' is not hex: '{digestHex}'.");
        var map = Map(section);
        if (!map.TryGetValue(path, out var list)) map[path] = list = new List<string>(1);
        if (!list.Contains(hex)) list.Add(hex);
    }

    /// <summary>Adds exclude regexes; throws <see cref="FormatException"/> naming the first that does not compile.</summary>
    public void AddExcludes(IEnumerable<string>? excludes)
    {
        if (excludes is null) return;
        foreach (var e in excludes)
        {
            if (e is null) throw new FormatException("excludes: null entry.");
            CompileOne(e);
            _excludes.Add(e);
        }
        _excludeRegex = null;
    }

    /// <summary>True when the path matches an exclude pattern (a pattern that times out does not exclude).</summary>
    public bool IsExcluded(string path)
    {
        if (_excludes.Count == 0) return false;
        var regex = _excludeRegex ??= Combined(_excludes);
        try { return regex.IsMatch(path); }
        catch (RegexMatchTimeoutException) { return false; }
    }

    /// <summary>Keylime's allow-list check: excluded paths pass; otherwise the path must be listed with this digest.</summary>
    public RuntimePolicyDecision Check(string path, ReadOnlySpan<byte> digest, RuntimePolicySection section = RuntimePolicySection.Digests)
    {
        if (IsExcluded(path)) return RuntimePolicyDecision.Excluded;
        if (!Map(section).TryGetValue(path, out var list)) return RuntimePolicyDecision.NotInPolicy;
        Span<char> hex = digest.Length <= 128 ? stackalloc char[digest.Length * 2] : new char[digest.Length * 2];
        Convert.TryToHexStringLower(digest, hex, out _);
        foreach (var allowed in list)
            if (hex.SequenceEqual(allowed)) return RuntimePolicyDecision.Allowed;
        return RuntimePolicyDecision.DigestNotAllowed;
    }

    private Dictionary<string, List<string>> Map(RuntimePolicySection section) => section switch
    {
        RuntimePolicySection.Keyrings => _keyrings,
        RuntimePolicySection.ImaBuf => _imaBuf,
        _ => _digests,
    };

    /// <summary>
    /// Parses a Keylime runtime policy. Throws <see cref="FormatException"/> with the offending field for invalid JSON, a
    /// missing or unsupported meta.version, wrong types, a digest that is not hex, or an exclude that does not compile.
    /// Unknown top-level fields are ignored.
    /// </summary>
    public static RuntimePolicy Parse(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonNode? root;
        try { root = JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { MaxDepth = 64, AllowDuplicateProperties = false }); }
        catch (JsonException e) { throw new FormatException($"Runtime policy is not valid JSON: {e.Message}"); }
        if (root is not JsonObject obj) throw new FormatException("Runtime policy: the top level is not a JSON object.");
        var p = new RuntimePolicy();
        try
        {
            if (obj["meta"] is not JsonObject meta) throw new FormatException("Runtime policy: 'meta' object missing.");
            p.Version = meta["version"] is JsonValue vv && vv.TryGetValue<int>(out var ver)
                ? ver : throw new FormatException("Runtime policy: meta.version missing or not an integer.");
            if (p.Version != CurrentVersion) throw new FormatException($"Runtime policy: meta.version {p.Version} is not supported (expected {CurrentVersion}).");
            if (meta["generator"] is JsonValue gv) p.Generator = gv.TryGetValue<int>(out var g) ? g : throw new FormatException("Runtime policy: meta.generator is not an integer.");
            if (meta["timestamp"] is JsonValue tv) p.Timestamp = tv.TryGetValue<string>(out var ts) ? ts : throw new FormatException("Runtime policy: meta.timestamp is not a string.");
            if (obj["release"] is JsonValue rv) p.Release = rv.TryGetValue<long>(out var rel) ? rel : throw new FormatException("Runtime policy: 'release' is not an integer.");
            ReadMap(obj, "digests", p._digests);
            ReadMap(obj, "keyrings", p._keyrings);
            ReadMap(obj, "ima-buf", p._imaBuf);
            p.AddExcludes(ReadStrings(obj["excludes"], "excludes"));
            if (obj["ima"] is JsonNode imaNode)
            {
                if (imaNode is not JsonObject ima) throw new FormatException("Runtime policy: 'ima' is not an object.");
                p._ignoredKeyrings.AddRange(ReadStrings(ima["ignored_keyrings"], "ima.ignored_keyrings"));
                if (ima["log_hash_alg"] is JsonNode alg)
                {
                    var name = alg is JsonValue av && av.TryGetValue<string>(out var s) ? s : throw new FormatException("Runtime policy: ima.log_hash_alg is not a string.");
                    if (name is not ("sha1" or "sha256" or "sha384" or "sha512")) throw new FormatException($"Runtime policy: ima.log_hash_alg '{name}' is not sha1, sha256, sha384 or sha512.");
                    p.LogHashAlgorithm = name;
                }
                p.DmPolicy = ima["dm_policy"]?.DeepClone();
            }
            if (obj["verification-keys"] is JsonNode vk)
            {
                p.VerificationKeys = vk is JsonValue vkv && vkv.TryGetValue<string>(out var vks) ? vks : throw new FormatException("Runtime policy: 'verification-keys' is not a string.");
                if (p.VerificationKeys.Length > 0) _ = ImaSignatureKeys.FromKeylimeKeyring(p.VerificationKeys);
            }
        }
        catch (InvalidOperationException e) { throw new FormatException($"Runtime policy: wrong JSON type: {e.Message}"); }
        return p;
    }

    private static void ReadMap(JsonObject obj, string name, Dictionary<string, List<string>> into)
    {
        var node = obj[name];
        if (node is null) return;
        if (node is not JsonObject map) throw new FormatException($"Runtime policy: '{name}' is not an object of path -> [hex digests].");
        foreach (var (path, value) in map)
        {
            if (value is not JsonArray arr) throw new FormatException($"Runtime policy: {name}['{ImaMeasurementList.Clip(path)}'] is not an array.");
            var list = new List<string>(arr.Count);
            foreach (var item in arr)
            {
                var text = item is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
                var hex = MeasurementHex.Normalize(text)
                    ?? throw new FormatException($"Runtime policy: {name}['{ImaMeasurementList.Clip(path)}'] has a digest that is not hex: '{ImaMeasurementList.Clip(text ?? "null")}'.");
                if (!list.Contains(hex)) list.Add(hex);
            }
            into[path] = list;
        }
    }

    private static List<string> ReadStrings(JsonNode? node, string name)
    {
        var result = new List<string>();
        if (node is null) return result;
        if (node is not JsonArray arr) throw new FormatException($"Runtime policy: '{name}' is not an array of strings.");
        foreach (var item in arr)
            result.Add(item is JsonValue v && v.TryGetValue<string>(out var s) ? s : throw new FormatException($"Runtime policy: '{name}' has an entry that is not a string."));
        return result;
    }

    /// <summary>The policy as Keylime runtime policy JSON (compact, keys in Keylime's order).</summary>
    public string ToJson()
    {
        var buffer = new ArrayBufferWriter<byte>(4096 + _digests.Count * 128);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteStartObject("meta");
            w.WriteNumber("version", Version);
            if (Generator is int g) w.WriteNumber("generator", g);
            if (Timestamp is not null) w.WriteString("timestamp", Timestamp);
            w.WriteEndObject();
            w.WriteNumber("release", Release);
            WriteMap(w, "digests", _digests);
            w.WriteStartArray("excludes");
            foreach (var e in _excludes) w.WriteStringValue(e);
            w.WriteEndArray();
            WriteMap(w, "keyrings", _keyrings);
            w.WriteStartObject("ima");
            w.WriteStartArray("ignored_keyrings");
            foreach (var k in _ignoredKeyrings) w.WriteStringValue(k);
            w.WriteEndArray();
            w.WriteString("log_hash_alg", LogHashAlgorithm);
            w.WritePropertyName("dm_policy");
            if (DmPolicy is null) w.WriteNullValue(); else DmPolicy.WriteTo(w);
            w.WriteEndObject();
            WriteMap(w, "ima-buf", _imaBuf);
            w.WriteString("verification-keys", VerificationKeys);
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    private static void WriteMap(Utf8JsonWriter w, string name, Dictionary<string, List<string>> map)
    {
        w.WriteStartObject(name);
        foreach (var (path, list) in map)
        {
            w.WriteStartArray(path);
            foreach (var d in list) w.WriteStringValue(d);
            w.WriteEndArray();
        }
        w.WriteEndObject();
    }

    /// <summary>
    /// A policy allowing exactly what an IMA list measured (boot_aggregate included): file digests of ima/ima-ng/ima-sig
    /// entries under <c>digests</c>, ima-buf digests under <c>ima-buf</c>; violation entries and excluded paths are left out.
    /// Throws <see cref="FormatException"/> listing the lines that do not parse.
    /// </summary>
    public static RuntimePolicy FromImaList(string imaText, IEnumerable<string>? excludes = null)
    {
        var parsed = ImaMeasurementList.Parse(imaText ?? throw new ArgumentNullException(nameof(imaText)));
        if (!parsed.Success)
            throw new FormatException("IMA list does not parse: " + string.Join("; ", parsed.Errors.Take(5)) +
                (parsed.Errors.Count > 5 ? $" (and {parsed.Errors.Count - 5} more)" : ""));
        var p = NewGenerated();
        p.AddExcludes(excludes);
        foreach (var e in parsed.Entries)
        {
            if (e.IsViolation || p.IsExcluded(e.Path)) continue;
            p.AddDigestBytes(e.Path, e.Digest, e.Template == ImaTemplate.ImaBuf ? RuntimePolicySection.ImaBuf : RuntimePolicySection.Digests);
        }
        return p;
    }

    /// <summary>
    /// A policy with the digest of every regular file under <paramref name="root"/> (symbolic links and special files are
    /// skipped; directories reached through links are not followed). A file's policy path is <paramref name="pathPrefix"/>
    /// (default "/") joined with its path relative to the root, with '/' separators, so an image mounted at /mnt/img gives
    /// /usr/bin/... paths. Excluded paths are not hashed. Files that cannot be read are skipped and named in
    /// <paramref name="skipped"/> when given. <paramref name="hashAlg"/> is a kernel hash name (sha1, sha256, sha384, sha512).
    /// </summary>
    public static RuntimePolicy FromDirectory(string root, IEnumerable<string>? excludes = null, string hashAlg = "sha256",
        string? pathPrefix = null, ICollection<string>? skipped = null)
    {
        ArgumentNullException.ThrowIfNull(root);
        var alg = ImaHashAlgorithms.ToTpm(hashAlg) ?? throw new ArgumentException($"Hash algorithm '{hashAlg}' is not sha1, sha256, sha384 or sha512.", nameof(hashAlg));
        var dir = new DirectoryInfo(root);
        if (!dir.Exists) throw new DirectoryNotFoundException($"Directory '{root}' does not exist.");
        var prefix = (pathPrefix ?? "/").TrimEnd('/');
        var p = NewGenerated();
        p.AddExcludes(excludes);
        var options = new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.ReparsePoint, IgnoreInaccessible = true, ReturnSpecialDirectories = false };
        var rootFull = Path.GetFullPath(dir.FullName);
        var work = new List<(string Full, string PolicyPath, long Length)>();
        foreach (var file in dir.EnumerateFiles("*", options))
        {
            var rel = Path.GetRelativePath(rootFull, file.FullName).Replace(Path.DirectorySeparatorChar, '/');
            var policyPath = prefix + "/" + rel;
            if (p.IsExcluded(policyPath)) continue;
            work.Add((file.FullName, policyPath, file.Length));
        }
        var results = new (string PolicyPath, byte[]? Digest)[work.Count];
        Parallel.For(0, work.Count, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, Environment.ProcessorCount) }, i =>
        {
            if (work[i].Length == 0)
            {
                // Never opened: FIFOs and device nodes report size 0 and would block or never end; an empty file hashes the same.
                results[i] = (work[i].PolicyPath, TpmHash.Hash(alg, ReadOnlySpan<byte>.Empty));
                return;
            }
            try
            {
                using var stream = new FileStream(work[i].Full, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 16, FileOptions.SequentialScan);
                using var hash = TpmHash.CreateIncremental(alg);
                var buf = ArrayPool<byte>.Shared.Rent(1 << 16);
                try
                {
                    int n;
                    while ((n = stream.Read(buf, 0, buf.Length)) > 0) hash.AppendData(buf, 0, n);
                }
                finally { ArrayPool<byte>.Shared.Return(buf); }
                results[i] = (work[i].PolicyPath, hash.GetHashAndReset());
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                results[i] = (work[i].PolicyPath, null);
            }
        });
        foreach (var (path, digest) in results.OrderBy(r => r.PolicyPath, StringComparer.Ordinal))
        {
            if (digest is null) { skipped?.Add(path); continue; }
            p.AddDigestBytes(path, digest, RuntimePolicySection.Digests);
        }
        return p;
    }

    private static RuntimePolicy NewGenerated() => new()
    {
        Generator = GeneratorCompatibleAllowList,
        Timestamp = DateTimeOffset.UtcNow.ToString("yyyy-MM-dd HH:mm:ss.ffffff", CultureInfo.InvariantCulture),
    };

    private void AddDigestBytes(string path, byte[] digest, RuntimePolicySection section)
    {
        var map = Map(section);
        var hex = MeasurementHex.ToHex(digest);
        if (!map.TryGetValue(path, out var list)) map[path] = list = new List<string>(1);
        if (!list.Contains(hex)) list.Add(hex);
    }

    private static void CompileOne(string pattern)
    {
        try { _ = new Regex("\\A(?:" + Translate(pattern) + ")", RegexOptions.CultureInvariant, MatchTimeout); }
        catch (ArgumentException e) { throw new FormatException($"Runtime policy: exclude '{ImaMeasurementList.Clip(pattern)}' is not a valid regular expression: {e.Message}"); }
    }

    private static Regex Combined(List<string> excludes) =>
        Compile("\\A(?:(?:" + string.Join(")|(?:", excludes.Select(Translate)) + "))", string.Join(", ", excludes));

    private static Regex Compile(string pattern, string shown)
    {
        if (RegexCache.TryGetValue(pattern, out var cached)) return cached;
        Regex regex;
        try { regex = new Regex(pattern, RegexOptions.CultureInvariant | RegexOptions.Compiled, MatchTimeout); }
        catch (ArgumentException e) { throw new FormatException($"Runtime policy: exclude '{ImaMeasurementList.Clip(shown)}' is not a valid regular expression: {e.Message}"); }
        if (RegexCache.Count > 1024) RegexCache.Clear();
        RegexCache[pattern] = regex;
        return regex;
    }

    /// <summary>Python regex syntax that .NET spells differently: named groups and named back-references.</summary>
    private static string Translate(string pattern) =>
        pattern.Contains("(?P", StringComparison.Ordinal)
            ? Regex.Replace(pattern.Replace("(?P<", "(?<", StringComparison.Ordinal), @"\(\?P=(\w+)\)", @"\k<$1>")
            : pattern;
}
