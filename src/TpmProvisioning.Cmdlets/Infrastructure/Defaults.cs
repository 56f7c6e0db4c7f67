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
}
