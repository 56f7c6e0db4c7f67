using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Loader;

namespace TpmProvisioning.Cmdlets;

/// <summary>
/// Resolves (1) the module's own managed and native dependencies from the module folder and (2) the
/// ASP.NET Core shared framework (Microsoft.AspNetCore.App) of the running runtime's major.minor line,
/// which pwsh's runtimeconfig does not list. Probes: beside the running Microsoft.NETCore.App, then
/// DOTNET_ROOT, then the usual install folders.
/// </summary>
internal static class AssemblyResolver
{
    private static int s_registered;
    private static readonly string ModuleDirectory = Path.GetDirectoryName(typeof(AssemblyResolver).Assembly.Location) ?? AppContext.BaseDirectory;
    private static readonly Lazy<(string? Found, IReadOnlyList<string> Tried)> AspNet = new(() => LocateAspNetCore(
        RuntimeEnvironment.GetRuntimeDirectory(), Environment.Version, Environment.GetEnvironmentVariable("DOTNET_ROOT")));

    public static void EnsureRegistered()
    {
        if (Interlocked.Exchange(ref s_registered, 1) == 1) return;
        AssemblyLoadContext.Default.Resolving += OnResolving;
        AssemblyLoadContext.Default.ResolvingUnmanagedDll += OnResolvingUnmanaged;
    }

    /// <summary>The ASP.NET Core shared framework folder in use, or null; and every folder probed.</summary>
    public static (string? Found, IReadOnlyList<string> Tried) AspNetCoreFramework => AspNet.Value;

    private static Assembly? OnResolving(AssemblyLoadContext alc, AssemblyName name)
    {
        if (name.Name is null) return null;
        var local = Path.Combine(ModuleDirectory, name.Name + ".dll");
        if (File.Exists(local)) return alc.LoadFromAssemblyPath(local);
        if (AspNet.Value.Found is { } fx)
        {
            var shared = Path.Combine(fx, name.Name + ".dll");
            if (File.Exists(shared)) return alc.LoadFromAssemblyPath(shared);
        }
        return null;
    }

    private static IntPtr OnResolvingUnmanaged(Assembly assembly, string name)
    {
        foreach (var candidate in NativeCandidates(name))
        {
            if (File.Exists(candidate) && NativeLibrary.TryLoad(candidate, out var handle)) return handle;
        }
        return IntPtr.Zero;
    }

    private static IEnumerable<string> NativeCandidates(string name)
    {
        string file = OperatingSystem.IsWindows() ? name + ".dll" : OperatingSystem.IsMacOS() ? "lib" + name + ".dylib" : "lib" + name + ".so";
        string arch = RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant();
        string os = OperatingSystem.IsWindows() ? "win" : OperatingSystem.IsMacOS() ? "osx" : "linux";
        var rids = new List<string> { RuntimeInformation.RuntimeIdentifier, $"{os}-{arch}" };
        if (os == "linux" && File.Exists("/etc/alpine-release")) rids.Insert(1, $"linux-musl-{arch}");
        foreach (var rid in rids.Distinct())
            yield return Path.Combine(ModuleDirectory, "runtimes", rid, "native", file);
        yield return Path.Combine(ModuleDirectory, file);
    }

    /// <summary>Finds Microsoft.AspNetCore.App of the same major.minor as <paramref name="runtimeVersion"/>. Pure function of its inputs and the file system, for tests.</summary>
    internal static (string? Found, IReadOnlyList<string> Tried) LocateAspNetCore(string runtimeDirectory, Version runtimeVersion, string? dotnetRoot)
    {
        var roots = new List<string>();
        // <root>/shared/Microsoft.NETCore.App/<version>/ -> <root>
        var rt = new DirectoryInfo(runtimeDirectory.TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar));
        if (rt.Parent?.Parent?.Parent is { } root && rt.Parent.Name == "Microsoft.NETCore.App") roots.Add(root.FullName);
        if (!string.IsNullOrEmpty(dotnetRoot)) roots.Add(dotnetRoot);
        if (OperatingSystem.IsWindows())
        {
            roots.Add(Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.ProgramFiles), "dotnet"));
        }
        else
        {
            roots.AddRange(["/usr/share/dotnet", "/usr/lib/dotnet", "/usr/local/share/dotnet", "/opt/dotnet", "/usr/local/lib/dotnet"]);
            var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
            if (!string.IsNullOrEmpty(home)) roots.Add(Path.Combine(home, ".dotnet"));
            if (OperatingSystem.IsMacOS()) roots.Add("/opt/homebrew/share/dotnet");
        }

        var tried = new List<string>();
        string exact = rt.Name; // e.g. 10.0.12 when running from a shared install
        foreach (var r in roots.Distinct(StringComparer.Ordinal))
        {
            var fxRoot = Path.Combine(r, "shared", "Microsoft.AspNetCore.App");
            tried.Add(fxRoot);
            if (!Directory.Exists(fxRoot)) continue;
            var exactDir = Path.Combine(fxRoot, exact);
            if (File.Exists(Path.Combine(exactDir, "Microsoft.AspNetCore.dll"))) return (exactDir, tried);
            var best = Directory.GetDirectories(fxRoot)
                .Select(d => (Dir: d, V: Version.TryParse(Path.GetFileName(d).Split('-')[0], out var v) ? v : null))
                .Where(x => x.V is not null && x.V.Major == runtimeVersion.Major && x.V.Minor == runtimeVersion.Minor && File.Exists(Path.Combine(x.Dir, "Microsoft.AspNetCore.dll")))
                .OrderByDescending(x => x.V)
                .FirstOrDefault();
            if (best.Dir is not null) return (best.Dir, tried);
        }
        return (null, tried);
    }
}
