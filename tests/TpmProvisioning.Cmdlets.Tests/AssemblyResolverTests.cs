using TpmProvisioning.Cmdlets;

namespace TpmProvisioning.Tests;

public sealed class AssemblyResolverTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("tpmprov-fx-").FullName;
    public void Dispose() => Directory.Delete(_root, true);

    private string MakeFx(string root, string name, string version, bool withMarker = true)
    {
        var dir = Path.Combine(root, "shared", name, version);
        Directory.CreateDirectory(dir);
        if (withMarker) File.WriteAllText(Path.Combine(dir, name == "Microsoft.AspNetCore.App" ? "Microsoft.AspNetCore.dll" : "System.Runtime.dll"), "");
        return dir;
    }

    [Fact]
    public void PrefersTheExactVersionBesideTheRunningRuntime()
    {
        var rt = MakeFx(_root, "Microsoft.NETCore.App", "10.0.12");
        MakeFx(_root, "Microsoft.AspNetCore.App", "10.0.9");
        var exact = MakeFx(_root, "Microsoft.AspNetCore.App", "10.0.12");
        var (found, tried) = AssemblyResolver.LocateAspNetCore(rt + "/", new Version(10, 0, 12), null);
        Assert.Equal(exact, found);
        Assert.Equal(Path.Combine(_root, "shared", "Microsoft.AspNetCore.App"), tried[0]);
    }

    [Fact]
    public void FallsBackToTheNewestOfTheSameMajorMinorAndIgnoresOtherLines()
    {
        var rt = MakeFx(_root, "Microsoft.NETCore.App", "10.0.12");
        MakeFx(_root, "Microsoft.AspNetCore.App", "9.0.30");
        MakeFx(_root, "Microsoft.AspNetCore.App", "11.0.1");
        MakeFx(_root, "Microsoft.AspNetCore.App", "10.0.3");
        var best = MakeFx(_root, "Microsoft.AspNetCore.App", "10.0.7");
        MakeFx(_root, "Microsoft.AspNetCore.App", "10.0.99", withMarker: false); // empty folder: not an install
        var (found, _) = AssemblyResolver.LocateAspNetCore(rt, new Version(10, 0, 12), null);
        Assert.Equal(best, found);
    }

    [Fact]
    public void ProbesDotnetRootWhenTheRuntimeFolderHasNoAspNetCore()
    {
        var selfContained = Path.Combine(_root, "pwsh");   // a self-contained pwsh: no shared/ tree
        Directory.CreateDirectory(selfContained);
        var dotnetRoot = Path.Combine(_root, "dotnet");
        var fx = MakeFx(dotnetRoot, "Microsoft.AspNetCore.App", "10.0.1");
        var (found, tried) = AssemblyResolver.LocateAspNetCore(selfContained, new Version(10, 0, 12), dotnetRoot);
        Assert.Equal(fx, found);
        Assert.Equal(Path.Combine(dotnetRoot, "shared", "Microsoft.AspNetCore.App"), tried[0]);
    }

    [Fact]
    public void ReportsEveryPathTriedWhenNothingIsFound()
    {
        var (found, tried) = AssemblyResolver.LocateAspNetCore(Path.Combine(_root, "none"), new Version(99, 0, 0), Path.Combine(_root, "alsonone"));
        Assert.Null(found);
        Assert.Contains(Path.Combine(_root, "alsonone", "shared", "Microsoft.AspNetCore.App"), tried);
        Assert.True(tried.Count >= 2);
    }
}
