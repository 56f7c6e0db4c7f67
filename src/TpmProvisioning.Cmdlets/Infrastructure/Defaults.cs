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
}
