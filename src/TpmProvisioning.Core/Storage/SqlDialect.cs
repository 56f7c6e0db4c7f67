namespace TpmProvisioning.Storage;

/// <summary>
/// The few places where SQL differs between the providers. Migrations are written once with
/// tokens (<c>{id}</c>, <c>{blob}</c>, <c>{bigint}</c>, <c>{text}</c>) that each dialect expands;
/// everything else is portable SQL with named parameters (<c>@name</c>) understood by both
/// Microsoft.Data.Sqlite and Npgsql.
/// </summary>
public abstract class SqlDialect
{
    public abstract string Name { get; }
    /// <summary>An auto-incrementing 64-bit primary key column type.</summary>
    public abstract string IdentityColumn { get; }
    public abstract string BlobType { get; }
    public virtual string BigIntType => "BIGINT";
    public virtual string TextType => "TEXT";

    public string Expand(string sql) => sql
        .Replace("{id}", IdentityColumn)
        .Replace("{blob}", BlobType)
        .Replace("{bigint}", BigIntType)
        .Replace("{text}", TextType);

    /// <summary>SQL returning the id of the row just inserted, appended to an INSERT.</summary>
    public abstract string ReturningId { get; }

    /// <summary>An expression for the database's clock in Unix milliseconds (servers sharing a store agree on it).</summary>
    public abstract string NowMs { get; }
}

public sealed class SqliteDialect : SqlDialect
{
    public override string Name => "sqlite";
    public override string IdentityColumn => "INTEGER PRIMARY KEY AUTOINCREMENT";
    public override string BlobType => "BLOB";
    public override string ReturningId => " RETURNING id";
    public override string NowMs => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
}

public sealed class PostgresDialect : SqlDialect
{
    public override string Name => "postgresql";
    public override string IdentityColumn => "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY";
    public override string BlobType => "BYTEA";
    public override string ReturningId => " RETURNING id";
    public override string NowMs => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";
}
