using System.Buffers.Binary;

namespace TpmProvisioning.Tpm;

/// <summary>Thrown when bytes do not parse as the TPM structure expected. Every parser reports bad input this way, never with another exception type.</summary>
public sealed class TpmFormatException : FormatException
{
    public TpmFormatException(string message) : base(message) { }
    public TpmFormatException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>Big-endian bounds-checked reader for TPM 2.0 structures. Any overrun throws <see cref="TpmFormatException"/>.</summary>
public ref struct TpmReader
{
    private readonly ReadOnlySpan<byte> _data;
    private int _pos;
    private readonly string _what;

    public TpmReader(ReadOnlySpan<byte> data, string what = "TPM structure")
    {
        _data = data;
        _pos = 0;
        _what = what;
    }

    public readonly int Position => _pos;
    public readonly int Remaining => _data.Length - _pos;
    public readonly bool AtEnd => _pos == _data.Length;

    private ReadOnlySpan<byte> Take(int n)
    {
        if (n < 0 || n > _data.Length - _pos)
            throw new TpmFormatException($"{_what}: truncated at offset {_pos} (needed {n} more bytes, {_data.Length - _pos} left).");
        var s = _data.Slice(_pos, n);
        _pos += n;
        return s;
    }

    public byte U8() => Take(1)[0];
    public ushort U16() => BinaryPrimitives.ReadUInt16BigEndian(Take(2));
    public uint U32() => BinaryPrimitives.ReadUInt32BigEndian(Take(4));
    public ulong U64() => BinaryPrimitives.ReadUInt64BigEndian(Take(8));
    public TpmAlgId Alg() => (TpmAlgId)U16();
    public ReadOnlySpan<byte> Bytes(int n) => Take(n);

    /// <summary>A TPM2B: 16-bit size, then that many bytes; <paramref name="max"/> bounds the size.</summary>
    public byte[] B2(int max = ushort.MaxValue)
    {
        int n = U16();
        if (n > max) throw new TpmFormatException($"{_what}: size {n} at offset {_pos - 2} exceeds the maximum {max}.");
        return Take(n).ToArray();
    }

    /// <summary>A sized structure: returns a reader over exactly the bytes its 16-bit size announces.</summary>
    public ReadOnlySpan<byte> Sized16()
    {
        int n = U16();
        return Take(n);
    }

    public readonly void ExpectEnd()
    {
        if (_pos != _data.Length)
            throw new TpmFormatException($"{_what}: {_data.Length - _pos} unexpected trailing bytes at offset {_pos}.");
    }
}
