using System.Globalization;
using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;

namespace TpmProvisioning.Station;

/// <summary>The hash state of one image: <c>complete</c> with <see cref="Sha256"/>, <c>pending</c> with <see cref="Progress"/>, <c>error</c>, or <c>none</c>.</summary>
public sealed record ImageHashState(string Name, string Status, string? Sha256, double Progress, string? Error)
{
    public int ProgressPercent => (int)Math.Floor(Progress * 100 + 1e-9);
}

/// <summary>
/// SHA-256 of images at disk speed: 4 MiB reads with <see cref="FileOptions.SequentialScan"/>, the next block read while the
/// current one is hashed, one job per file (callers asking for the same file share it) and a small number of jobs at once.
/// A result is cached with the file's size and modification time (in memory and in the hidden <c>.sha256</c> folder of the
/// images folder) and dropped when either changes. Subscribers hear every 5 % step and the end.
/// </summary>
public sealed class StationImageHasher
{
    public const int BlockSize = 4 << 20;
    private const string CacheFolder = ".sha256";
    private readonly StationImages _images;
    private readonly object _gate = new();
    private readonly Dictionary<string, Job> _jobs = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (long Size, long Mtime, string Sha256)> _cache = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _slots = new(Math.Max(1, Environment.ProcessorCount / 2));

    internal StationImageHasher(StationImages images) => _images = images;

    /// <summary>The slots jobs wait for (tests hold them to keep a job pending).</summary>
    internal SemaphoreSlim Slots => _slots;

    /// <summary>One running hash.</summary>
    public sealed class Job
    {
        internal Job(string name, long size, long mtime) { Name = name; Size = size; Mtime = mtime; }
        public string Name { get; }
        internal long Size { get; }
        internal long Mtime { get; }
        private long _done;
        public long Done => Interlocked.Read(ref _done);
        internal void Add(long n) => Interlocked.Add(ref _done, n);
        internal readonly CancellationTokenSource Cancel = new();
        internal readonly TaskCompletionSource<string> Result = new(TaskCreationOptions.RunContinuationsAsynchronously);
        internal event Action<ImageHashState>? Changed;
        internal void Raise(ImageHashState s) { try { Changed?.Invoke(s); } catch (Exception) { } }
        public Task<string> Completion => Result.Task;
        public double Progress => Size == 0 ? 1 : Math.Min(1, (double)Done / Size);
    }

    private static (long Size, long Mtime) Stamp(FileInfo f) => (f.Length, f.LastWriteTimeUtc.Ticks);

    /// <summary>The state of an image's hash without starting one.</summary>
    public ImageHashState Peek(string name, FileInfo? file = null)
    {
        file ??= new FileInfo(_images.Resolve(name));
        file.Refresh();
        var (size, mtime) = Stamp(file);
        lock (_gate)
        {
            if (_jobs.TryGetValue(name, out var job) && job.Size == size && job.Mtime == mtime) return new ImageHashState(name, "pending", null, job.Progress, null);
            if (CachedLocked(name, size, mtime) is { } sha) return new ImageHashState(name, "complete", sha, 1, null);
        }
        return new ImageHashState(name, "none", null, 0, null);
    }

    private string? CachedLocked(string name, long size, long mtime)
    {
        if (_cache.TryGetValue(name, out var c))
        {
            if (c.Size == size && c.Mtime == mtime) return c.Sha256;
            _cache.Remove(name);
        }
        // The on-disk cache: "<sha256> <size> <mtime ticks>".
        try
        {
            var path = Path.Combine(_images.Directory, CacheFolder, name);
            if (!File.Exists(path)) return null;
            var parts = File.ReadAllText(path).Split(' ');
            if (parts.Length == 3 && parts[0].Length == 64 && long.TryParse(parts[1], CultureInfo.InvariantCulture, out var s) && long.TryParse(parts[2], CultureInfo.InvariantCulture, out var m))
            {
                if (s == size && m == mtime)
                {
                    _cache[name] = (s, m, parts[0]);
                    return parts[0];
                }
                File.Delete(path);
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return null;
    }

    /// <summary>
    /// The cached hash, or the running job, or a new job started now. <paramref name="subscriber"/> (when given) is attached before
    /// a new job starts, so it hears every step; dispose the returned handle to detach.
    /// </summary>
    public (ImageHashState State, Job? Job, IDisposable Subscription) GetOrStart(string? name, Action<ImageHashState>? subscriber = null, Action<ImageHashState>? first = null)
    {
        string full = _images.Resolve(name, true, out var info);
        if (info is DirectoryInfo || (info!.Attributes & FileAttributes.Directory) != 0)
            throw new StationException(400, "IMAGE_IS_FOLDER", "the image is a folder of artefacts; /analyze-image lists its files with their SHA-256");
        var file = new FileInfo(full);
        file.Refresh();
        var (size, mtime) = Stamp(file);
        Job job;
        bool start = false;
        lock (_gate)
        {
            if (CachedLocked(name!, size, mtime) is { } sha)
            {
                var done = new ImageHashState(name!, "complete", sha, 1, null);
                first?.Invoke(done);
                return (done, null, Nothing.Instance);
            }
            if (!_jobs.TryGetValue(name!, out job!) || job.Size != size || job.Mtime != mtime)
            {
                if (job is not null) job.Cancel.Cancel();
                job = new Job(name!, size, mtime);
                _jobs[name!] = job;
                start = true;
            }
            if (subscriber is not null) job.Changed += subscriber;
        }
        IDisposable sub = subscriber is null ? Nothing.Instance : new Unsubscribe(job, subscriber);
        var state = new ImageHashState(name!, "pending", null, job.Progress, null);
        first?.Invoke(state); // before the job can report a step, so a new job's first answer comes first
        if (start) _ = Task.Run(() => RunAsync(job, full));
        return (state, job, sub);
    }

    /// <summary>Hashes the image now (sharing a running job) and returns the hex SHA-256.</summary>
    public async Task<string> ComputeAsync(string? name, CancellationToken ct = default)
    {
        var (state, job, sub) = GetOrStart(name);
        using (sub)
        {
            if (job is null) return state.Sha256!;
            return await job.Completion.WaitAsync(ct).ConfigureAwait(false);
        }
    }

    /// <summary>Drops the cached hash of an image and stops its job (on delete and on a new upload under the name).</summary>
    public void Forget(string name)
    {
        lock (_gate)
        {
            _cache.Remove(name);
            if (_jobs.Remove(name, out var job)) job.Cancel.Cancel();
        }
        try { File.Delete(Path.Combine(_images.Directory, CacheFolder, name)); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    private async Task RunAsync(Job job, string path)
    {
        try
        {
            await _slots.WaitAsync(job.Cancel.Token).ConfigureAwait(false);
            string sha;
            try { sha = await Task.Factory.StartNew(() => HashFile(job, path), job.Cancel.Token, TaskCreationOptions.LongRunning, TaskScheduler.Default).ConfigureAwait(false); }
            finally { _slots.Release(); }
            // The file must be the one whose stamp the job started with.
            var f = new FileInfo(path);
            if (!f.Exists || Stamp(f) != (job.Size, job.Mtime)) throw new IOException("the file changed while it was hashed");
            bool current;
            lock (_gate)
            {
                current = _jobs.TryGetValue(job.Name, out var j) && j == job;
                if (current)
                {
                    _jobs.Remove(job.Name);
                    _cache[job.Name] = (job.Size, job.Mtime, sha);
                }
            }
            if (current)
            try
            {
                var dir = Directory.CreateDirectory(Path.Combine(_images.Directory, CacheFolder));
                File.WriteAllText(Path.Combine(dir.FullName, job.Name), string.Create(CultureInfo.InvariantCulture, $"{sha} {job.Size} {job.Mtime}"));
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
            job.Result.TrySetResult(sha);
            job.Raise(new ImageHashState(job.Name, "complete", sha, 1, null));
        }
        catch (Exception ex)
        {
            lock (_gate)
                if (_jobs.TryGetValue(job.Name, out var j) && j == job) _jobs.Remove(job.Name);
            string why = ex is OperationCanceledException ? "the hash was cancelled (the image was deleted or replaced)" : ex.Message;
            job.Result.TrySetException(new StationException(500, "SHA256_ERROR", "the image could not be hashed: " + why));
            job.Raise(new ImageHashState(job.Name, "error", null, job.Progress, why));
        }
    }

    /// <summary>The hash loop: two 4 MiB buffers, one being read while the other is hashed.</summary>
    private static string HashFile(Job job, string path)
    {
        using SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, FileOptions.SequentialScan);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var a = GC.AllocateUninitializedArray<byte>(BlockSize, pinned: true);
        var b = GC.AllocateUninitializedArray<byte>(BlockSize, pinned: true);
        long offset = 0;
        int lastStep = 0;
        var ct = job.Cancel.Token;
        int n = ReadFull(handle, a, offset);
        while (n > 0)
        {
            ct.ThrowIfCancellationRequested();
            long next = offset + n;
            var current = a;
            var spare = b;
            var read = Task.Run(() => ReadFull(handle, spare, next));
            hash.AppendData(current, 0, n);
            job.Add(n);
            int step = job.Size == 0 ? 20 : (int)Math.Min(20, job.Done * 20 / job.Size);
            if (step > lastStep)
            {
                lastStep = step;
                job.Raise(new ImageHashState(job.Name, "pending", null, step / 20.0, null));
            }
            n = read.GetAwaiter().GetResult();
            offset = next;
            (a, b) = (b, a);
        }
        if (lastStep < 20) job.Raise(new ImageHashState(job.Name, "pending", null, 1, null));
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    private static int ReadFull(SafeFileHandle handle, byte[] buffer, long offset)
    {
        int filled = 0, n;
        while (filled < buffer.Length && (n = RandomAccess.Read(handle, buffer.AsSpan(filled), offset + filled)) > 0) filled += n;
        return filled;
    }

    private sealed class Nothing : IDisposable
    {
        public static readonly Nothing Instance = new();
        public void Dispose() { }
    }

    private sealed class Unsubscribe(Job job, Action<ImageHashState> subscriber) : IDisposable
    {
        public void Dispose() => job.Changed -= subscriber;
    }
}
