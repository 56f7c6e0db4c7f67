using System.Buffers.Binary;
using TpmProvisioning.Tpm.Transport;

namespace TpmProvisioning.Tests.Fixtures;

/// <summary>A transport that answers from a script of responses and records the commands it saw (for unit tests without a TPM).</summary>
public sealed class ScriptedTransport(params byte[][] responses) : ITpmTransport
{
    private readonly Queue<byte[]> _responses = new(responses);

    /// <summary>Commands received, in order.</summary>
    public List<byte[]> Commands { get; } = [];

    /// <summary>A bare response header with <paramref name="rc"/> and optional parameter bytes (TPM_ST_NO_SESSIONS).</summary>
    public static byte[] Response(uint rc, params byte[] parameters)
    {
        var r = new byte[10 + parameters.Length];
        BinaryPrimitives.WriteUInt16BigEndian(r, 0x8001);
        BinaryPrimitives.WriteUInt32BigEndian(r.AsSpan(2), (uint)r.Length);
        BinaryPrimitives.WriteUInt32BigEndian(r.AsSpan(6), rc);
        parameters.CopyTo(r, 10);
        return r;
    }

    /// <inheritdoc />
    public byte[] Transmit(ReadOnlySpan<byte> command)
    {
        Commands.Add(command.ToArray());
        return _responses.Count > 0 ? _responses.Dequeue() : throw new TpmTransportException("script exhausted");
    }

    /// <inheritdoc />
    public void Dispose() { }
}
