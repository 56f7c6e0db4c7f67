using System.Buffers;
using System.Text;
using System.Text.Json.Nodes;
using TpmProvisioning.Attestation.Verifier;

namespace TpmProvisioning.Tests.Verifier;

/// <summary>
/// The verifier parses its (up to 32 MiB) add-request body in place, as the server buffered it in segments: the answer must not
/// depend on where the segments split, and bodies that used to cost many times their size (millions of tokens, huge members)
/// are read with a forward-only reader.
/// </summary>
public sealed class VerifierBodyStreamingTests
{
    private static JsonObject Valid()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            var p = Path.Combine(d.FullName, "seeds", "keylime", "verifier-post-agent.request.json");
            if (!File.Exists(p)) continue;
            var o = JsonNode.Parse(File.ReadAllText(p))!.AsObject();
            o["mtls_cert"] = "disabled";
            o["revocation_key"] = "";
            return o;
        }
        throw new FileNotFoundException("seed not found");
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> m, long index) { Memory = m; RunningIndex = index; }
        public Segment Add(ReadOnlyMemory<byte> m) { var s = new Segment(m, RunningIndex + Memory.Length); Next = s; return s; }
    }

    /// <summary>The bytes cut into pieces of <paramref name="size"/> (the last one shorter).</summary>
    private static ReadOnlySequence<byte> Split(byte[] bytes, int size)
    {
        var first = new Segment(bytes.AsMemory(0, Math.Min(size, bytes.Length)), 0);
        var last = first;
        for (int at = size; at < bytes.Length; at += size) last = last.Add(bytes.AsMemory(at, Math.Min(size, bytes.Length - at)));
        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    /// <summary>Every member of a config as text (records compare their lists by reference).</summary>
    private static string Describe(VerifierAgentConfig c) =>
        string.Join("|", typeof(VerifierAgentConfig).GetProperties().Select(p => p.Name + "=" + (p.GetValue(c) is IReadOnlyList<string> l ? string.Join(",", l) : p.GetValue(c))));

    [Fact]
    public void TheAnswerDoesNotDependOnWhereTheSegmentsSplit()
    {
        var body = Valid();
        body["metadata"] = new JsonObject { ["note"] = "é ü 日本 🙂", ["n"] = new JsonArray(1, 2, 3) }; // multi-byte characters split across segments
        body["runtime_policy_name"] = "policy-ü";
        var bytes = Encoding.UTF8.GetBytes(body.ToJsonString(new System.Text.Json.JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
        var whole = VerifierAgentRequest.Parse(bytes, false, out var e0);
        Assert.Null(e0);
        foreach (int size in new[] { 1, 2, 3, 7, 64, 1000 })
        {
            var split = VerifierAgentRequest.Parse(Split(bytes, size), false, out var e);
            Assert.Null(e);
            Assert.Equal(Describe(whole!), Describe(split!));
        }
        Assert.Contains("日本", whole!.Metadata);
        // And refusals too: a truncated body, invalid UTF-8, trailing content.
        foreach (var bad in new[] { bytes[..^1], [.. bytes[..20], 0xC3, .. bytes[20..]], [.. bytes, .. "{}"u8.ToArray()] })
            foreach (int size in new[] { 1, 5, 4096 })
            {
                Assert.Null(VerifierAgentRequest.Parse(Split(bad, size), false, out var e));
                Assert.Null(VerifierAgentRequest.Parse(bad, false, out var e2));
                Assert.Equal(e2, e);
            }
    }

    [Fact]
    public void TheLastOfADuplicateMemberWinsAsInAParsedDocument()
    {
        var json = Valid().ToJsonString();
        var dup = json[..^1] + ",\"cloudagent_port\":0,\"cloudagent_port\":9002}";
        var config = VerifierAgentRequest.Parse(Encoding.UTF8.GetBytes(dup), false, out var e);
        Assert.Null(e);
        Assert.Equal(9002, config!.Port);
    }

    [Fact]
    public void AMemberOfMillionsOfTokensIsSkippedAndAHugeMemberOfARefusedBodyIsNeverMaterialised()
    {
        var json = Valid().ToJsonString();
        var tokens = new StringBuilder(json[..^1]).Append(",\"x_unknown\":[");
        for (int i = 0; i < 2_000_000; i++) tokens.Append(i == 0 ? "0" : ",0");
        var config = VerifierAgentRequest.Parse(Encoding.UTF8.GetBytes(tokens.Append("]}").ToString()), false, out var e);
        Assert.Null(e);
        Assert.NotNull(config);
        // A wrong type is still reported before anything else, as before.
        var wrong = Valid();
        wrong["runtime_policy"] = 5;
        wrong["cloudagent_port"] = "x";
        Assert.Null(VerifierAgentRequest.Parse(Encoding.UTF8.GetBytes(wrong.ToJsonString()), false, out e));
        Assert.Equal("cloudagent_port: must be a port number", e);
        wrong["cloudagent_port"] = 9002;
        Assert.Null(VerifierAgentRequest.Parse(Encoding.UTF8.GetBytes(wrong.ToJsonString()), false, out e));
        Assert.Equal("runtime_policy: must be a string", e);
    }

    [Fact]
    public void ALoneSurrogateEscapeIsARefusalNotAnException()
    {
        foreach (var member in new[] { "runtime_policy", "cloudagent_ip", "ak_tpm" })
        {
            var json = Valid().ToJsonString();
            var bad = json[..^1] + $",\"{member}\":\"\\uD800\"}}";
            Assert.Null(VerifierAgentRequest.Parse(Encoding.UTF8.GetBytes(bad), false, out var e));
            Assert.StartsWith(member + ":", e);
        }
        var list = Valid();
        list["accept_tpm_hash_algs"] = new JsonArray("sha256");
        var text = list.ToJsonString().Replace("\"sha256\"]", "\"\\uDC00\"]");
        Assert.Null(VerifierAgentRequest.Parse(Encoding.UTF8.GetBytes(text), false, out var le));
        Assert.StartsWith("accept_tpm_hash_algs:", le);
    }
}
