using System.Text.Json;
using Npgsql;

namespace TpmProvisioning.Storage;

/// <summary>
/// Where a data path's store is when it is not the SQLite file there: <c>&lt;DataPath&gt;/store.settings.json</c>, written by a
/// server that starts on the data path with a PostgreSQL store (its kind and its connection string WITHOUT the password, which
/// is never written anywhere) and removed when a server starts there on SQLite. The admin cmdlets that take <c>-DataPath</c>
/// read it to open the same store the server uses, so they neither report <c>StoreNotFound</c> nor read a stale SQLite file.
/// The same pattern as the KMS's <c>kms/master-key.settings.json</c>: what to open, never a secret.
/// </summary>
public static class StoreSettingsFile
{
    public const string FileName = "store.settings.json";

    /// <summary>The kind written for a PostgreSQL store.</summary>
    public const string PostgreSql = "postgresql";

    /// <summary>What a data path remembers of its store: the kind and a connection string without password.</summary>
    public sealed record Remembered(string Kind, string ConnectionString)
    {
        /// <summary>Host, port, database and user, for messages.</summary>
        public string Description => PostgresStore.Describe(ConnectionString);
    }

    public static string PathOf(string dataPath) => Path.Combine(dataPath, FileName);

    /// <summary>
    /// Records the store a server on <paramref name="dataPath"/> opened: a PostgreSQL connection string (its secrets are dropped
    /// first), or null for the data path's own SQLite file (the settings file is then removed). Owner-only, as the rest of the
    /// data path.
    /// </summary>
    public static void Record(string dataPath, string? connectionString)
    {
        var file = PathOf(dataPath);
        if (string.IsNullOrWhiteSpace(connectionString))
        {
            if (File.Exists(file)) File.Delete(file);
            return;
        }
        var json = JsonSerializer.Serialize(new Dictionary<string, string>
        {
            ["kind"] = PostgreSql,
            ["connectionString"] = WithoutSecrets(connectionString),
        }, new JsonSerializerOptions { WriteIndented = true });
        var temp = file + ".tmp";
        PrivateFiles.WriteAllText(temp, json + Environment.NewLine);
        File.Move(temp, file, overwrite: true);
    }

    /// <summary>
    /// The store a data path remembers, or null when it has no settings file (its store is the SQLite file there, if any).
    /// </summary>
    /// <exception cref="InvalidDataException">The file is there but cannot be read or names no usable store.</exception>
    public static Remembered? Read(string dataPath)
    {
        var file = PathOf(dataPath);
        if (!File.Exists(file)) return null;
        string text;
        try { text = File.ReadAllText(file); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new InvalidDataException($"'{file}' cannot be read: {ex.Message}", ex);
        }
        try
        {
            using var doc = JsonDocument.Parse(text);
            var root = doc.RootElement;
            string? kind = root.ValueKind == JsonValueKind.Object && root.TryGetProperty("kind", out var k) && k.ValueKind == JsonValueKind.String ? k.GetString() : null;
            string? cs = root.ValueKind == JsonValueKind.Object && root.TryGetProperty("connectionString", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString() : null;
            if (!string.Equals(kind, PostgreSql, StringComparison.OrdinalIgnoreCase))
                throw new InvalidDataException($"'{file}' names a store of kind '{kind}'; only '{PostgreSql}' is known.");
            if (!PostgresStore.IsPostgresConnectionString(cs))
                throw new InvalidDataException($"'{file}' has no PostgreSQL connection string with a Host.");
            return new Remembered(PostgreSql, cs!);
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"'{file}' is not valid JSON: {ex.Message}", ex);
        }
    }

    /// <summary><paramref name="connectionString"/> without its password (and the client key's password).</summary>
    public static string WithoutSecrets(string connectionString)
    {
        var b = new NpgsqlConnectionStringBuilder(connectionString) { Password = null, SslPassword = null };
        b.Remove("Password");
        b.Remove("SSL Password");
        return b.ConnectionString;
    }

    /// <summary>Where the password of a remembered store came from (for messages; never the password itself).</summary>
    public enum PasswordSource
    {
        /// <summary>None given here: Npgsql looks at PGPASSWORD and the password file (~/.pgpass, or PGPASSFILE).</summary>
        Npgsql,
        /// <summary>The cmdlet's -StoreCredential.</summary>
        Credential,
        /// <summary>TPMPROVISIONING_STORE naming the same host, port and database with a Password.</summary>
        Environment,
    }

    /// <summary>
    /// The connection string to open a remembered store with: the user and password of a credential when one is given; else those
    /// of <c>TPMPROVISIONING_STORE</c> when it names the same host, port and database and has a password; else the remembered
    /// string as it is, for Npgsql to find the password in <c>PGPASSWORD</c> or the password file (<c>~/.pgpass</c>, or the file
    /// <c>PGPASSFILE</c> names).
    /// </summary>
    public static string ConnectionStringFor(Remembered remembered, string? userName, string? password, out PasswordSource source)
    {
        ArgumentNullException.ThrowIfNull(remembered);
        var b = new NpgsqlConnectionStringBuilder(remembered.ConnectionString);
        if (userName is not null || password is not null)
        {
            if (!string.IsNullOrEmpty(userName)) b.Username = userName;
            b.Password = password;
            source = PasswordSource.Credential;
            return b.ConnectionString;
        }
        var env = Environment.GetEnvironmentVariable(Hosting.ServerOptions.StoreConnectionStringVariable);
        if (PostgresStore.IsPostgresConnectionString(env))
        {
            var e = new NpgsqlConnectionStringBuilder(env);
            if (!string.IsNullOrEmpty(e.Password) && SameDatabase(b, e))
            {
                if (!string.IsNullOrEmpty(e.Username)) b.Username = e.Username;
                b.Password = e.Password;
                source = PasswordSource.Environment;
                return b.ConnectionString;
            }
        }
        source = PasswordSource.Npgsql;
        return b.ConnectionString;
    }

    /// <summary><paramref name="connectionString"/> with this Application Name (shown in pg_stat_activity) and Maximum Pool Size.</summary>
    public static string WithSession(string connectionString, string applicationName, int maxPoolSize) =>
        new NpgsqlConnectionStringBuilder(connectionString) { ApplicationName = applicationName, MaxPoolSize = maxPoolSize }.ConnectionString;

    /// <summary>
    /// True when opening a PostgreSQL store failed on authentication: no password to answer the server's request (Npgsql found
    /// none), or the server refused the one given (28P01, 28000).
    /// </summary>
    public static bool IsAuthenticationFailure(Exception ex, out bool noPassword)
    {
        for (Exception? e = ex; e is not null; e = e.InnerException)
        {
            if (e is PostgresException { SqlState: PostgresErrorCodes.InvalidPassword or PostgresErrorCodes.InvalidAuthorizationSpecification })
            {
                noPassword = false;
                return true;
            }
            if (e is NpgsqlException && e.Message.StartsWith("No password has been provided", StringComparison.Ordinal))
            {
                noPassword = true;
                return true;
            }
        }
        noPassword = false;
        return false;
    }

    private static bool SameDatabase(NpgsqlConnectionStringBuilder a, NpgsqlConnectionStringBuilder b) =>
        string.Equals(a.Host, b.Host, StringComparison.OrdinalIgnoreCase) && a.Port == b.Port
        && string.Equals(a.Database ?? a.Username, b.Database ?? b.Username, StringComparison.Ordinal);
}
