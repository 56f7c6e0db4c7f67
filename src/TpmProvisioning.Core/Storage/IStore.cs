namespace TpmProvisioning.Storage;

/// <summary>Outcome of an audited call.</summary>
public enum AuditOutcome
{
    Success,
    Denied,
    Rejected,
    Failed,
}

/// <summary>One audit record: who did what, to what, from where, when, and how it ended. Never holds secrets.</summary>
public sealed record AuditEntry
{
    public long Id { get; init; }
    public DateTimeOffset Time { get; init; } = DateTimeOffset.UtcNow;
    /// <summary>API key id, client certificate subject, or local user.</summary>
    public string Actor { get; init; } = "";
    /// <summary>Surface-qualified action, e.g. <c>server.start</c> or <c>provision.create</c>.</summary>
    public string Action { get; init; } = "";
    public string? Target { get; init; }
    /// <summary>Remote address, or <c>local</c> for in-process calls.</summary>
    public string Source { get; init; } = "local";
    public AuditOutcome Outcome { get; init; }
    public string? Detail { get; init; }
}

/// <summary>Filter for reading the audit log; null members do not filter.</summary>
public sealed record AuditQuery
{
    public DateTimeOffset? Since { get; init; }
    public DateTimeOffset? Until { get; init; }
    public string? Action { get; init; }
    public string? Actor { get; init; }
    /// <summary>The caller's address as recorded.</summary>
    public string? Source { get; init; }
    public AuditOutcome? Outcome { get; init; }
    /// <summary>Newest first, at most this many.</summary>
    public int Limit { get; init; } = 1000;
}

/// <summary>
/// The one store the engine talks to. It is a partial interface: each surface declares its own members in a
/// file of its own (<c>IStore.&lt;Surface&gt;.cs</c>) and implements them in <c>SqlStore.&lt;Surface&gt;.cs</c>,
/// so every provider implements the whole contract. SQLite is the embedded default; PostgreSQL implements the same
/// contract for fleets. Implementations apply their versioned schema migrations on open.
/// </summary>
public partial interface IStore : IDisposable
{
    /// <summary>Provider name, e.g. <c>sqlite</c>.</summary>
    string Provider { get; }

    /// <summary>Schema version after migrations.</summary>
    int SchemaVersion { get; }

    /// <summary>True when the store answers a trivial query.</summary>
    Task<bool> PingAsync(CancellationToken ct = default);

    Task<long> AppendAuditAsync(AuditEntry entry, CancellationToken ct = default);

    Task<IReadOnlyList<AuditEntry>> QueryAuditAsync(AuditQuery query, CancellationToken ct = default);
}

/// <summary>The store is unreachable or failed; surfaces map it to "service unavailable".</summary>
public sealed class StoreUnavailableException : Exception
{
    public StoreUnavailableException(string message, Exception? inner = null) : base(message, inner) { }
}
