using System.Management.Automation;

namespace TpmProvisioning.Cmdlets;

/// <summary>
/// Runs when the module is imported. Registers, once per process, the resolver that finds our own
/// dependencies in the module folder and the ASP.NET Core shared framework that pwsh's runtime config does not name.
/// </summary>
public sealed class ModuleInitializer : IModuleAssemblyInitializer, IModuleAssemblyCleanup
{
    /// <summary>Called by PowerShell on Import-Module (once per runspace); the resolver registers once per process.</summary>
    public void OnImport() => AssemblyResolver.EnsureRegistered();

    /// <summary>Called by PowerShell on Remove-Module. The resolver stays: assemblies cannot be unloaded.</summary>
    public void OnRemove(PSModuleInfo psModuleInfo) { }
}
