using System.Buffers;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;

namespace TpmProvisioning.Server.Hosting;

/// <summary>
/// The bytes of request bodies a server holds in memory at once, across every role: a body is read only after its bytes are
/// reserved here (the declared <c>Content-Length</c> up front, a chunked body segment by segment), and its reservation is
/// released when the request ends. A request that does not fit is refused before it is buffered (503 with Retry-After in the
/// surface's shape), so parallel large bodies cannot grow the process past the budget.
/// </summary>
public sealed class RequestBodyBudget(long capacity)
{
    private long _inUse;
    private long _peak;

    private long _capacity = capacity > 0 ? capacity : throw new ArgumentOutOfRangeException(nameof(capacity));

    /// <summary>The budget in bytes; a running server may change it (options surface): reservations already made are kept.</summary>
    public long Capacity
    {
        get => Interlocked.Read(ref _capacity);
        set => Interlocked.Exchange(ref _capacity, value > 0 ? value : throw new ArgumentOutOfRangeException(nameof(value)));
    }
    /// <summary>Bytes reserved now.</summary>
    public long InUse => Interlocked.Read(ref _inUse);
    /// <summary>The most bytes ever reserved at once (never more than <see cref="Capacity"/>).</summary>
    public long Peak => Interlocked.Read(ref _peak);

    /// <summary>Reserves <paramref name="bytes"/>; false (and nothing reserved) when they do not fit.</summary>
    public bool TryReserve(long bytes)
    {
        if (bytes <= 0) return true;
        while (true)
        {
            long cur = Interlocked.Read(ref _inUse);
            long next = cur + bytes;
            if (next > Capacity) return false;
            if (Interlocked.CompareExchange(ref _inUse, next, cur) != cur) continue;
            long p;
            while (next > (p = Interlocked.Read(ref _peak)) && Interlocked.CompareExchange(ref _peak, next, p) != p) { }
            return true;
        }
    }

    public void Release(long bytes)
    {
        if (bytes > 0) Interlocked.Add(ref _inUse, -bytes);
    }
}

/// <summary>Why a body could not be read; each surface maps it to its own status and error shape.</summary>
public enum BodyReadError
{
    None,
    /// <summary>Larger than the route's cap: 413 (or the surface's own refusal).</summary>
    TooLarge,
    /// <summary>The server-wide budget of buffered bytes is spent: 503 with Retry-After.</summary>
    Busy,
    /// <summary>The HTTP framing of the body is broken (a bad chunk size, a truncated body): 400.</summary>
    Malformed,
    /// <summary>The body is not UTF-8 (when the route asked for text): 400.</summary>
    InvalidUtf8,
}

/// <summary>
/// A request body in pooled 64 KiB segments (never one large array, never a copy per step): read it as a
/// <see cref="ReadOnlySequence{T}"/>; disposing (done by the host when the response ends) returns the segments to the pool and the
/// bytes to the <see cref="RequestBodyBudget"/>.
/// </summary>
public sealed class RequestBody : IDisposable
{
    internal const int SegmentSize = 64 * 1024;

    private readonly List<byte[]> _segments = [];
    private readonly RequestBodyBudget _budget;
    private long _reserved;
    private int _disposed;

    internal RequestBody(RequestBodyBudget budget) => _budget = budget;

    public long Length { get; private set; }

    /// <summary>The bytes, segment by segment.</summary>
    public ReadOnlySequence<byte> Sequence
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            int count = (int)((Length + SegmentSize - 1) / SegmentSize);
            if (count == 0) return ReadOnlySequence<byte>.Empty;
            if (count == 1) return new ReadOnlySequence<byte>(_segments[0], 0, (int)Length);
            Segment first = new(_segments[0].AsMemory(0, SegmentSize), 0), last = first;
            for (int i = 1; i < count; i++)
            {
                int len = i == count - 1 ? (int)(Length - (long)i * SegmentSize) : SegmentSize;
                last = last.Append(_segments[i].AsMemory(0, len));
            }
            return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
        }
    }

    /// <summary>A copy in one array, for small bodies whose consumer needs contiguous bytes.</summary>
    public byte[] ToArray() => Sequence.ToArray();

    internal bool Reserve(long bytes)
    {
        if (!_budget.TryReserve(bytes)) return false;
        _reserved += bytes;
        return true;
    }

    /// <summary>Room for the next read: the free tail of the last segment, or a new pooled segment.</summary>
    internal Memory<byte> Tail()
    {
        int used = (int)(Length % SegmentSize);
        if (_segments.Count == 0 || (used == 0 && Length == (long)_segments.Count * SegmentSize))
        {
            _segments.Add(ArrayPool<byte>.Shared.Rent(SegmentSize));
            used = 0;
        }
        return _segments[^1].AsMemory(used, SegmentSize - used);
    }

    internal void Advance(int n) => Length += n;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var s in _segments) ArrayPool<byte>.Shared.Return(s);
        _segments.Clear();
        _budget.Release(_reserved);
        _reserved = 0;
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}

/// <summary>The outcome of <see cref="RequestBodyReader.ReadAsync"/>: a body, or why not (with a message fit for the client).</summary>
public readonly record struct BodyReadResult(RequestBody? Body, BodyReadError Error, string? Message)
{
    public bool Ok => Body is not null;
}

/// <summary>
/// The one way every role reads a request body: capped per route, charged to the server's <see cref="RequestBodyBudget"/>
/// before it is buffered, read into pooled segments, optionally checked to be UTF-8 as it arrives, and with Kestrel's framing
/// errors (a chunk size that overflows, a body cut short: an <see cref="IOException"/> or <see cref="BadHttpRequestException"/>)
/// turned into <see cref="BodyReadError.Malformed"/> rather than escaping as a 500.
/// </summary>
public static class RequestBodyReader
{
    /// <summary>Seconds a client is told to wait when the budget is spent.</summary>
    public const int BusyRetryAfterSeconds = 2;

    /// <summary>The budget of the server handling <paramref name="http"/> (registered by the host; a private one otherwise).</summary>
    public static RequestBodyBudget Budget(HttpContext http) =>
        http.RequestServices?.GetService<RequestBodyBudget>() ?? s_fallback;

    private static readonly RequestBodyBudget s_fallback = new(256L * 1024 * 1024);

    /// <summary>
    /// Reads the body of <paramref name="http"/> up to <paramref name="max"/> bytes. The body is disposed when the response
    /// ends. When <paramref name="requireUtf8"/>, bytes that are not UTF-8 give <see cref="BodyReadError.InvalidUtf8"/>.
    /// </summary>
    public static async Task<BodyReadResult> ReadAsync(HttpContext http, long max, bool requireUtf8 = true)
    {
        ArgumentNullException.ThrowIfNull(http);
        var declared = http.Request.ContentLength;
        if (declared > max) return Refuse(http, null, BodyReadError.TooLarge, $"body: {declared} bytes is more than the {max} allowed");
        var size = http.Features.Get<IHttpMaxRequestBodySizeFeature>();
        if (size is { IsReadOnly: false }) size.MaxRequestBodySize = max;

        var body = new RequestBody(Budget(http));
        http.Response.RegisterForDispose(body);
        // A declared length is reserved whole before anything is read; a chunked body one segment at a time.
        if (declared is { } d && !body.Reserve(d)) return Refuse(http, body, BodyReadError.Busy, Busy);
        var decoder = requireUtf8 ? s_utf8.GetDecoder() : null;
        var chars = requireUtf8 ? ArrayPool<char>.Shared.Rent(4096) : null;
        int used;
        try
        {
            while (true)
            {
                if (declared is null && body.Length % RequestBody.SegmentSize == 0 && !body.Reserve(RequestBody.SegmentSize))
                    return Refuse(http, body, BodyReadError.Busy, Busy);
                var tail = body.Tail();
                int n = await http.Request.Body.ReadAsync(tail, http.RequestAborted).ConfigureAwait(false);
                if (n == 0) break;
                if (body.Length + n > max) return Refuse(http, body, BodyReadError.TooLarge, $"body: more than the {max} bytes allowed");
                if (decoder is not null)
                {
                    try
                    {
                        // Validation only: decode through a small buffer, carrying a split sequence over to the next read.
                        for (var rest = tail.Span[..n]; !rest.IsEmpty; rest = rest[used..])
                            decoder.Convert(rest, chars, false, out used, out _, out _);
                    }
                    catch (DecoderFallbackException) { return Refuse(http, body, BodyReadError.InvalidUtf8, "body: not valid UTF-8"); }
                }
                body.Advance(n);
            }
            if (decoder is not null)
            {
                try { decoder.Convert(ReadOnlySpan<byte>.Empty, chars, true, out _, out _, out _); }
                catch (DecoderFallbackException) { return Refuse(http, body, BodyReadError.InvalidUtf8, "body: not valid UTF-8"); }
            }
            return new BodyReadResult(body, BodyReadError.None, null);
        }
        catch (BadHttpRequestException ex) when (ex.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            return Refuse(http, body, BodyReadError.TooLarge, $"body: more than the {max} bytes allowed");
        }
        catch (BadHttpRequestException ex)
        {
            return Refuse(http, body, BodyReadError.Malformed, "body: malformed request body (" + ex.Message.TrimEnd('.') + ")");
        }
        catch (IOException ex) when (!http.RequestAborted.IsCancellationRequested)
        {
            // Kestrel reports some framing errors (such as a chunk size that overflows) as a bare IOException.
            return Refuse(http, body, BodyReadError.Malformed, "body: malformed request body (" + ex.Message.TrimEnd('.') + ")");
        }
        finally
        {
            if (chars is not null) ArrayPool<char>.Shared.Return(chars);
        }
    }

    private const string Busy = "the server is busy with other large requests; retry later";
    private static readonly UTF8Encoding s_utf8 = new(false, true);

    private static BodyReadResult Refuse(HttpContext http, RequestBody? body, BodyReadError error, string message)
    {
        body?.Dispose(); // what was read goes back to the pool and the budget now, not when the response ends
        // A refused body is not drained: the connection ends with the answer, so the rest is never read or buffered.
        if (error is BodyReadError.TooLarge or BodyReadError.Busy or BodyReadError.Malformed) http.Response.Headers.Connection = "close";
        if (error == BodyReadError.Busy) http.Response.Headers.RetryAfter = BusyRetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return new BodyReadResult(null, error, message);
    }
}
