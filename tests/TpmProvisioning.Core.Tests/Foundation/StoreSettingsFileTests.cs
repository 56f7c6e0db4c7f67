using System.Text.Json;
using Npgsql;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Tests.Foundation;

/// <summary>
/// What a data path remembers of its PostgreSQL store (<c>store.settings.json</c>): the connection string without any
/// password, read back as written, removed for SQLite, refused when damaged; and the connection string the admin cmdlets
/// open it with. (The environment variable routes are covered by tests/Pester/ClusterDataPath.Tests.ps1 in a process of
/// their own: changing TPMPROVISIONING_STORE here would move the servers other tests start.)
/// </summary>
public sealed class StoreSettingsFileTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("tpmprov-storesettings-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    [Fact]
    public void RecordsTheConnectionStringWithoutItsPasswordsOwnerOnly()
    {
        StoreSettingsFile.Record(_dir, "Host=db1.example.net;Port=5433;Database=fleet;Username=tpmprov;Password=hunter2secret;SSL Password=keypass77;Maximum Pool Size=25");
        string raw = File.ReadAllText(StoreSettingsFile.PathOf(_dir));
        Assert.DoesNotContain("hunter2secret", raw);
        Assert.DoesNotContain("keypass77", raw);
        Assert.DoesNotContain("Password", raw, StringComparison.OrdinalIgnoreCase);
        using (var doc = JsonDocument.Parse(raw)) Assert.Equal("postgresql", doc.RootElement.GetProperty("kind").GetString());
        if (!OperatingSystem.IsWindows())
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(StoreSettingsFile.PathOf(_dir)));

        var read = StoreSettingsFile.Read(_dir);
        Assert.NotNull(read);
        var b = new NpgsqlConnectionStringBuilder(read!.ConnectionString);
        Assert.Equal(("db1.example.net", 5433, "fleet", "tpmprov", 25), (b.Host, b.Port, b.Database, b.Username, b.MaxPoolSize));
        Assert.Null(b.Password);
        Assert.Equal("Host=db1.example.net;Port=5433;Database=fleet;Username=tpmprov", read.Description);
    }

    [Fact]
    public void ASqliteStartRemovesTheFileAndNoFileMeansSqlite()
    {
        Assert.Null(StoreSettingsFile.Read(_dir));
        StoreSettingsFile.Record(_dir, "Host=db1;Database=fleet");
        Assert.NotNull(StoreSettingsFile.Read(_dir));
        StoreSettingsFile.Record(_dir, null);
        Assert.False(File.Exists(StoreSettingsFile.PathOf(_dir)));
        Assert.Null(StoreSettingsFile.Read(_dir));
    }

    [Theory]
    [InlineData("not json")]
    [InlineData("[1,2]")]
    [InlineData("{\"kind\":\"mysql\",\"connectionString\":\"Host=db1\"}")]
    [InlineData("{\"kind\":\"postgresql\",\"connectionString\":\"Database=fleet\"}")]
    [InlineData("{\"kind\":\"postgresql\"}")]
    public void ADamagedFileIsInvalidDataNeverSqlite(string content)
    {
        File.WriteAllText(StoreSettingsFile.PathOf(_dir), content);
        Assert.Throws<InvalidDataException>(() => StoreSettingsFile.Read(_dir));
    }

    [Fact]
    public void ACredentialGivesUserAndPassword()
    {
        var remembered = new StoreSettingsFile.Remembered(StoreSettingsFile.PostgreSql, "Host=db1;Database=fleet;Username=node");
        var cs = StoreSettingsFile.ConnectionStringFor(remembered, "admin", "pw-1", out var source);
        Assert.Equal(StoreSettingsFile.PasswordSource.Credential, source);
        var b = new NpgsqlConnectionStringBuilder(cs);
        Assert.Equal(("admin", "pw-1", "fleet"), (b.Username, b.Password, b.Database));

        var session = new NpgsqlConnectionStringBuilder(StoreSettingsFile.WithSession(cs, "TpmProvisioning admin", 4));
        Assert.Equal(("TpmProvisioning admin", 4), (session.ApplicationName, session.MaxPoolSize));
    }

    [Fact]
    public void TellsAMissingPasswordFromARefusedOne()
    {
        Assert.True(StoreSettingsFile.IsAuthenticationFailure(new StoreUnavailableException("x", new NpgsqlException("No password has been provided but the backend requires one (in SASL/SCRAM-SHA-256)")), out bool none));
        Assert.True(none);
        Assert.True(StoreSettingsFile.IsAuthenticationFailure(new PostgresException("password authentication failed", "FATAL", "FATAL", PostgresErrorCodes.InvalidPassword), out none));
        Assert.False(none);
        Assert.False(StoreSettingsFile.IsAuthenticationFailure(new StoreUnavailableException("x", new NpgsqlException("Failed to connect")), out _));
        Assert.False(StoreSettingsFile.IsAuthenticationFailure(new PostgresException("too many clients", "FATAL", "FATAL", PostgresErrorCodes.TooManyConnections), out _));
    }
}
