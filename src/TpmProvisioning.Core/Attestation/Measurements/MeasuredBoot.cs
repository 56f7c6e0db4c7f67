using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Attestation.Measurements;

/// <summary>One event rule of a measured-boot refstate: every event of this PCR and type must have one of these digests.</summary>
public sealed record MeasuredBootEventRule(int Pcr, uint EventType, IReadOnlyList<string> Digests);

/// <summary>
/// A measured-boot reference state (Keylime's <c>mb_refstate</c>, in this engine's own format; see
/// docs/attestation-policies.md): allowed final PCR values, allowed event digests per PCR and event type, required Secure
/// Boot, allowed PK/KEK/db entries and required dbx entries (by SHA-256 of the certificate, or the listed hash).
/// The minimal form <c>{"pcrs":{"0":"hex",...}}</c> is accepted.
/// </summary>
public sealed class MeasuredBootPolicy
{
    /// <summary>The format version written.</summary>
    public const int CurrentVersion = 1;

    /// <summary>The bank the digests are for (null: taken from each value's length at check time).</summary>
    public TpmAlgId? Bank { get; set; }
    /// <summary>Allowed final values (lower-case hex) per PCR.</summary>
    public Dictionary<int, List<string>> Pcrs { get; } = new();
    /// <summary>Event digest rules.</summary>
    public List<MeasuredBootEventRule> Events { get; } = new();
    /// <summary>Require the SecureBoot variable measured as 1.</summary>
    public bool RequireSecureBoot { get; set; }
    /// <summary>Allowed PK entries (null: not checked).</summary>
    public List<string>? Pk { get; set; }
    /// <summary>Allowed KEK entries (null: not checked).</summary>
    public List<string>? Kek { get; set; }
    /// <summary>Allowed db entries (null: not checked).</summary>
    public List<string>? Db { get; set; }
    /// <summary>dbx entries that must be present (null: not checked).</summary>
    public List<string>? Dbx { get; set; }

    /// <summary>Parses a refstate; throws <see cref="FormatException"/> naming the field for anything malformed.</summary>
    public static MeasuredBootPolicy Parse(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonNode? root;
        try { root = JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { MaxDepth = 32, AllowDuplicateProperties = false }); }
        catch (JsonException e) { throw new FormatException($"Measured boot refstate is not valid JSON: {e.Message}"); }
        if (root is not JsonObject obj) throw new FormatException("Measured boot refstate: the top level is not a JSON object.");
        var p = new MeasuredBootPolicy();
        try
        {
            if (obj["version"] is JsonNode vn && (vn is not JsonValue vv || !vv.TryGetValue<int>(out var ver) || ver != CurrentVersion))
                throw new FormatException($"Measured boot refstate: version must be {CurrentVersion}.");
            if (obj["hash_alg"] is JsonNode an)
            {
                var name = an is JsonValue av && av.TryGetValue<string>(out var s) ? s : throw new FormatException("Measured boot refstate: hash_alg is not a string.");
                p.Bank = ImaHashAlgorithms.ToTpm(name) ?? throw new FormatException($"Measured boot refstate: hash_alg '{name}' is not sha1, sha256, sha384 or sha512.");
            }
            if (obj["pcrs"] is JsonNode pn)
            {
                if (pn is not JsonObject pcrs) throw new FormatException("Measured boot refstate: 'pcrs' is not an object of PCR -> hex value(s).");
                foreach (var (key, value) in pcrs)
                {
                    var k = key.StartsWith("pcr", StringComparison.OrdinalIgnoreCase) ? key[3..] : key;
                    if (!int.TryParse(k, NumberStyles.None, CultureInfo.InvariantCulture, out int pcr) || pcr > 23)
                        throw new FormatException($"Measured boot refstate: pcrs key '{key}' is not a PCR number 0..23.");
                    p.Pcrs[pcr] = HexList(value, $"pcrs['{key}']", allowSingle: true, p.Bank);
                }
            }
            if (obj["events"] is JsonNode en)
            {
                if (en is not JsonArray events) throw new FormatException("Measured boot refstate: 'events' is not an array.");
                for (int i = 0; i < events.Count; i++)
                {
                    if (events[i] is not JsonObject rule) throw new FormatException($"Measured boot refstate: events[{i}] is not an object.");
                    int pcr = rule["pcr"] is JsonValue pv && pv.TryGetValue<int>(out var pi) && pi is >= 0 and <= 23 ? pi
                        : throw new FormatException($"Measured boot refstate: events[{i}].pcr is not a PCR number 0..23.");
                    uint type = rule["type"] switch
                    {
                        JsonValue tv when tv.TryGetValue<string>(out var ts) => UefiEventLog.EventTypeFromName(ts) ?? throw new FormatException($"Measured boot refstate: events[{i}].type '{ts}' is not an event type."),
                        JsonValue tv when tv.TryGetValue<uint>(out var tn) => tn,
                        _ => throw new FormatException($"Measured boot refstate: events[{i}].type is missing."),
                    };
                    p.Events.Add(new MeasuredBootEventRule(pcr, type, HexList(rule["digests"], $"events[{i}].digests", allowSingle: false, p.Bank)));
                }
            }
            if (obj["secure_boot"] is JsonNode sb)
                p.RequireSecureBoot = sb is JsonValue sbv && sbv.TryGetValue<bool>(out var b) ? b : throw new FormatException("Measured boot refstate: secure_boot is not true or false.");
            p.Pk = OptionalIds(obj, "pk");
            p.Kek = OptionalIds(obj, "kek");
            p.Db = OptionalIds(obj, "db");
            p.Dbx = OptionalIds(obj, "dbx");
        }
        catch (InvalidOperationException e) { throw new FormatException($"Measured boot refstate: wrong JSON type: {e.Message}"); }
        return p;
    }

    private static List<string>? OptionalIds(JsonObject obj, string name) =>
        obj[name] is JsonNode n ? HexList(n, name, allowSingle: false, null, 32) : null;

    private static List<string> HexList(JsonNode? node, string field, bool allowSingle, TpmAlgId? bank, int? size = null)
    {
        var items = node switch
        {
            JsonArray arr => arr.ToList(),
            JsonValue when allowSingle => [node],
            _ => throw new FormatException($"Measured boot refstate: {field} is not an array of hex strings."),
        };
        int? expected = size ?? (bank is TpmAlgId b ? TpmHash.DigestSize(b) : null);
        var list = new List<string>();
        foreach (var item in items)
        {
            var text = item is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
            var hex = MeasurementHex.Normalize(text) ?? throw new FormatException($"Measured boot refstate: {field} has a value that is not hex: '{ImaMeasurementList.Clip(text ?? "null")}'.");
            if (expected is int e && hex.Length != 2 * e) throw new FormatException($"Measured boot refstate: {field} value '{ImaMeasurementList.Clip(hex)}' is not {e} bytes.");
            if (!list.Contains(hex)) list.Add(hex);
        }
        return list;
    }

    /// <summary>The refstate as JSON (the full form).</summary>
    public string ToJson()
    {
        var obj = new JsonObject { ["version"] = CurrentVersion };
        if (Bank is TpmAlgId b) obj["hash_alg"] = ImaHashAlgorithms.FromTpm(b);
        var pcrs = new JsonObject();
        foreach (var (pcr, values) in Pcrs.OrderBy(kv => kv.Key)) pcrs[pcr.ToString(CultureInfo.InvariantCulture)] = Array(values);
        obj["pcrs"] = pcrs;
        obj["events"] = new JsonArray(Events.Select(r => (JsonNode?)new JsonObject
        {
            ["pcr"] = r.Pcr,
            ["type"] = UefiEventLog.EventTypeName(r.EventType),
            ["digests"] = Array(r.Digests),
        }).ToArray());
        obj["secure_boot"] = RequireSecureBoot;
        if (Pk is not null) obj["pk"] = Array(Pk);
        if (Kek is not null) obj["kek"] = Array(Kek);
        if (Db is not null) obj["db"] = Array(Db);
        if (Dbx is not null) obj["dbx"] = Array(Dbx);
        return obj.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    private static JsonArray Array(IEnumerable<string> values) => new(values.Select(v => (JsonNode?)JsonValue.Create(v)).ToArray());

    /// <summary>
    /// A refstate describing a known-good machine's log: final PCRs 0-7, the digests of its PCR 4 boot applications,
    /// Secure Boot required when the log shows it on, and its PK/KEK/db (allowed) and dbx (required) entries.
    /// Throws <see cref="FormatException"/> when the log does not parse, <see cref="ArgumentException"/> when it lacks the bank.
    /// </summary>
    public static MeasuredBootPolicy FromEventLog(byte[] log, TpmAlgId bank)
    {
        var parsed = UefiEventLog.Parse(log);
        var replay = parsed.Replay(bank);
        var p = new MeasuredBootPolicy { Bank = bank };
        var touched = parsed.Extending.Select(e => e.Pcr).ToHashSet();
        for (int i = 0; i <= 7; i++)
            if (touched.Contains(i)) p.Pcrs[i] = [MeasurementHex.ToHex(replay[i])];
        var apps = parsed.Events.Where(e => e.Pcr == 4 && e.EventType == MeasuredBootVerifier.EvEfiBootServicesApplication)
            .Select(e => MeasurementHex.ToHex(e.Digest(bank)!)).Distinct().ToList();
        if (apps.Count > 0) p.Events.Add(new MeasuredBootEventRule(4, MeasuredBootVerifier.EvEfiBootServicesApplication, apps));
        var vars = MeasuredBootVerifier.LastVariables(parsed, bank);
        p.RequireSecureBoot = vars.TryGetValue("SecureBoot", out var sb) && sb.Matches && sb.Variable.Data is [1];
        p.Pk = Ids(vars, "PK");
        p.Kek = Ids(vars, "KEK");
        p.Db = Ids(vars, "db");
        p.Dbx = Ids(vars, "dbx");
        return p;
    }

    private static List<string>? Ids(Dictionary<string, (UefiVariable Variable, bool Matches, UefiEvent Event)> vars, string name) =>
        vars.TryGetValue(name, out var v) && v.Matches && v.Variable.TryGetSignatures(out var entries)
            ? entries.Select(s => UefiVariable.EntryId(s.Type, s.Data)).Distinct().ToList()
            : null;
}

/// <summary>The outcome of <see cref="MeasuredBootVerifier.Verify"/>.</summary>
public sealed record MeasuredBootResult(bool Passed, IReadOnlyList<MeasurementFailure> Failures)
{
    /// <summary>The parsed log (null when it did not parse).</summary>
    public UefiEventLog? Log { get; init; }
    /// <summary>PCRs 0-23 replayed from the log in the quote's bank (null when the log did not parse or lacks the bank).</summary>
    public IReadOnlyList<byte[]>? ReplayedPcrs { get; init; }

    /// <inheritdoc />
    public override string ToString() => Passed ? "passed" : string.Join("; ", Failures.Take(3));
}

/// <summary>Checks a UEFI event log against a quote and, optionally, a measured-boot refstate. Stateless and thread-safe.</summary>
public static class MeasuredBootVerifier
{
    internal const uint EvEfiBootServicesApplication = 0x80000003;

    /// <summary>
    /// Replays the log in <paramref name="bank"/> and compares PCRs 0-7 (and any other PCR the log extends, PCR 10 aside)
    /// with each PCR present in <paramref name="quotedPcrs"/>; then checks the refstate. With a refstate, PCRs 0-7 must be
    /// quoted. Never throws for a bad log or refstate content; failures say which PCR or event.
    /// </summary>
    public static MeasuredBootResult Verify(byte[] eventLog, TpmAlgId bank, IReadOnlyDictionary<int, byte[]> quotedPcrs, MeasuredBootPolicy? refstate)
    {
        ArgumentNullException.ThrowIfNull(eventLog);
        ArgumentNullException.ThrowIfNull(quotedPcrs);
        var failures = new List<MeasurementFailure>();
        if (!UefiEventLog.TryParse(eventLog, out var log, out var error))
        {
            failures.Add(new(MeasurementEventIds.BootLogInvalid, $"the UEFI event log does not parse: {error}", null, null));
            return new MeasuredBootResult(false, failures);
        }
        if (!TpmHash.IsSupported(bank) || !log!.Algorithms.ContainsKey(bank))
        {
            failures.Add(new(MeasurementEventIds.BootLogBankMissing, $"the event log has no {bank} digests (it has {string.Join(", ", log!.Algorithms.Keys)})", null, null));
            return new MeasuredBootResult(false, failures) { Log = log };
        }
        IReadOnlyList<byte[]> replay;
        try { replay = log.Replay(bank); }
        catch (ArgumentException e)
        {
            failures.Add(new(MeasurementEventIds.BootLogBankMissing, e.Message, null, null));
            return new MeasuredBootResult(false, failures) { Log = log };
        }

        var touched = log.Extending.Select(e => e.Pcr).ToHashSet();
        for (int pcr = 0; pcr < 24; pcr++)
        {
            if (pcr == ImaVerifier.ImaPcr || (pcr > 7 && !touched.Contains(pcr))) continue;
            if (!quotedPcrs.TryGetValue(pcr, out var quoted))
            {
                if (refstate is not null && pcr <= 7)
                    failures.Add(new(MeasurementEventIds.BootPcr(pcr), $"PCR {pcr} is not in the quote, so the event log cannot be checked for it", pcr, null));
                continue;
            }
            if (!quoted.AsSpan().SequenceEqual(replay[pcr]))
                failures.Add(new(MeasurementEventIds.BootPcr(pcr), $"PCR {pcr}: the event log replays to {MeasurementHex.ToHex(replay[pcr])} but the quote has {MeasurementHex.ToHex(quoted)}", pcr, null));
        }

        if (refstate is not null) CheckRefstate(log, bank, quotedPcrs, refstate, failures);
        return new MeasuredBootResult(failures.Count == 0, failures) { Log = log, ReplayedPcrs = replay };
    }

    private static void CheckRefstate(UefiEventLog log, TpmAlgId bank, IReadOnlyDictionary<int, byte[]> quoted, MeasuredBootPolicy policy, List<MeasurementFailure> failures)
    {
        int size = TpmHash.DigestSize(bank);
        bool bankOk = policy.Bank is null || policy.Bank == bank;
        if (!bankOk)
            failures.Add(new(MeasurementEventIds.BootPolicyBank, $"the refstate is for the {ImaHashAlgorithms.FromTpm(policy.Bank!.Value)} bank but the quote is {ImaHashAlgorithms.FromTpm(bank)}", null, null));
        if (bankOk)
        {
            foreach (var (pcr, allowed) in policy.Pcrs.OrderBy(kv => kv.Key))
            {
                if (allowed.Any(a => a.Length != 2 * size))
                {
                    failures.Add(new(MeasurementEventIds.BootPolicyBank, $"the refstate's PCR {pcr} values are not {ImaHashAlgorithms.FromTpm(bank)} digests", pcr, null));
                    continue;
                }
                if (!quoted.TryGetValue(pcr, out var value))
                {
                    failures.Add(new(MeasurementEventIds.BootPolicyPcr(pcr), $"the refstate constrains PCR {pcr} but it is not in the quote", pcr, null));
                    continue;
                }
                if (!allowed.Contains(MeasurementHex.ToHex(value)))
                    failures.Add(new(MeasurementEventIds.BootPolicyPcr(pcr), $"PCR {pcr} is {MeasurementHex.ToHex(value)}, not a value the refstate allows", pcr, null));
            }
            foreach (var group in policy.Events.GroupBy(r => (r.Pcr, r.EventType)))
            {
                var allowed = group.SelectMany(r => r.Digests).ToHashSet(StringComparer.Ordinal);
                foreach (var e in log.Extending)
                {
                    if (e.Pcr != group.Key.Pcr || e.EventType != group.Key.EventType) continue;
                    var d = MeasurementHex.ToHex(e.Digest(bank)!);
                    if (!allowed.Contains(d))
                        failures.Add(new(MeasurementEventIds.BootPolicyEventDigest, $"event {e.Index} ({e.EventTypeName}, PCR {e.Pcr}) has digest {d}, not one the refstate allows", e.Pcr, null));
                }
            }
        }

        if (!policy.RequireSecureBoot && policy.Pk is null && policy.Kek is null && policy.Db is null && policy.Dbx is null) return;
        var vars = LastVariables(log, bank);
        if (policy.RequireSecureBoot)
        {
            if (!vars.TryGetValue("SecureBoot", out var sb))
                failures.Add(new(MeasurementEventIds.BootPolicySecureBoot, "Secure Boot is required but the log does not measure the SecureBoot variable", 7, null));
            else if (!sb.Matches)
                failures.Add(new(MeasurementEventIds.BootPolicySecureBoot, $"event {sb.Event.Index} (SecureBoot): the digest does not match the event data", 7, null));
            else if (sb.Variable.Data is not [1])
                failures.Add(new(MeasurementEventIds.BootPolicySecureBoot, $"Secure Boot is required but SecureBoot is {MeasurementHex.ToHex(sb.Variable.Data)}", 7, null));
        }
        CheckAllowed(vars, "PK", policy.Pk, failures);
        CheckAllowed(vars, "KEK", policy.Kek, failures);
        CheckAllowed(vars, "db", policy.Db, failures);
        if (policy.Dbx is not null)
        {
            var present = Entries(vars, "dbx", failures, out _);
            if (present is not null)
                foreach (var required in policy.Dbx)
                    if (!present.Contains(required))
                        failures.Add(new(MeasurementEventIds.BootPolicyDbx, $"dbx lacks the required entry {required}", 7, null));
        }
    }

    private static void CheckAllowed(Dictionary<string, (UefiVariable Variable, bool Matches, UefiEvent Event)> vars, string name, List<string>? allowed, List<MeasurementFailure> failures)
    {
        if (allowed is null) return;
        var present = Entries(vars, name, failures, out var id);
        if (present is null) return;
        foreach (var entry in present)
            if (!allowed.Contains(entry))
                failures.Add(new(id, $"{name} has entry {entry}, which the refstate does not allow", 7, null));
    }

    private static HashSet<string>? Entries(Dictionary<string, (UefiVariable Variable, bool Matches, UefiEvent Event)> vars, string name, List<MeasurementFailure> failures, out string id)
    {
        id = MeasurementEventIds.BootPolicyVariablePrefix + name.ToLowerInvariant();
        if (!vars.TryGetValue(name, out var v))
        {
            failures.Add(new(id, $"the log does not measure the {name} variable", 7, null));
            return null;
        }
        if (!v.Matches)
        {
            failures.Add(new(id, $"event {v.Event.Index} ({name}): the digest does not match the event data", 7, null));
            return null;
        }
        if (!v.Variable.TryGetSignatures(out var entries))
        {
            failures.Add(new(id, $"event {v.Event.Index} ({name}): not a valid EFI_SIGNATURE_LIST", 7, null));
            return null;
        }
        return entries.Select(s => UefiVariable.EntryId(s.Type, s.Data)).ToHashSet(StringComparer.Ordinal);
    }

    /// <summary>The last PCR 7 measurement of each Secure Boot variable (SecureBoot, PK, KEK under the global GUID; db, dbx under the image-security GUID).</summary>
    internal static Dictionary<string, (UefiVariable Variable, bool Matches, UefiEvent Event)> LastVariables(UefiEventLog log, TpmAlgId bank)
    {
        var result = new Dictionary<string, (UefiVariable, bool, UefiEvent)>(StringComparer.Ordinal);
        foreach (var (e, v, matches) in log.SecureBootVariables(bank))
        {
            bool known = v.Name switch
            {
                "SecureBoot" or "PK" or "KEK" => v.VendorGuid == UefiVariable.GlobalVariable,
                "db" or "dbx" => v.VendorGuid == UefiVariable.ImageSecurityDatabase,
                _ => false,
            };
            if (known) result[v.Name] = (v, matches, e);
        }
        return result;
    }
}
