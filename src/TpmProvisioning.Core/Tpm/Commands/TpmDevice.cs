using System.Buffers.Binary;
using TpmProvisioning.Tpm.Transport;

namespace TpmProvisioning.Tpm;

/// <summary>
/// One authorization entry of a command's authorization area (TPMS_AUTH_COMMAND): a password session
/// (<see cref="TpmHandle.RsPw"/>) or a policy session whose policy needs no HMAC.
/// </summary>
public readonly record struct TpmAuthSession(uint Handle, byte[] Nonce, byte Attributes, byte[] Hmac)
{
    /// <summary>TPMA_SESSION continueSession.</summary>
    public const byte ContinueSession = 0x01;

    /// <summary>A password authorization (TPM_RS_PW) with <paramref name="password"/> (empty when null).</summary>
    public static TpmAuthSession Password(ReadOnlySpan<byte> password = default) => new(TpmHandle.RsPw, [], ContinueSession, password.ToArray());

    /// <summary>A policy session whose policy is already satisfied; <paramref name="continueSession"/> false lets the TPM flush it after the command.</summary>
    public static TpmAuthSession Policy(uint sessionHandle, bool continueSession = false) => new(sessionHandle, [], continueSession ? ContinueSession : (byte)0, []);
}

/// <summary>
/// A connection to one TPM 2.0: marshals commands, sends them through an <see cref="ITpmTransport"/>, retries
/// TPM_RC_RETRY / TPM_RC_YIELDED / TPM_RC_TESTING, and turns error codes into <see cref="TpmException"/>.
/// One command runs at a time per connection; the instance is thread-safe.
/// </summary>
public sealed partial class TpmDevice : IDisposable
{
    private readonly ITpmTransport _transport;
    private readonly bool _ownsTransport;
    private readonly object _gate = new();
    private bool _disposed;
    private int? _maxNvBuffer;
    private int? _maxInputBuffer;

    /// <summary>How many times a command answered with a retry warning is re-sent before giving up.</summary>
    public int MaxRetries { get; init; } = 50;

    /// <summary>Wraps a transport; <paramref name="ownsTransport"/> disposes it with the device.</summary>
    public TpmDevice(ITpmTransport transport, bool ownsTransport = true)
    {
        _transport = transport ?? throw new ArgumentNullException(nameof(transport));
        _ownsTransport = ownsTransport;
    }

    /// <summary>Opens a TPM by connection string (tpm2-tools TCTI syntax; null means <see cref="TpmTransportFactory.DefaultConnectionString"/>).</summary>
    /// <exception cref="ArgumentException">The connection string is malformed.</exception>
    /// <exception cref="TpmTransportException">The TPM cannot be reached.</exception>
    public static TpmDevice Open(string? connectionString = null) => new(TpmTransportFactory.Open(connectionString));

    /// <summary>The raw exchange: sends a complete command and returns the complete response, with no retry or error decoding.</summary>
    public byte[] TransmitRaw(ReadOnlySpan<byte> command)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _transport.Transmit(command);
        }
    }

    /// <summary>A parsed successful response: its response handles and its parameter area.</summary>
    internal readonly record struct Response(uint[] Handles, byte[] Parameters);

    /// <summary>
    /// Builds, sends and parses one command. <paramref name="sessions"/> null or empty sends TPM_ST_NO_SESSIONS.
    /// Throws <see cref="TpmException"/> for any non-success code other than the retried warnings.
    /// </summary>
    internal Response Execute(TpmCc cc, ReadOnlySpan<uint> handles, IReadOnlyList<TpmAuthSession>? sessions,
        Action<TpmWriter>? parameters, int responseHandleCount = 0, Func<uint, bool>? acceptCode = null)
    {
        bool withSessions = sessions is { Count: > 0 };
        var w = new TpmWriter(512);
        w.U16((ushort)(withSessions ? TpmSt.Sessions : TpmSt.NoSessions)).U32(0).U32((uint)cc);
        foreach (var h in handles) w.U32(h);
        if (withSessions)
        {
            w.Sized32(a =>
            {
                foreach (var s in sessions!)
                    a.U32(s.Handle).B2(s.Nonce).U8(s.Attributes).B2(s.Hmac);
            });
        }
        parameters?.Invoke(w);
        w.PatchU32(2, (uint)w.Length);
        byte[] command = w.ToArray();

        byte[] resp;
        uint rc;
        int attempt = 0;
        while (true)
        {
            resp = TransmitRaw(command);
            if (resp.Length < 10) throw new TpmTransportException($"TPM2_{cc}: response of {resp.Length} bytes is shorter than a header.");
            uint size = BinaryPrimitives.ReadUInt32BigEndian(resp.AsSpan(2));
            if (size != resp.Length) throw new TpmTransportException($"TPM2_{cc}: response header announces {size} bytes but {resp.Length} arrived.");
            rc = BinaryPrimitives.ReadUInt32BigEndian(resp.AsSpan(6));
            if (rc is 0x922 or 0x908 or 0x90A && attempt < MaxRetries)
            {
                attempt++;
                Thread.Sleep(Math.Min(5 * attempt, 100));
                continue;
            }
            break;
        }
        if (rc != 0)
        {
            if (acceptCode?.Invoke(rc) == true) return new Response([], []);
            throw new TpmException(cc, rc);
        }

        var r = new TpmReader(resp.AsSpan(10), $"TPM2_{cc} response");
        var outHandles = new uint[responseHandleCount];
        for (int i = 0; i < responseHandleCount; i++) outHandles[i] = r.U32();
        ushort tag = BinaryPrimitives.ReadUInt16BigEndian(resp);
        byte[] parms;
        if (tag == (ushort)TpmSt.Sessions)
        {
            uint psize = r.U32();
            parms = r.Bytes(checked((int)psize)).ToArray();
            // The response authorization area (nonceTPM, attributes, HMAC) follows; password and policy sessions need nothing from it.
        }
        else
        {
            parms = r.Bytes(r.Remaining).ToArray();
        }
        return new Response(outHandles, parms);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            if (_ownsTransport) _transport.Dispose();
        }
    }
}
