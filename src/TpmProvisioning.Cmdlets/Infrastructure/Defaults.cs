namespace TpmProvisioning.Cmdlets;

internal static class Defaults
{
    /// <summary>Where servers keep their store, CA and logs when no -DataPath is given.</summary>
    public static string DataPath
    {
        get
        {
            var env = Environment.GetEnvironmentVariable("TPMPROV_DATA");
            if (!string.IsNullOrEmpty(env)) return env;
            var baseDir = Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData, Environment.SpecialFolderOption.Create);
            if (string.IsNullOrEmpty(baseDir)) baseDir = Path.Combine(Path.GetTempPath(), Environment.UserName);
            return Path.Combine(baseDir, "TpmProvisioning");
        }
    }

    /// <summary>The store file of a data path.</summary>
    public static string StoreFile(string dataPath) => Path.Combine(dataPath, "tpmprovisioning.db");

    /// <summary>
    /// The one error every cmdlet that reads a data path gives when there is no store there (a mistyped -DataPath, or no server
    /// ever started there): StoreNotFound, ObjectNotFound, never an empty answer that looks like an empty fleet.
    /// </summary>
    public static System.Management.Automation.ErrorRecord StoreNotFound(string dataPath) => new(
        new System.Management.Automation.ItemNotFoundException($"No store at '{StoreFile(dataPath)}': check -DataPath (a server creates its store when it first starts there)."),
        "StoreNotFound", System.Management.Automation.ErrorCategory.ObjectNotFound, dataPath);

    /// <summary>
    /// A data path that cannot hold a store (a file in its way, no rights): DataPathNotWritable (PermissionDenied), said in the
    /// module's words instead of an IOException's.
    /// </summary>
    public static System.Management.Automation.ErrorRecord DataPathNotWritable(string dataPath, Exception ex) => new(
        new UnauthorizedAccessException($"The data path '{dataPath}' cannot be used: {ex.Message} Check -DataPath (a folder this account may write).", ex),
        "DataPathNotWritable", System.Management.Automation.ErrorCategory.PermissionDenied, dataPath);

    /// <summary>True for the failures of making or writing a folder or file that the user can fix by choosing another path.</summary>
    public static bool IsPathFailure(Exception ex) => ex is IOException or UnauthorizedAccessException or System.Security.SecurityException or NotSupportedException or ArgumentException;

    /// <summary>
    /// Opens the store of a data path for a cmdlet (<see cref="DataPathStore"/>: the PostgreSQL store its server recorded there,
    /// else its SQLite file): StoreNotFound (terminating) when there is none and <paramref name="mayCreate"/> is false;
    /// DataPathNotWritable when the folder cannot be made; StoreCredentialRequired/Refused when PostgreSQL wants another password;
    /// StoreUnavailable when the store does not open.
    /// </summary>
    public static TpmProvisioning.Storage.IStore OpenStore(System.Management.Automation.PSCmdlet cmdlet, string dataPath, bool mayCreate,
        System.Management.Automation.PSCredential? storeCredential = null) =>
        DataPathStore.Open(cmdlet, dataPath, mayCreate, storeCredential);

    /// <summary>Whether a cmdlet makes things (New-, Set-, Add-, Import-): those may create a data path's store, the others only read one.</summary>
    public static bool Creates(System.Management.Automation.PSCmdlet cmdlet) =>
        cmdlet.MyInvocation.MyCommand is System.Management.Automation.CmdletInfo { Verb: "New" or "Set" or "Add" or "Import" };

    /// <summary>A file that could not be written: FolderNotFound (ObjectNotFound), else FileNotWritable (PermissionDenied or WriteError).</summary>
    public static System.Management.Automation.ErrorRecord FileWriteError(Exception ex, string target)
    {
        var notFound = ex is DirectoryNotFoundException || (ex is IOException && !Directory.Exists(Path.GetDirectoryName(target)));
        var category = notFound ? System.Management.Automation.ErrorCategory.ObjectNotFound
            : ex is UnauthorizedAccessException ? System.Management.Automation.ErrorCategory.PermissionDenied : System.Management.Automation.ErrorCategory.WriteError;
        var message = notFound ? $"Cannot write '{target}': its folder does not exist." : $"Cannot write '{target}': {ex.Message}";
        return new(new IOException(message, ex), notFound ? "FolderNotFound" : "FileNotWritable", category, target);
    }
}
