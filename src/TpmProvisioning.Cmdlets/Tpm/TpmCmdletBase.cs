using System.Management.Automation;
using System.Management.Automation.Language;
using System.Collections;
using TpmProvisioning.Tpm;
using TpmProvisioning.Tpm.Transport;

namespace TpmProvisioning.Cmdlets;

/// <summary>
/// Base of the cmdlets that talk to a TPM: the <c>-Tpm</c> connection string (tpm2-tools TCTI syntax, bound by property
/// name so simulator objects and CSV rows pipe in), opening it, and turning TPM failures into error records with stable ids.
/// </summary>
public abstract class TpmCmdletBase : PSCmdlet
{
    /// <summary>
    /// TPM connection string: <c>swtpm:host=127.0.0.1,port=2321</c>, <c>mssim:host=H,port=P</c>, <c>device:/dev/tpmrm0</c> or
    /// <c>tbs</c>. Default: the TPM2TOOLS_TCTI environment variable, else the platform TPM.
    /// </summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [Alias("ConnectionString", "Tcti")]
    [ArgumentCompleter(typeof(TpmConnectionCompleter))]
    public string? Tpm { get; set; }

    /// <summary>The connection string in effect for this record (explicit, or the default).</summary>
    protected string? EffectiveTpm { get; private set; }

    /// <summary>Opens the TPM for this record; on failure writes an error for this record and returns null.</summary>
    protected TpmDevice? OpenTpm()
    {
        try
        {
            EffectiveTpm = string.IsNullOrWhiteSpace(Tpm) ? TpmTransportFactory.DefaultConnectionString() : Tpm.Trim();
            WriteVerbose($"Opening TPM {EffectiveTpm}.");
            return TpmDevice.Open(EffectiveTpm);
        }
        catch (ArgumentException ex)
        {
            WriteError(new ErrorRecord(ex, "InvalidTpmConnectionString", ErrorCategory.InvalidArgument, Tpm));
        }
        catch (Exception ex) when (ex is TpmTransportException or IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException or PlatformNotSupportedException)
        {
            WriteError(new ErrorRecord(ex, "TpmConnectionFailed", ErrorCategory.ConnectionError, Tpm ?? EffectiveTpm));
        }
        return null;
    }

    /// <summary>Writes a TPM failure as a non-terminating error for the current record.</summary>
    protected void WriteTpmError(Exception ex, object? target)
    {
        var (id, category) = ex switch
        {
            TpmException => ("TpmCommandFailed", ErrorCategory.DeviceError),
            TpmTransportException or IOException => ("TpmConnectionFailed", ErrorCategory.ConnectionError),
            TpmFormatException => ("TpmResponseMalformed", ErrorCategory.InvalidData),
            System.Security.Cryptography.CryptographicException => ("TpmDataInvalid", ErrorCategory.InvalidData),
            ArgumentException => ("InvalidArgument", ErrorCategory.InvalidArgument),
            _ => ("TpmOperationFailed", ErrorCategory.NotSpecified),
        };
        WriteError(new ErrorRecord(ex, id, category, target ?? EffectiveTpm));
    }

    private readonly List<object> _pending = new();

    /// <summary>
    /// Queues an object for the pipeline. It is written once the TPM connection is closed: a TPM (swtpm, /dev/tpm0)
    /// takes one connection at a time, so the next cmdlet in the pipeline must find it free.
    /// </summary>
    protected void Emit(object value) => _pending.Add(value);

    /// <summary>Runs <paramref name="body"/> against the TPM, mapping TPM failures to errors for this record; then writes what it emitted.</summary>
    protected void WithTpm(Action<TpmDevice> body)
    {
        _pending.Clear();
        using (var tpm = OpenTpm())
        {
            if (tpm is null) return;
            try { body(tpm); }
            catch (PipelineStoppedException) { throw; }
            catch (Exception ex) when (ex is TpmException or TpmTransportException or IOException or TpmFormatException or ArgumentException
                or InvalidOperationException or System.Security.Cryptography.CryptographicException)
            {
                WriteTpmError(ex, EffectiveTpm);
            }
        }
        foreach (var o in _pending) WriteObject(o);
        _pending.Clear();
    }

    internal static TpmAlgId ParseHashAlgorithm(string name) => name.ToLowerInvariant() switch
    {
        "sha1" => TpmAlgId.Sha1,
        "sha256" => TpmAlgId.Sha256,
        "sha384" => TpmAlgId.Sha384,
        "sha512" => TpmAlgId.Sha512,
        _ => throw new ArgumentException($"Unknown hash algorithm '{name}'; use sha1, sha256, sha384 or sha512."),
    };

    internal static string HashName(TpmAlgId alg) => alg switch
    {
        TpmAlgId.Sha1 => "sha1",
        TpmAlgId.Sha256 => "sha256",
        TpmAlgId.Sha384 => "sha384",
        TpmAlgId.Sha512 => "sha512",
        _ => alg.ToString().ToLowerInvariant(),
    };

    /// <summary>Parses a Keylime-style PCR mask (<c>0x408000</c>, hex with or without 0x) into PCR indices.</summary>
    internal static int[] ParsePcrMask(string mask)
    {
        var s = mask.Trim();
        if (s.StartsWith("0x", StringComparison.OrdinalIgnoreCase)) s = s[2..];
        if (s.Length == 0 || s.Length > 8 || !uint.TryParse(s, System.Globalization.NumberStyles.HexNumber, null, out var bits))
            throw new ArgumentException($"PCR mask '{mask}' is not a hexadecimal bit mask of PCRs 0-31, such as 0x408000.");
        var list = new List<int>();
        for (int i = 0; i < 32; i++) if ((bits & (1u << i)) != 0) list.Add(i);
        if (list.Count == 0) throw new ArgumentException($"PCR mask '{mask}' selects no PCR.");
        return list.ToArray();
    }

    /// <summary>
    /// The PCRs from -Pcr or -PcrMask (null when neither is given); a terminating error for both at once or a bad mask.
    /// </summary>
    internal static int[]? ResolvePcrs(PSCmdlet cmdlet, int[]? pcr, string? mask)
    {
        if (pcr is { Length: > 0 } && mask is not null)
            cmdlet.ThrowTerminatingError(new ErrorRecord(new ArgumentException("Give -Pcr or -PcrMask, not both."), "PcrAndPcrMask", ErrorCategory.InvalidArgument, mask));
        if (mask is null) return pcr is { Length: > 0 } ? pcr.Distinct().Order().ToArray() : null;
        try { return ParsePcrMask(mask); }
        catch (ArgumentException ex)
        {
            cmdlet.ThrowTerminatingError(new ErrorRecord(ex, "InvalidPcrMask", ErrorCategory.InvalidArgument, mask));
            return null;
        }
    }

    internal static string Hex(byte[]? bytes) => bytes is null ? "" : Convert.ToHexString(bytes).ToLowerInvariant();
}

/// <summary>Completes <c>-Tpm</c> with the simulators running in this session, TPM2TOOLS_TCTI and the platform devices.</summary>
public sealed class TpmConnectionCompleter : IArgumentCompleter
{
    /// <inheritdoc />
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        var word = (wordToComplete ?? "").Trim('\'', '"');
        var candidates = new List<(string Value, string Tip)>();
        foreach (var s in SimulatorRegistry.All) candidates.Add((s.ConnectionString, $"Simulator {s.Name} (pid {s.Pid})"));
        var env = Environment.GetEnvironmentVariable(TpmTransportFactory.EnvironmentVariable);
        if (!string.IsNullOrEmpty(env)) candidates.Add((env, "TPM2TOOLS_TCTI"));
        if (OperatingSystem.IsWindows()) candidates.Add(("tbs", "Windows TPM Base Services"));
        else
        {
            foreach (var dev in new[] { "/dev/tpmrm0", "/dev/tpm0" })
                if (File.Exists(dev)) candidates.Add(("device:" + dev, "Platform TPM"));
        }
        foreach (var (value, tip) in candidates.DistinctBy(c => c.Value))
            if (value.StartsWith(word, StringComparison.OrdinalIgnoreCase))
                yield return new CompletionResult("'" + value + "'", value, CompletionResultType.ParameterValue, tip);
    }
}
