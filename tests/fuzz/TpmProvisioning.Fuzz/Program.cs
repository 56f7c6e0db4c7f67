using System.Diagnostics;
using SharpFuzz;

namespace TpmProvisioning.Fuzz;

/// <summary>
/// Entry point. <c>dotnet TpmProvisioning.Fuzz.dll &lt;target&gt;</c> runs one target under afl-fuzz (input on stdin, SharpFuzz's
/// out-of-process fork server, so a hang or a stack overflow does not end the campaign); <c>--replay</c> runs files
/// in-process and reports any unexpected exception; <c>--seeds</c> writes the generated seed inputs.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help")
        {
            Console.Error.WriteLine("usage: TpmProvisioning.Fuzz <target>                        run under afl-fuzz (input on stdin)");
            Console.Error.WriteLine("       TpmProvisioning.Fuzz --list                          list the targets");
            Console.Error.WriteLine("       TpmProvisioning.Fuzz --replay <target> <file|dir>... run inputs in-process; exit 1 on a crash");
            Console.Error.WriteLine("       TpmProvisioning.Fuzz --seeds <corpus-root> [target]  write generated seeds to <corpus-root>/<target>/");
            return args.Length == 0 ? 2 : 0;
        }
        switch (args[0])
        {
            case "--list":
                foreach (var t in Targets.All) Console.WriteLine($"{t.Name,-24} {t.Description}");
                return 0;
            case "--replay":
                if (args.Length < 3) { Console.Error.WriteLine("--replay needs a target and at least one file or folder"); return 2; }
                return Replay(Targets.Get(args[1]), args[2..]);
            case "--seeds":
                if (args.Length < 2) { Console.Error.WriteLine("--seeds needs the corpus root"); return 2; }
                foreach (var t in Targets.All.Where(t => args.Length < 3 || t.Name == args[2]))
                {
                    var dir = Directory.CreateDirectory(Path.Combine(args[1], t.Name)).FullName;
                    int n = 0;
                    foreach (var (name, data) in t.Seeds()) { File.WriteAllBytes(Path.Combine(dir, "seed-" + name), data); n++; }
                    Console.WriteLine($"{t.Name}: {n} seeds in {dir}");
                }
                return 0;
        }
        var target = Targets.Get(args[0]);
        Fuzzer.OutOfProcess.Run(stream =>
        {
            using var ms = new MemoryStream();
            stream.CopyTo(ms);
            target.Run(ms.ToArray());
        });
        return 0;
    }

    /// <summary>Runs every input; an exception escaping the target is a crash (printed with its input and stack).</summary>
    private static unsafe int Replay(FuzzTarget target, string[] paths)
    {
        // An instrumented engine writes its branch trace to afl's shared memory; outside afl-fuzz it gets a private bitmap.
        SharpFuzz.Common.Trace.SharedMem = (byte*)System.Runtime.InteropServices.NativeMemory.AllocZeroed(1 << 16);
        var files = new List<string>();
        foreach (var p in paths)
        {
            if (Directory.Exists(p)) files.AddRange(Directory.EnumerateFiles(p, "*", SearchOption.AllDirectories).Where(f => !Path.GetFileName(f).StartsWith('.')).Order(StringComparer.Ordinal));
            else if (File.Exists(p)) files.Add(p);
            else { Console.Error.WriteLine($"{target.Name}: no such file or folder: {p}"); return 2; }
        }
        var sw = Stopwatch.StartNew();
        int crashes = 0;
        foreach (var f in files)
        {
            try { target.Run(File.ReadAllBytes(f)); }
            catch (Exception ex)
            {
                crashes++;
                Console.Error.WriteLine($"{target.Name}: CRASH on {f}:{Environment.NewLine}{ex}");
            }
        }
        Console.WriteLine($"{target.Name}: replayed {files.Count} inputs in {sw.Elapsed.TotalSeconds:0.0} s, {crashes} crashes");
        return crashes == 0 ? 0 : 1;
    }
}

/// <summary>One fuzz target: bytes in; returns normally or throws only the documented "bad input" exceptions, which it catches itself.</summary>
public abstract class FuzzTarget
{
    /// <summary>The name on the command line and the corpus folder.</summary>
    public abstract string Name { get; }
    /// <summary>What the target drives.</summary>
    public abstract string Description { get; }
    /// <summary>Runs one input. Any exception that escapes is a bug in the code under test.</summary>
    public abstract void Run(byte[] data);
    /// <summary>Generated seed inputs (name, bytes), for <c>--seeds</c>.</summary>
    public virtual IEnumerable<(string Name, byte[] Data)> Seeds() => [];
}

/// <summary>The registry of targets.</summary>
public static class Targets
{
    public static IReadOnlyList<FuzzTarget> All { get; } =
    [
        new TpmPublicTarget(),
        new TpmsAttestTarget(),
        new TpmtSignatureTarget(),
        new PcrSelectionTarget(),
        new KeylimeQuoteTarget(),
        new ImaListTarget(),
        new UefiEventLogTarget(),
        new ProvisioningRequestTarget(),
        new RegistrarRegistrationTarget(),
        new VerifierAgentTarget(),
        new VerifierPoliciesTarget(),
        new KmsBodiesTarget(),
    ];

    public static FuzzTarget Get(string name) =>
        All.FirstOrDefault(t => t.Name == name) ?? throw new ArgumentException($"Unknown target '{name}'; known: {string.Join(", ", All.Select(t => t.Name))}.");
}

/// <summary>A scratch folder per process for targets that need a store; removed at exit.</summary>
internal static class Scratch
{
    private static readonly Lazy<string> Dir = new(() =>
    {
        var root = Environment.GetEnvironmentVariable("TPMPROV_FUZZ_WORK") is { Length: > 0 } w ? w : Path.GetTempPath();
        Directory.CreateDirectory(root);
        var d = Directory.CreateDirectory(Path.Combine(root, $"tpmprov-fuzz-{Environment.ProcessId}-{Guid.NewGuid():N}")).FullName;
        AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { Directory.Delete(d, true); } catch (IOException) { } catch (UnauthorizedAccessException) { } };
        return d;
    });

    public static string File(string name) => Path.Combine(Dir.Value, name);
}

/// <summary>With TPMPROV_FUZZ_VERBOSE=1, targets say what each input came to (for checking that seeds reach deep paths).</summary>
internal static class Verbose
{
    private static readonly bool On = Environment.GetEnvironmentVariable("TPMPROV_FUZZ_VERBOSE") == "1";
    public static void Say(string line) { if (On) Console.Error.WriteLine(line); }
}
