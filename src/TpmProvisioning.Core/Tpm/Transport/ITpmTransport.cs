namespace TpmProvisioning.Tpm.Transport;

/// <summary>
/// Carries one marshaled TPM 2.0 command to a TPM and returns its complete response.
/// Implementations are not thread-safe; <see cref="TpmProvisioning.Tpm.TpmDevice"/> serializes calls.
/// </summary>
public interface ITpmTransport : IDisposable
{
    /// <summary>Sends a complete command (header included) and returns the complete response (header included).</summary>
    /// <exception cref="TpmTransportException">The connection failed or the response was malformed.</exception>
    byte[] Transmit(ReadOnlySpan<byte> command);
}

/// <summary>A transport-level failure: the TPM could not be reached, or it answered with something that is not a TPM response.</summary>
public sealed class TpmTransportException : IOException
{
    /// <summary>Creates the exception.</summary>
    public TpmTransportException(string message) : base(message) { }

    /// <summary>Creates the exception with its cause.</summary>
    public TpmTransportException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>Helpers shared by the stream-based transports.</summary>
internal static class TransportIo
{
    /// <summary>Largest response accepted (TPM responses are at most a few KiB; this guards against garbage lengths).</summary>
    public const int MaxResponse = 64 * 1024;

    public static void ReadExactly(Stream s, Span<byte> buffer, string what)
    {
        int got = 0;
        while (got < buffer.Length)
        {
            int n = s.Read(buffer[got..]);
            if (n == 0) throw new TpmTransportException($"{what}: connection closed after {got} of {buffer.Length} bytes.");
            got += n;
        }
    }

    /// <summary>Reads one TPM response (10-byte header, then the rest announced by its size field).</summary>
    public static byte[] ReadTpmResponse(Stream s, string what)
    {
        Span<byte> header = stackalloc byte[10];
        ReadExactly(s, header, what);
        uint size = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(header.Slice(2, 4));
        if (size < 10 || size > MaxResponse) throw new TpmTransportException($"{what}: response announces an invalid size {size}.");
        var resp = new byte[size];
        header.CopyTo(resp);
        ReadExactly(s, resp.AsSpan(10), what);
        return resp;
    }
}
