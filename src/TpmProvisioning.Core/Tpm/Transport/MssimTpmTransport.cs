using System.Buffers.Binary;
using System.Net.Sockets;

namespace TpmProvisioning.Tpm.Transport;

/// <summary>
/// The Microsoft/IBM reference simulator's framing (tpm2-tools' <c>mssim:host=H,port=P</c>): on the command port P each
/// command is sent as TPM_SEND_COMMAND (8), a locality byte, a 32-bit length and the bytes; the answer is a 32-bit length,
/// the bytes and a 32-bit acknowledgement. The platform port P+1 receives power-on and NV-on at connect.
/// </summary>
public sealed class MssimTpmTransport : ITpmTransport
{
    private const uint TpmSendCommand = 8;
    private const uint TpmSignalPowerOn = 1;
    private const uint TpmSignalNvOn = 11;
    private const uint TpmSessionEnd = 20;

    private readonly TcpClient _tpm;
    private readonly NetworkStream _tpmStream;
    private readonly TcpClient? _platform;
    private readonly NetworkStream? _platformStream;

    /// <summary>Host of the simulator.</summary>
    public string Host { get; }

    /// <summary>Command port; the platform port is <c>Port + 1</c>.</summary>
    public int Port { get; }

    /// <summary>Locality sent with every command (0 by default).</summary>
    public byte Locality { get; init; }

    /// <summary>Connects to the command port and, when <paramref name="powerUp"/> is set, to the platform port to power the simulator and its NV on.</summary>
    /// <exception cref="TpmTransportException">A port refused the connection or the platform signals were not acknowledged.</exception>
    public MssimTpmTransport(string host, int port, bool powerUp = true)
    {
        Host = host;
        Port = port;
        try
        {
            if (powerUp)
            {
                _platform = Connect(host, port + 1);
                _platformStream = _platform.GetStream();
                Signal(TpmSignalPowerOn);
                Signal(TpmSignalNvOn);
            }
            _tpm = Connect(host, port);
            _tpmStream = _tpm.GetStream();
        }
        catch (SocketException ex)
        {
            _platformStream?.Dispose();
            _platform?.Dispose();
            throw new TpmTransportException($"Cannot connect to the TPM simulator at {host}:{port}: {ex.Message}", ex);
        }
    }

    private static TcpClient Connect(string host, int port)
    {
        var c = new TcpClient { NoDelay = true, ReceiveTimeout = 30000, SendTimeout = 30000 };
        c.Connect(host, port);
        return c;
    }

    private void Signal(uint code)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, code);
        _platformStream!.Write(b);
        TransportIo.ReadExactly(_platformStream, b, "TPM simulator platform port");
        uint ack = BinaryPrimitives.ReadUInt32BigEndian(b);
        if (ack != 0) throw new TpmTransportException($"TPM simulator platform port refused signal {code} (ack {ack}).");
    }

    /// <inheritdoc />
    public byte[] Transmit(ReadOnlySpan<byte> command)
    {
        try
        {
            var frame = new byte[9 + command.Length];
            BinaryPrimitives.WriteUInt32BigEndian(frame, TpmSendCommand);
            frame[4] = Locality;
            BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(5), (uint)command.Length);
            command.CopyTo(frame.AsSpan(9));
            _tpmStream.Write(frame);

            Span<byte> u32 = stackalloc byte[4];
            TransportIo.ReadExactly(_tpmStream, u32, "TPM simulator");
            uint len = BinaryPrimitives.ReadUInt32BigEndian(u32);
            if (len < 10 || len > TransportIo.MaxResponse) throw new TpmTransportException($"TPM simulator announced an invalid response length {len}.");
            var resp = new byte[len];
            TransportIo.ReadExactly(_tpmStream, resp, "TPM simulator");
            TransportIo.ReadExactly(_tpmStream, u32, "TPM simulator");
            uint ack = BinaryPrimitives.ReadUInt32BigEndian(u32);
            if (ack != 0) throw new TpmTransportException($"TPM simulator returned a non-zero acknowledgement {ack}.");
            return resp;
        }
        catch (IOException ex) when (ex is not TpmTransportException)
        {
            throw new TpmTransportException($"TPM simulator at {Host}:{Port}: {ex.Message}", ex);
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, TpmSessionEnd);
        try { _tpmStream.Write(b); } catch (IOException) { } catch (ObjectDisposedException) { }
        try { _platformStream?.Write(b); } catch (IOException) { } catch (ObjectDisposedException) { }
        _tpmStream.Dispose();
        _tpm.Dispose();
        _platformStream?.Dispose();
        _platform?.Dispose();
    }
}
