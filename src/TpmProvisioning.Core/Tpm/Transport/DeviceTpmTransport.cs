namespace TpmProvisioning.Tpm.Transport;

/// <summary>
/// A Linux TPM character device (tpm2-tools' <c>device:/dev/tpmrm0</c>): one write per command, one read per response.
/// Prefer the resource manager <c>/dev/tpmrm0</c>; <c>/dev/tpm0</c> allows a single user and no object swapping.
/// </summary>
public sealed class DeviceTpmTransport : ITpmTransport
{
    private readonly FileStream _file;
    private readonly byte[] _buffer = new byte[TransportIo.MaxResponse];

    /// <summary>Path of the device.</summary>
    public string Path { get; }

    /// <summary>Opens the device for reading and writing.</summary>
    /// <exception cref="TpmTransportException">The device is missing or not accessible (the user may need the <c>tss</c> group).</exception>
    public DeviceTpmTransport(string path)
    {
        Path = path;
        try
        {
            _file = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, bufferSize: 0);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new TpmTransportException($"Cannot open TPM device {path}: {ex.Message}", ex);
        }
    }

    /// <inheritdoc />
    public byte[] Transmit(ReadOnlySpan<byte> command)
    {
        try
        {
            _file.Write(command);
            _file.Flush();
            int n = _file.Read(_buffer, 0, _buffer.Length);
            if (n < 10) throw new TpmTransportException($"TPM device {Path} returned a short response ({n} bytes).");
            return _buffer.AsSpan(0, n).ToArray();
        }
        catch (IOException ex) when (ex is not TpmTransportException)
        {
            throw new TpmTransportException($"TPM device {Path}: {ex.Message}", ex);
        }
    }

    /// <inheritdoc />
    public void Dispose() => _file.Dispose();
}
