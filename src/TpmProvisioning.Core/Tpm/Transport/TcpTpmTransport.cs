using System.Net.Sockets;

namespace TpmProvisioning.Tpm.Transport;

/// <summary>
/// swtpm's data port: raw TPM command bytes over one TCP connection, the response read back by its header's size
/// (tpm2-tools' <c>swtpm:host=H,port=P</c>). swtpm serves one client at a time, so keep this open only while needed.
/// </summary>
public sealed class TcpTpmTransport : ITpmTransport
{
    private readonly TcpClient _client;
    private readonly NetworkStream _stream;

    /// <summary>Host this transport is connected to.</summary>
    public string Host { get; }

    /// <summary>TCP port of the TPM's data channel.</summary>
    public int Port { get; }

    /// <summary>Connects to <paramref name="host"/>:<paramref name="port"/>.</summary>
    /// <exception cref="TpmTransportException">The connection was refused or timed out.</exception>
    public TcpTpmTransport(string host, int port, TimeSpan? timeout = null)
    {
        Host = host;
        Port = port;
        _client = new TcpClient { NoDelay = true };
        int ms = (int)(timeout ?? TimeSpan.FromSeconds(30)).TotalMilliseconds;
        _client.ReceiveTimeout = ms;
        _client.SendTimeout = ms;
        try
        {
            if (!_client.ConnectAsync(host, port).Wait(ms))
                throw new TpmTransportException($"Connecting to the TPM at {host}:{port} timed out.");
        }
        catch (AggregateException ex) when (ex.InnerException is SocketException se)
        {
            _client.Dispose();
            throw new TpmTransportException($"Cannot connect to the TPM at {host}:{port}: {se.Message}", se);
        }
        _stream = _client.GetStream();
    }

    /// <inheritdoc />
    public byte[] Transmit(ReadOnlySpan<byte> command)
    {
        try
        {
            _stream.Write(command);
            return TransportIo.ReadTpmResponse(_stream, $"TPM at {Host}:{Port}");
        }
        catch (IOException ex) when (ex is not TpmTransportException)
        {
            throw new TpmTransportException($"TPM at {Host}:{Port}: {ex.Message}", ex);
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _stream.Dispose();
        _client.Dispose();
    }
}
