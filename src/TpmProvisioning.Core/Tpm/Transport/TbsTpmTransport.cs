using System.Runtime.InteropServices;

namespace TpmProvisioning.Tpm.Transport;

/// <summary>
/// Windows TPM Base Services (tpm2-tools' <c>tbs</c>): a TBS context for TPM 2.0 and <c>Tbsip_Submit_Command</c>.
/// Compiles on every platform; constructing it anywhere but Windows throws <see cref="PlatformNotSupportedException"/>.
/// </summary>
public sealed class TbsTpmTransport : ITpmTransport
{
    private const uint TbsSuccess = 0;
    private const uint TpmVersion20 = 2;
    private const uint IncludeTpm20 = 1u << 2;
    private const uint PriorityNormal = 200;
    private const uint LocalityZero = 0;

    [StructLayout(LayoutKind.Sequential)]
    private struct TbsContextParams2
    {
        public uint Version;
        public uint Flags;
    }

    [DllImport("tbs.dll", EntryPoint = "Tbsi_Context_Create")]
    private static extern uint TbsiContextCreate(ref TbsContextParams2 parameters, out IntPtr context);

    [DllImport("tbs.dll", EntryPoint = "Tbsip_Context_Close")]
    private static extern uint TbsipContextClose(IntPtr context);

    [DllImport("tbs.dll", EntryPoint = "Tbsip_Submit_Command")]
    private static extern unsafe uint TbsipSubmitCommand(IntPtr context, uint locality, uint priority,
        byte* command, uint commandLength, byte* result, ref uint resultLength);

    private IntPtr _context;

    /// <summary>Opens a TBS context for the TPM 2.0.</summary>
    /// <exception cref="PlatformNotSupportedException">Not running on Windows.</exception>
    /// <exception cref="TpmTransportException">TBS refused the context (no TPM 2.0, or the service is stopped).</exception>
    public TbsTpmTransport()
    {
        if (!OperatingSystem.IsWindows())
            throw new PlatformNotSupportedException("The tbs transport (TPM Base Services) exists only on Windows.");
        var p = new TbsContextParams2 { Version = TpmVersion20, Flags = IncludeTpm20 };
        uint rc = TbsiContextCreate(ref p, out _context);
        if (rc != TbsSuccess) throw new TpmTransportException($"Tbsi_Context_Create failed with TBS error 0x{rc:X8}.");
    }

    /// <inheritdoc />
    public unsafe byte[] Transmit(ReadOnlySpan<byte> command)
    {
        ObjectDisposedException.ThrowIf(_context == IntPtr.Zero, this);
        var result = new byte[TransportIo.MaxResponse];
        uint len = (uint)result.Length;
        uint rc;
        fixed (byte* c = command)
        fixed (byte* r = result)
        {
            rc = TbsipSubmitCommand(_context, LocalityZero, PriorityNormal, c, (uint)command.Length, r, ref len);
        }
        if (rc != TbsSuccess) throw new TpmTransportException($"Tbsip_Submit_Command failed with TBS error 0x{rc:X8}.");
        return result.AsSpan(0, (int)len).ToArray();
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_context != IntPtr.Zero)
        {
            TbsipContextClose(_context);
            _context = IntPtr.Zero;
        }
    }
}
