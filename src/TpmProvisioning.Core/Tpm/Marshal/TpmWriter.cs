using System.Buffers.Binary;

namespace TpmProvisioning.Tpm;

/// <summary>Big-endian writer for TPM 2.0 structures (Part 1, 18: canonical marshaling).</summary>
public sealed class TpmWriter
{
    private byte[] _buf;
    private int _len;

    public TpmWriter(int capacity = 256) => _buf = new byte[Math.Max(16, capacity)];

    public int Length => _len;

    private Span<byte> Grow(int n)
    {
        if (_len + n > _buf.Length)
        {
            Array.Resize(ref _buf, Math.Max(_buf.Length * 2, _len + n));
        }
        var s = _buf.AsSpan(_len, n);
        _len += n;
        return s;
    }

    public TpmWriter U8(byte v) { Grow(1)[0] = v; return this; }
    public TpmWriter U16(ushort v) { BinaryPrimitives.WriteUInt16BigEndian(Grow(2), v); return this; }
    public TpmWriter U32(uint v) { BinaryPrimitives.WriteUInt32BigEndian(Grow(4), v); return this; }
    public TpmWriter U64(ulong v) { BinaryPrimitives.WriteUInt64BigEndian(Grow(8), v); return this; }
    public TpmWriter Alg(TpmAlgId a) => U16((ushort)a);
    public TpmWriter Bytes(ReadOnlySpan<byte> b) { b.CopyTo(Grow(b.Length)); return this; }

    /// <summary>A TPM2B: 16-bit size, then the bytes.</summary>
    public TpmWriter B2(ReadOnlySpan<byte> b)
    {
        if (b.Length > ushort.MaxValue) throw new ArgumentException("TPM2B larger than 65535 bytes.");
        U16((ushort)b.Length);
        return Bytes(b);
    }

    /// <summary>Reserves a 16-bit size, runs <paramref name="body"/>, then writes the size of what it wrote.</summary>
    public TpmWriter Sized16(Action<TpmWriter> body)
    {
        int at = _len;
        U16(0);
        body(this);
        int size = _len - at - 2;
        if (size > ushort.MaxValue) throw new InvalidOperationException("Sized structure over 65535 bytes.");
        BinaryPrimitives.WriteUInt16BigEndian(_buf.AsSpan(at, 2), (ushort)size);
        return this;
    }

    /// <summary>Reserves a 32-bit size, runs <paramref name="body"/>, then writes the size of what it wrote.</summary>
    public TpmWriter Sized32(Action<TpmWriter> body)
    {
        int at = _len;
        U32(0);
        body(this);
        BinaryPrimitives.WriteUInt32BigEndian(_buf.AsSpan(at, 4), (uint)(_len - at - 4));
        return this;
    }

    /// <summary>Overwrites a 32-bit value already written at <paramref name="offset"/>.</summary>
    public void PatchU32(int offset, uint v) => BinaryPrimitives.WriteUInt32BigEndian(_buf.AsSpan(offset, 4), v);

    public ReadOnlySpan<byte> Span => _buf.AsSpan(0, _len);
    public byte[] ToArray() => _buf.AsSpan(0, _len).ToArray();
}
