using System.Globalization;

namespace TpmProvisioning.Tpm.Transport;

/// <summary>Which kind of TPM connection a connection string names.</summary>
public enum TpmTransportKind
{
    /// <summary>swtpm's data port: raw command bytes over TCP.</summary>
    Swtpm,
    /// <summary>The Microsoft/IBM simulator framing over TCP, with a platform port at port + 1.</summary>
    Mssim,
    /// <summary>A TPM character device such as /dev/tpmrm0.</summary>
    Device,
    /// <summary>Windows TPM Base Services.</summary>
    Tbs,
}

/// <summary>
/// A parsed TPM connection string in tpm2-tools' TCTI syntax: <c>swtpm:host=H,port=P</c>, <c>swtpm:port=P</c>,
/// <c>mssim:host=H,port=P</c>, <c>device:/dev/tpmrm0</c>, <c>tbs</c>.
/// </summary>
public sealed record TpmConnectionString(TpmTransportKind Kind, string? Host, int Port, string? DevicePath)
{
    /// <summary>Default host of the TCP transports.</summary>
    public const string DefaultHost = "localhost";

    /// <summary>Default port of the TCP transports (tpm2-tools' default).</summary>
    public const int DefaultPort = 2321;

    /// <summary>Default device path.</summary>
    public const string DefaultDevice = "/dev/tpmrm0";

    /// <summary>Parses a connection string.</summary>
    /// <exception cref="ArgumentException">The string is empty, names an unknown transport, or has bad options.</exception>
    public static TpmConnectionString Parse(string connectionString)
    {
        if (string.IsNullOrWhiteSpace(connectionString))
            throw new ArgumentException("The TPM connection string is empty. Use swtpm:host=H,port=P, mssim:host=H,port=P, device:/dev/tpmrm0 or tbs.", nameof(connectionString));
        string s = connectionString.Trim();
        int colon = s.IndexOf(':');
        string name = (colon < 0 ? s : s[..colon]).Trim().ToLowerInvariant();
        string conf = colon < 0 ? "" : s[(colon + 1)..].Trim();
        switch (name)
        {
            case "swtpm":
            case "mssim":
            {
                var (host, port) = ParseHostPort(conf, name, connectionString);
                return new TpmConnectionString(name == "swtpm" ? TpmTransportKind.Swtpm : TpmTransportKind.Mssim, host, port, null);
            }
            case "device":
            {
                string path = conf.Length == 0 ? DefaultDevice : conf;
                if (path.StartsWith("path=", StringComparison.OrdinalIgnoreCase)) path = path[5..];
                if (path.Length == 0 || path.Contains(','))
                    throw new ArgumentException($"TPM connection string '{connectionString}': device: takes one path, e.g. device:/dev/tpmrm0.", nameof(connectionString));
                return new TpmConnectionString(TpmTransportKind.Device, null, 0, path);
            }
            case "tbs":
                if (conf.Length != 0)
                    throw new ArgumentException($"TPM connection string '{connectionString}': tbs takes no options.", nameof(connectionString));
                return new TpmConnectionString(TpmTransportKind.Tbs, null, 0, null);
            default:
                throw new ArgumentException(
                    $"TPM connection string '{connectionString}': unknown transport '{name}'. Supported: swtpm:host=H,port=P, mssim:host=H,port=P, device:/dev/tpmrm0, tbs.",
                    nameof(connectionString));
        }
    }

    private static (string host, int port) ParseHostPort(string conf, string name, string original)
    {
        string host = DefaultHost;
        int port = DefaultPort;
        if (conf.Length == 0) return (host, port);
        foreach (var part in conf.Split(','))
        {
            var kv = part.Split('=', 2);
            if (kv.Length != 2 || kv[0].Trim().Length == 0)
                throw new ArgumentException($"TPM connection string '{original}': '{part}' is not key=value; expected {name}:host=H,port=P.", "connectionString");
            string key = kv[0].Trim().ToLowerInvariant(), value = kv[1].Trim();
            switch (key)
            {
                case "host":
                    if (value.Length == 0) throw new ArgumentException($"TPM connection string '{original}': host is empty.", "connectionString");
                    host = value;
                    break;
                case "port":
                    if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out port) || port < 1 || port > 65534)
                        throw new ArgumentException($"TPM connection string '{original}': port '{value}' is not a number between 1 and 65534.", "connectionString");
                    break;
                default:
                    throw new ArgumentException($"TPM connection string '{original}': unknown option '{key}'; {name} takes host and port.", "connectionString");
            }
        }
        return (host, port);
    }

    /// <inheritdoc />
    public override string ToString() => Kind switch
    {
        TpmTransportKind.Swtpm => $"swtpm:host={Host},port={Port}",
        TpmTransportKind.Mssim => $"mssim:host={Host},port={Port}",
        TpmTransportKind.Device => $"device:{DevicePath}",
        _ => "tbs",
    };
}

/// <summary>Opens a <see cref="ITpmTransport"/> from a tpm2-tools style connection string.</summary>
public static class TpmTransportFactory
{
    /// <summary>The environment variable tpm2-tools reads its connection from.</summary>
    public const string EnvironmentVariable = "TPM2TOOLS_TCTI";

    /// <summary>
    /// The connection string used when none is given: <c>TPM2TOOLS_TCTI</c> if set; otherwise <c>tbs</c> on Windows, and on
    /// Linux <c>device:/dev/tpmrm0</c> or, failing that, <c>device:/dev/tpm0</c>.
    /// </summary>
    /// <exception cref="TpmTransportException">No variable is set and no TPM device exists.</exception>
    public static string DefaultConnectionString()
    {
        string? env = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(env)) return env;
        if (OperatingSystem.IsWindows()) return "tbs";
        foreach (var dev in new[] { "/dev/tpmrm0", "/dev/tpm0" })
            if (File.Exists(dev)) return "device:" + dev;
        throw new TpmTransportException($"No TPM connection given: {EnvironmentVariable} is not set and neither /dev/tpmrm0 nor /dev/tpm0 exists.");
    }

    /// <summary>Opens the transport named by <paramref name="connectionString"/> (or <see cref="DefaultConnectionString"/> when null).</summary>
    /// <exception cref="ArgumentException">The connection string is malformed.</exception>
    /// <exception cref="TpmTransportException">The TPM cannot be reached.</exception>
    public static ITpmTransport Open(string? connectionString = null)
    {
        var cs = TpmConnectionString.Parse(connectionString ?? DefaultConnectionString());
        return cs.Kind switch
        {
            TpmTransportKind.Swtpm => new TcpTpmTransport(cs.Host!, cs.Port),
            TpmTransportKind.Mssim => new MssimTpmTransport(cs.Host!, cs.Port),
            TpmTransportKind.Device => new DeviceTpmTransport(cs.DevicePath!),
            _ => new TbsTpmTransport(),
        };
    }
}
