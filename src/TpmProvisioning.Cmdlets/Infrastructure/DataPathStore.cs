using System.Management.Automation;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Cmdlets;

/// <summary>A data path's store could not be opened: the error record a cmdlet reports (thrown where no cmdlet is at hand).</summary>
internal sealed class DataPathStoreException(ErrorRecord record) : Exception(record.Exception.Message, record.Exception)
{
    public ErrorRecord Record { get; } = record;
}

/// <summary>
/// The one place the cmdlets open a data path's store. A data path's store is the PostgreSQL database its
/// <c>store.settings.json</c> names (written by a server started there with <c>-StoreConnectionString</c> or
/// <c>TPMPROVISIONING_STORE</c>; no password in it), else its SQLite file <c>tpmprovisioning.db</c>. The password of a
/// PostgreSQL store comes from <c>-StoreCredential</c> where a cmdlet takes it, else from <c>TPMPROVISIONING_STORE</c> when it names
/// the same host, port and database, else from what Npgsql reads itself: <c>PGPASSWORD</c>, then the password file
/// (<c>~/.pgpass</c>, or the file <c>PGPASSFILE</c> names). Errors: StoreNotFound, DataPathNotWritable, StoreSettingsInvalid,
/// StoreCredentialRequired, StoreCredentialRefused, StoreUnavailable; none repeats a password.
/// </summary>
internal static class DataPathStore
{
    /// <summary>The Application Name an admin cmdlet's PostgreSQL session shows in pg_stat_activity.</summary>
    public const string AdminApplicationName = "TpmProvisioning admin";

    /// <summary>Most PostgreSQL connections one admin cmdlet holds at a time.</summary>
    public const int AdminMaxPoolSize = 4;

    /// <summary>True when the data path has a store: a settings file naming one, or its SQLite file.</summary>
    public static bool Exists(string dataPath) =>
        File.Exists(StoreSettingsFile.PathOf(dataPath)) || File.Exists(Defaults.StoreFile(dataPath));

    /// <summary>
    /// Opens the data path's store (PostgreSQL when its settings file names one, else its SQLite file, created when
    /// <paramref name="mayCreate"/>). <paramref name="credentialParameter"/>: the cmdlet takes -StoreCredential (said in the error
    /// when a password is missing). Throws <see cref="DataPathStoreException"/>.
    /// </summary>
    public static async Task<IStore> OpenAsync(string dataPath, bool mayCreate, PSCredential? credential = null, bool credentialParameter = false, CancellationToken ct = default)
    {
        StoreSettingsFile.Remembered? remembered;
        try { remembered = StoreSettingsFile.Read(dataPath); }
        catch (InvalidDataException ex)
        {
            throw new DataPathStoreException(new ErrorRecord(
                new InvalidDataException($"The data path '{dataPath}' does not say where its store is: {ex.Message} Start its server again (it rewrites the file), or remove the file to use the data path's SQLite store.", ex),
                "StoreSettingsInvalid", ErrorCategory.InvalidData, dataPath));
        }
        if (remembered is not null) return await OpenPostgresAsync(dataPath, remembered, credential, credentialParameter, ct).ConfigureAwait(false);

        if (!mayCreate && !File.Exists(Defaults.StoreFile(dataPath))) throw new DataPathStoreException(Defaults.StoreNotFound(dataPath));
        try { PrivateFiles.CreateFolder(dataPath); }
        catch (Exception ex) when (Defaults.IsPathFailure(ex))
        {
            throw new DataPathStoreException(Defaults.DataPathNotWritable(dataPath, ex));
        }
        try { return await SqliteStore.OpenInDataPathAsync(dataPath, ct).ConfigureAwait(false); }
        catch (Exception ex) when (ex is not (PipelineStoppedException or OperationCanceledException))
        {
            throw new DataPathStoreException(new ErrorRecord(ex, "StoreUnavailable", ErrorCategory.ResourceUnavailable, dataPath));
        }
    }

    private static async Task<IStore> OpenPostgresAsync(string dataPath, StoreSettingsFile.Remembered remembered, PSCredential? credential, bool credentialParameter, CancellationToken ct)
    {
        string where = $"PostgreSQL at {remembered.Description}";
        var cs = StoreSettingsFile.ConnectionStringFor(remembered, credential?.UserName, credential?.GetNetworkCredential().Password, out var source);
        // An admin session is small and named apart from the nodes in pg_stat_activity (docs/cluster.md, sizing).
        cs = StoreSettingsFile.WithSession(cs, AdminApplicationName, AdminMaxPoolSize);
        try { return await PostgresStore.OpenAsync(cs, ct).ConfigureAwait(false); }
        catch (Exception ex) when (StoreSettingsFile.IsAuthenticationFailure(ex, out bool noPassword))
        {
            string ways = (credentialParameter ? "give -StoreCredential, or " : "") +
                $"set PGPASSWORD, or put a line for it in the PostgreSQL password file (~/.pgpass, or the file PGPASSFILE names), or set {TpmProvisioning.Hosting.ServerOptions.StoreConnectionStringVariable} to a connection string with the same Host, Port and Database and a Password";
            if (noPassword)
                throw new DataPathStoreException(new ErrorRecord(new System.Security.Authentication.AuthenticationException(
                        $"The store of data path '{dataPath}' is {where}, and it asks for a password that nothing here gave: {ways}.", ex),
                    "StoreCredentialRequired", ErrorCategory.AuthenticationError, dataPath));
            string from = source switch
            {
                StoreSettingsFile.PasswordSource.Credential => "-StoreCredential",
                StoreSettingsFile.PasswordSource.Environment => TpmProvisioning.Hosting.ServerOptions.StoreConnectionStringVariable,
                _ => "PGPASSWORD or the password file",
            };
            throw new DataPathStoreException(new ErrorRecord(new System.Security.Authentication.AuthenticationException(
                    $"The store of data path '{dataPath}' is {where}, and it refused the user name and password from {from}: check them ({ways}).", ex),
                "StoreCredentialRefused", ErrorCategory.AuthenticationError, dataPath));
        }
        catch (ArgumentException ex)
        {
            throw new DataPathStoreException(new ErrorRecord(
                new InvalidDataException($"The store connection string in '{StoreSettingsFile.PathOf(dataPath)}' does not parse: {ex.Message}", ex),
                "StoreSettingsInvalid", ErrorCategory.InvalidData, dataPath));
        }
        catch (Exception ex) when (ex is StoreUnavailableException or System.Data.Common.DbException or TimeoutException or IOException or System.Net.Sockets.SocketException)
        {
            throw new DataPathStoreException(new ErrorRecord(
                new StoreUnavailableException($"The store of data path '{dataPath}' is {where} and cannot be opened: {ex.Message}", ex),
                "StoreUnavailable", ErrorCategory.ResourceUnavailable, dataPath));
        }
    }

    /// <summary>Whether <paramref name="cmdlet"/> has a -StoreCredential parameter (to name it in errors).</summary>
    private static bool TakesCredential(PSCmdlet cmdlet) =>
        cmdlet.MyInvocation.MyCommand?.Parameters?.ContainsKey("StoreCredential") == true;

    /// <summary>Opens the data path's store for a cmdlet; every failure is a terminating error.</summary>
    public static IStore Open(PSCmdlet cmdlet, string dataPath, bool mayCreate, PSCredential? credential = null)
    {
        try { return OpenAsync(dataPath, mayCreate, credential, TakesCredential(cmdlet)).GetAwaiter().GetResult(); }
        catch (DataPathStoreException ex)
        {
            cmdlet.ThrowTerminatingError(ex.Record);
            throw;
        }
    }

    /// <summary>
    /// The data path's store if it has one; otherwise a non-terminating StoreNotFound and null (nothing is created by reading).
    /// Other failures are terminating.
    /// </summary>
    public static IStore? OpenExisting(PSCmdlet cmdlet, string dataPath, PSCredential? credential = null)
    {
        if (!Exists(dataPath))
        {
            cmdlet.WriteError(Defaults.StoreNotFound(dataPath));
            return null;
        }
        return Open(cmdlet, dataPath, mayCreate: false, credential);
    }
}
