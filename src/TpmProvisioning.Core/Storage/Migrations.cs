namespace TpmProvisioning.Storage;

/// <summary>A versioned schema step. Applied once, in order, inside a transaction.</summary>
public sealed record Migration(int Version, string Name, string Sql);

/// <summary>The schema, as an ordered list of migrations shared by every SQL provider.</summary>
public static class Migrations
{
    public static IReadOnlyList<Migration> All { get; } =
    [
        new(1, "audit log", """
            CREATE TABLE audit_log (
                id {id},
                time_ms {bigint} NOT NULL,
                actor {text} NOT NULL,
                action {text} NOT NULL,
                target {text},
                source {text} NOT NULL,
                outcome {text} NOT NULL,
                detail {text}
            );
            CREATE INDEX ix_audit_log_time ON audit_log (time_ms);
            CREATE INDEX ix_audit_log_action ON audit_log (action);
            """),
    ];

    public static int Latest => All[^1].Version;
}
