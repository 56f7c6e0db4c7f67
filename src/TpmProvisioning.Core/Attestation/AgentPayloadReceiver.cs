using System.Diagnostics;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;

namespace TpmProvisioning.Attestation;

/// <summary><c>GET /v2.1/keys/verify</c>'s results.</summary>
public sealed record KeylimeKeyHmac
{
    [JsonPropertyName("hmac")] public required string Hmac { get; init; }
}

/// <summary>What the agent did with a delivered payload.</summary>
public sealed record AgentPayloadDelivery
{
    /// <summary>The private folder the payload went into.</summary>
    public required string Directory { get; init; }
    /// <summary>Files written, relative to <see cref="Directory"/>.</summary>
    public required IReadOnlyList<string> Files { get; init; }
    /// <summary>True when the payload was a zip and was extracted under <c>unzipped/</c>.</summary>
    public bool Extracted { get; init; }
    /// <summary>The payload script's run, when one was started; completes with its exit code.</summary>
    public Task<int>? Script { get; init; }
}

/// <summary>
/// The agent's side of Keylime's bootstrap key exchange (<c>keys/ukey</c>, <c>keys/vkey</c>, <c>keys/verify</c>), as
/// Keylime's agents behave: shares are RSA-OAEP decrypted with the NK and kept; every U is tried with every V, and the
/// pair whose K = U xor V gives the U's <c>auth_tag</c> (HMAC-SHA384(K, agent id)) becomes the key. A share that does not
/// fit is not an error on the wire (Keylime answers 200 and keeps several shares so a decoy cannot deny service): K is
/// simply not derived and <c>keys/verify</c> answers 400 until a matching pair arrives. At most
/// <see cref="MaxPendingShares"/> of each are kept (oldest dropped).
/// <para>With K, the U's payload is decrypted into the private folder: a zip is extracted under <c>unzipped/</c> (entries
/// confined to that folder, sizes capped), anything else is written to <c>decrypted_payload</c>. When the operator enabled
/// it, <c>unzipped/autorun.ps1</c> (the counterpart of Keylime's <c>autorun.sh</c>) runs in PowerShell with the folder as
/// working directory and <c>AGENT_UUID</c> in its environment.</para>
/// </summary>
public sealed partial class AgentPayloadReceiver
{
    /// <summary>The payload script Keylime's <c>autorun.sh</c> corresponds to.</summary>
    public const string ScriptName = "autorun.ps1";
    /// <summary>Folder under the private folder that a zip payload is extracted into (as Keylime's <c>unzipped</c>).</summary>
    public const string UnzippedFolder = "unzipped";
    /// <summary>File a payload that is not a zip is written to (Keylime's <c>dec_payload_file</c> default).</summary>
    public const string DecryptedPayloadFile = "decrypted_payload";
    /// <summary>Most U and most V shares kept while no pair matches.</summary>
    public const int MaxPendingShares = 16;
    /// <summary>Most bytes extracted from a zip payload.</summary>
    public const long MaxExtractedBytes = 64L * 1024 * 1024;
    /// <summary>Most entries extracted from a zip payload.</summary>
    public const int MaxZipEntries = 1000;

    private sealed record UShare(byte[] Key, byte[] AuthTag, byte[]? Payload);

    private readonly object _lock = new();
    private readonly RSA _nk;
    private readonly string _agentId;
    private readonly AgentSettings _settings;
    private readonly Action<string>? _log;
    private readonly List<UShare> _u = [];
    private readonly List<byte[]> _v = [];
    private byte[]? _k;

    /// <param name="nk">The NK whose public key <c>keys/pubkey</c> serves.</param>
    /// <param name="agentId">The agent id the <c>auth_tag</c> is computed over.</param>
    /// <param name="secureDirectory">The private folder (created with mode 0700) payloads go into.</param>
    /// <param name="settings">Whether and with what the payload script runs.</param>
    /// <param name="log">Receives one line per event; never a key, share or payload byte.</param>
    public AgentPayloadReceiver(RSA nk, string agentId, string secureDirectory, AgentSettings settings, Action<string>? log = null)
    {
        _nk = nk;
        _agentId = agentId;
        SecureDirectory = Path.GetFullPath(secureDirectory);
        _settings = settings;
        _log = log;
    }

    /// <summary>The private folder payloads are written to.</summary>
    public string SecureDirectory { get; }
    /// <summary>True once a U and a V combined to a K that matched its <c>auth_tag</c>.</summary>
    public bool HasKey { get { lock (_lock) return _k is not null; } }
    /// <summary>The last payload delivered, if any.</summary>
    public AgentPayloadDelivery? LastDelivery { get; private set; }

    /// <summary><c>POST keys/ukey</c>: <c>{"encrypted_key", "auth_tag", "payload"?}</c>.</summary>
    public AttestationOutcome<EmptyResults> ReceiveU(ReadOnlySpan<byte> json)
    {
        if (!TryParse(json, out var root, out var error)) return Fail(error);
        using (root)
        {
            var r = root.RootElement;
            if (!TryString(r, "encrypted_key", true, out var enc, out error) || !TryString(r, "auth_tag", true, out var tagHex, out error)
                || !TryString(r, "payload", false, out var payloadB64, out error)) return Fail(error);
            if (!TryShare(enc!, out var u, out error)) return Fail(error);
            if (tagHex!.Length != 96 || !TryHex(tagHex, out var tag)) return Fail("auth_tag: must be 96 hex digits (HMAC-SHA384)");
            byte[]? payload = null;
            if (payloadB64 is not null)
            {
                if (payloadB64.Length > KeylimePayload.MaxEncryptedPayloadChars) return Fail($"payload: larger than {KeylimePayload.MaxEncryptedPayloadChars} characters");
                try { payload = Convert.FromBase64String(payloadB64); }
                catch (FormatException) { return Fail("payload: not valid base64"); }
                if (payload.Length < KeylimePayload.IvSize + KeylimePayload.TagSize) return Fail("payload: shorter than its IV and GCM tag");
            }
            lock (_lock)
            {
                Add(_u, new UShare(u, tag, payload));
                return TryDerive();
            }
        }
    }

    /// <summary><c>POST keys/vkey</c>: <c>{"encrypted_key"}</c>.</summary>
    public AttestationOutcome<EmptyResults> ReceiveV(ReadOnlySpan<byte> json)
    {
        if (!TryParse(json, out var root, out var error)) return Fail(error);
        using (root)
        {
            if (!TryString(root.RootElement, "encrypted_key", true, out var enc, out error)) return Fail(error);
            if (!TryShare(enc!, out var v, out error)) return Fail(error);
            lock (_lock)
            {
                Add(_v, v);
                return TryDerive();
            }
        }
    }

    [GeneratedRegex("^[A-Za-z0-9]{1,1024}$")]
    private static partial Regex ChallengeRegex();

    /// <summary><c>GET keys/verify?challenge=</c>: hex HMAC-SHA384(K, challenge); 400 until K exists.</summary>
    public AttestationOutcome<KeylimeKeyHmac> Verify(string? challenge)
    {
        if (string.IsNullOrEmpty(challenge)) return AttestationOutcome<KeylimeKeyHmac>.Fail(400, "No challenge provided.");
        if (!ChallengeRegex().IsMatch(challenge)) return AttestationOutcome<KeylimeKeyHmac>.Fail(400, "challenge: must be 1-1024 characters of [A-Za-z0-9]");
        byte[]? k;
        lock (_lock) k = _k;
        if (k is null) return AttestationOutcome<KeylimeKeyHmac>.Fail(400, "Bootstrap key not yet available.");
        return AttestationOutcome<KeylimeKeyHmac>.Ok(new KeylimeKeyHmac { Hmac = KeylimePayload.Hmac(k, challenge) });
    }

    private static AttestationOutcome<EmptyResults> Fail(string? message) => AttestationOutcome<EmptyResults>.Fail(400, message ?? "body: invalid");

    private static void Add<T>(List<T> list, T item)
    {
        if (list.Count >= MaxPendingShares) list.RemoveAt(0);
        list.Add(item);
    }

    // Under _lock.
    private AttestationOutcome<EmptyResults> TryDerive()
    {
        if (_u.Count == 0 || _v.Count == 0) return AttestationOutcome<EmptyResults>.Ok(EmptyResults.Instance);
        for (int i = _u.Count - 1; i >= 0; i--)
        {
            for (int j = _v.Count - 1; j >= 0; j--)
            {
                var k = KeylimePayload.Combine(_u[i].Key, _v[j]);
                var expected = Convert.FromHexString(KeylimePayload.Hmac(k, _agentId));
                if (!CryptographicOperations.FixedTimeEquals(expected, _u[i].AuthTag)) continue;
                var payload = _u[i].Payload;
                _u.Clear();
                _v.Clear();
                _k = k;
                _log?.Invoke("Derived the bootstrap key from a U and V pair");
                if (payload is null) return AttestationOutcome<EmptyResults>.Ok(EmptyResults.Instance);
                try
                {
                    LastDelivery = Deliver(KeylimePayload.Decrypt(payload, k));
                    return AttestationOutcome<EmptyResults>.Ok(EmptyResults.Instance);
                }
                catch (CryptographicException ex)
                {
                    _log?.Invoke("The payload could not be decrypted with the derived key: " + ex.Message);
                    return Fail("payload: does not decrypt under the derived key");
                }
                catch (InvalidDataException ex)
                {
                    _log?.Invoke("The payload was refused: " + ex.Message);
                    return Fail("payload: " + ex.Message);
                }
            }
        }
        _log?.Invoke("No U and V pair matches its auth_tag yet; the bootstrap key is not derived");
        return AttestationOutcome<EmptyResults>.Ok(EmptyResults.Instance);
    }

    private AgentPayloadDelivery Deliver(byte[] plaintext)
    {
        CreatePrivateDirectory(SecureDirectory);
        var unzipped = Path.Combine(SecureDirectory, UnzippedFolder);
        var single = Path.Combine(SecureDirectory, DecryptedPayloadFile);
        if (Directory.Exists(unzipped)) Directory.Delete(unzipped, true);
        if (File.Exists(single)) File.Delete(single);

        if (!LooksLikeZip(plaintext))
        {
            WritePrivateFile(single, plaintext);
            _log?.Invoke($"Payload written to {DecryptedPayloadFile} ({plaintext.Length} bytes)");
            return new AgentPayloadDelivery { Directory = SecureDirectory, Files = [DecryptedPayloadFile] };
        }

        var staging = Path.Combine(SecureDirectory, ".unzipping-" + Guid.NewGuid().ToString("N"));
        try
        {
            var files = Extract(plaintext, staging);
            Directory.Move(staging, unzipped);
            _log?.Invoke($"Payload zip extracted to {UnzippedFolder}/ ({files.Count} files)");
            Task<int>? script = null;
            var scriptPath = Path.Combine(unzipped, ScriptName);
            if (File.Exists(scriptPath))
            {
                if (_settings.RunPayloadScript) script = RunScript(unzipped);
                else _log?.Invoke($"The payload has {ScriptName}; not run because payload scripts are not enabled");
            }
            return new AgentPayloadDelivery { Directory = SecureDirectory, Files = files.Select(f => UnzippedFolder + "/" + f).ToArray(), Extracted = true, Script = script };
        }
        finally
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, true);
        }
    }

    private static bool LooksLikeZip(byte[] b) => b.Length >= 4 && b[0] == 'P' && b[1] == 'K' && b[2] == 3 && b[3] == 4;

    /// <summary>Extracts a zip into <paramref name="target"/>, refusing entries outside it and capping entries and bytes written.</summary>
    internal static List<string> Extract(byte[] zip, string target)
    {
        CreatePrivateDirectory(target);
        string root = Path.GetFullPath(target) + Path.DirectorySeparatorChar;
        var files = new List<string>();
        long total = 0;
        ZipArchive archive;
        try { archive = new ZipArchive(new MemoryStream(zip, false), ZipArchiveMode.Read); }
        catch (InvalidDataException ex) { throw new InvalidDataException("not a readable zip: " + ex.Message, ex); }
        using (archive)
        {
            if (archive.Entries.Count > MaxZipEntries) throw new InvalidDataException($"more than {MaxZipEntries} entries");
            foreach (var e in archive.Entries)
            {
                var name = e.FullName.Replace('\\', '/');
                if (name.Length == 0 || name.StartsWith('/') || name.Contains('\0') || (name.Length > 1 && name[1] == ':') || name.Split('/').Any(s => s == ".."))
                    throw new InvalidDataException($"entry '{Clip(e.FullName)}' points outside the payload folder");
                var path = Path.GetFullPath(Path.Combine(target, name));
                if (!path.StartsWith(root, StringComparison.Ordinal) && path + Path.DirectorySeparatorChar != root)
                    throw new InvalidDataException($"entry '{Clip(e.FullName)}' points outside the payload folder");
                if (name.EndsWith('/')) { CreatePrivateDirectory(path); continue; }
                // Unix symbolic links are stored with S_IFLNK in the high bits of the external attributes: refused.
                if (((e.ExternalAttributes >> 16) & 0xF000) == 0xA000) throw new InvalidDataException($"entry '{Clip(e.FullName)}' is a symbolic link");
                CreatePrivateDirectory(Path.GetDirectoryName(path)!);
                if (File.Exists(path) || Directory.Exists(path)) throw new InvalidDataException($"entry '{Clip(e.FullName)}' appears twice");
                using var input = e.Open();
                using var output = OpenPrivateFile(path);
                var buffer = new byte[81920];
                int n;
                while ((n = input.Read(buffer, 0, buffer.Length)) > 0)
                {
                    total += n;
                    if (total > MaxExtractedBytes) throw new InvalidDataException($"extracts to more than {MaxExtractedBytes} bytes");
                    output.Write(buffer, 0, n);
                }
                files.Add(name);
            }
        }
        return files;
    }

    private static string Clip(string s) => s.Length <= 80 ? s : s[..80] + "…";

    private Task<int> RunScript(string workingDirectory)
    {
        var host = _settings.PayloadScriptHost ?? "pwsh";
        var psi = new ProcessStartInfo(host)
        {
            WorkingDirectory = workingDirectory,
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var a in new[] { "-NoProfile", "-NonInteractive", "-File", Path.Combine(workingDirectory, ScriptName) }) psi.ArgumentList.Add(a);
        psi.Environment["AGENT_UUID"] = _agentId;
        _log?.Invoke($"Running payload script {ScriptName} with {host}");
        return Task.Run(async () =>
        {
            try
            {
                using var p = Process.Start(psi) ?? throw new InvalidOperationException("the process did not start");
                var stdout = p.StandardOutput.ReadToEndAsync();
                var stderr = p.StandardError.ReadToEndAsync();
                await p.WaitForExitAsync().ConfigureAwait(false);
                await Task.WhenAll(stdout, stderr).ConfigureAwait(false);
                _log?.Invoke($"Payload script {ScriptName} exited with {p.ExitCode}");
                return p.ExitCode;
            }
            catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or InvalidOperationException)
            {
                _log?.Invoke($"Payload script {ScriptName} could not run with {host}: {ex.Message}");
                return -1;
            }
        });
    }

    private bool TryShare(string b64, out byte[] share, out string? error)
    {
        share = [];
        error = null;
        byte[] enc;
        try { enc = Convert.FromBase64String(b64); }
        catch (FormatException) { error = "encrypted_key: not valid base64"; return false; }
        try { share = KeylimePayload.DecryptKeyShare(_nk, enc); }
        catch (CryptographicException) { error = "encrypted_key: does not decrypt with the agent's key"; return false; }
        if (share.Length != KeylimePayload.KeySize) { error = $"encrypted_key: the key share must be {KeylimePayload.KeySize} bytes"; return false; }
        return true;
    }

    private static bool TryParse(ReadOnlySpan<byte> json, out JsonDocument doc, out string? error)
    {
        doc = null!;
        error = null;
        if (!System.Text.Unicode.Utf8.IsValid(json)) { error = "body: not valid UTF-8"; return false; }
        try { doc = JsonDocument.Parse(json.ToArray(), new JsonDocumentOptions { MaxDepth = 8 }); }
        catch (JsonException) { error = "body: not valid JSON"; return false; }
        if (doc.RootElement.ValueKind != JsonValueKind.Object) { doc.Dispose(); error = "body: must be a JSON object"; return false; }
        return true;
    }

    private static bool TryString(JsonElement o, string name, bool required, out string? value, out string? error)
    {
        value = null;
        error = null;
        if (!o.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null)
        {
            if (required) error = $"{name}: missing";
            return !required;
        }
        if (v.ValueKind != JsonValueKind.String) { error = $"{name}: must be a string"; return false; }
        value = v.GetString();
        return true;
    }

    private static bool TryHex(string s, out byte[] bytes)
    {
        try { bytes = Convert.FromHexString(s); return true; }
        catch (FormatException) { bytes = []; return false; }
    }

    /// <summary>Creates a folder only its owner can enter (mode 0700 on Unix), tightening an existing one.</summary>
    public static void CreatePrivateDirectory(string path) => Storage.PrivateFiles.CreateFolder(path);

    private static FileStream OpenPrivateFile(string path) => Storage.PrivateFiles.OpenWrite(path, FileMode.CreateNew, FileShare.None);

    private static void WritePrivateFile(string path, byte[] content)
    {
        using var fs = OpenPrivateFile(path);
        fs.Write(content);
    }
}
