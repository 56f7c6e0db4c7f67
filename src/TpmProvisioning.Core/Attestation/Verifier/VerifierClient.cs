using System.Text.Json;

namespace TpmProvisioning.Attestation.Verifier;

/// <summary>How a tenant reaches a Keylime verifier.</summary>
public sealed class VerifierClientOptions : KeylimeClientOptions
{
    /// <summary>The verifier's base address, e.g. <c>https://verifier:8881</c>.</summary>
    public required Uri Verifier { get; init; }
}

/// <summary>A client of the Keylime verifier API v2.1, as a tenant uses it (every route needs a components-CA client certificate).</summary>
public sealed class VerifierClient(VerifierClientOptions options) : KeylimeRestClient(options.Verifier, options)
{
    private static string Agent(string id) => $"{V}/agents/{Uri.EscapeDataString(id)}";

    /// <summary><c>POST /v2.1/agents/{id}</c> with the spec's body (a JSON object or text).</summary>
    public async Task AddAsync(string agentId, object body, CancellationToken ct = default) =>
        await SendAsync(HttpMethod.Post, Agent(agentId), body, ct).ConfigureAwait(false);

    /// <summary><c>GET /v2.1/agents/{id}</c>.</summary>
    public async Task<VerifierAgentStatus> GetAsync(string agentId, CancellationToken ct = default) =>
        VerifierAgentStatus.FromJson(await SendAsync(HttpMethod.Get, Agent(agentId), null, ct).ConfigureAwait(false))
            ?? throw new KeylimeRequestException(200, "the verifier's answer carries no agent");

    /// <summary><c>GET /v2.1/agents/</c>: the ids (Keylime nests each in a one-element list; both shapes are read).</summary>
    public async Task<IReadOnlyList<string>> ListAsync(CancellationToken ct = default)
    {
        var r = await SendAsync(HttpMethod.Get, $"{V}/agents/", null, ct).ConfigureAwait(false);
        if (r.ValueKind != JsonValueKind.Object || !r.TryGetProperty("uuids", out var u) || u.ValueKind != JsonValueKind.Array) return [];
        return u.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Array && e.GetArrayLength() > 0 ? e[0].GetString() : e.ValueKind == JsonValueKind.String ? e.GetString() : null)
            .Where(s => s is not null).Select(s => s!).ToList();
    }

    /// <summary><c>GET /v2.1/agents/?bulk=1</c>: every agent with its status.</summary>
    public async Task<IReadOnlyDictionary<string, VerifierAgentStatus>> ListStatusAsync(CancellationToken ct = default)
    {
        var r = await SendAsync(HttpMethod.Get, $"{V}/agents/?bulk=1", null, ct).ConfigureAwait(false);
        var d = new SortedDictionary<string, VerifierAgentStatus>(StringComparer.Ordinal);
        if (r.ValueKind == JsonValueKind.Object)
            foreach (var p in r.EnumerateObject())
                if (VerifierAgentStatus.FromJson(p.Value) is { } s) d[p.Name] = s;
        return d;
    }

    /// <summary><c>DELETE /v2.1/agents/{id}</c>.</summary>
    public async Task DeleteAsync(string agentId, CancellationToken ct = default) => await SendAsync(HttpMethod.Delete, Agent(agentId), null, ct).ConfigureAwait(false);

    /// <summary><c>PUT /v2.1/agents/{id}/reactivate</c>.</summary>
    public async Task ReactivateAsync(string agentId, CancellationToken ct = default) => await SendAsync(HttpMethod.Put, Agent(agentId) + "/reactivate", "{}", ct).ConfigureAwait(false);

    /// <summary><c>PUT /v2.1/agents/{id}/stop</c>.</summary>
    public async Task StopAsync(string agentId, CancellationToken ct = default) => await SendAsync(HttpMethod.Put, Agent(agentId) + "/stop", "{}", ct).ConfigureAwait(false);
}
