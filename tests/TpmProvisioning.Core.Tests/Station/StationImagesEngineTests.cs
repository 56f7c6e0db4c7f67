using System.Security.Cryptography;
using TpmProvisioning.Station;

namespace TpmProvisioning.Tests.Station;

/// <summary>The images engine on a real folder: the name rule, shared hash jobs, the cache and its invalidation, uploads that fail.</summary>
public sealed class StationImagesEngineTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("tpmprov-images-engine-").FullName;
    private string Images => Path.Combine(_dir, "images");

    public void Dispose()
    {
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    [Theory]
    [InlineData("disk.img", true)]
    [InlineData("raspios-2026-01-01.img.xz", true)]
    [InlineData("with space.img", true)]
    [InlineData("", false)]
    [InlineData("../x", false)]
    [InlineData("..", false)]
    [InlineData(".", false)]
    [InlineData("/etc/passwd", false)]
    [InlineData("a/b", false)]
    [InlineData("a\\b", false)]
    [InlineData("..\\x", false)]
    [InlineData(".hidden", false)]
    [InlineData("x..y", false)]
    [InlineData("a\0b", false)]
    [InlineData("a\nb", false)]
    [InlineData(" lead", false)]
    [InlineData("C:x", false)]
    [InlineData("%2e%2e%2fx", false)]
    [InlineData("%2fetc", false)]
    [InlineData("100%.img", true)]
    public void TheNameRule(string name, bool ok) => Assert.Equal(ok, StationImages.NameProblem(name) is null);

    [Fact]
    public void ALongNameIsRefused() => Assert.NotNull(StationImages.NameProblem(new string('a', StationImages.MaxNameLength + 1)));

    [Fact]
    public async Task ConcurrentCallersShareOneJobAndTheCacheFollowsTheFile()
    {
        var images = new StationImages(Images);
        var data = RandomNumberGenerator.GetBytes(48 << 20);
        await File.WriteAllBytesAsync(Path.Combine(Images, "a.img"), data);
        var seen = new List<ImageHashState>();
        // Hold every hashing slot so the job stays pending while the second caller asks.
        int held = 0;
        while (images.Hasher.Slots.Wait(0)) held++;
        var (first, job1, sub1) = images.Hasher.GetOrStart("a.img", s => { lock (seen) seen.Add(s); });
        var (_, job2, sub2) = images.Hasher.GetOrStart("a.img");
        images.Hasher.Slots.Release(held);
        Assert.Equal("pending", first.Status);
        Assert.NotNull(job1);
        Assert.Same(job1, job2);
        var results = await Task.WhenAll(job1!.Completion, images.Hasher.ComputeAsync("a.img"));
        sub1.Dispose();
        sub2.Dispose();
        Assert.All(results, r => Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(data)), r));
        lock (seen) Assert.Equal("complete", seen[^1].Status);
        Assert.Equal("complete", images.Hasher.Peek("a.img").Status);

        // A second engine on the same folder (as a cmdlet beside a server) reads the cache from disk.
        Assert.Equal(results[0], new StationImages(Images).Hasher.Peek("a.img").Sha256);
        // The file changes: the cache no longer answers.
        File.SetLastWriteTimeUtc(Path.Combine(Images, "a.img"), DateTime.UtcNow.AddHours(1));
        Assert.Equal("none", images.Hasher.Peek("a.img").Status);
        Assert.Equal("none", new StationImages(Images).Hasher.Peek("a.img").Status);
    }

    [Fact]
    public async Task AFailedUploadLeavesNoFileAndATakenNameIsNumbered()
    {
        var images = new StationImages(Images, maxBytes: 1 << 20);
        await Assert.ThrowsAsync<StationException>(() => images.UploadAsync("big.img", new MemoryStream(new byte[(1 << 20) + 1]), null));
        await Assert.ThrowsAsync<IOException>(() => images.UploadAsync("broken.img", new FailingStream(), null));
        var short1 = await Assert.ThrowsAsync<StationException>(() => images.UploadAsync("short.img", new MemoryStream(new byte[10]), 20));
        Assert.Equal("STREAM_ERROR", short1.Code);
        Assert.Empty(Directory.GetFileSystemEntries(Images));

        var a = await images.UploadAsync("disk.img.xz", new MemoryStream(new byte[5]), 5);
        var b = await images.UploadAsync("disk.img.xz", new MemoryStream(new byte[6]), 6);
        Assert.Equal(("disk.img.xz", false), (a.Name, a.Renamed));
        Assert.Equal(("disk_1.img.xz", true), (b.Name, b.Renamed));
        Assert.Equal(["disk.img.xz", "disk_1.img.xz"], images.List().Select(i => i.Name).ToArray());

        // A leftover of a killed upload is hidden and cleaned.
        await File.WriteAllBytesAsync(Path.Combine(Images, ".upload-0123.part"), new byte[3]);
        Assert.Equal(2, images.List().Count);
        Assert.Equal(1, images.CleanLeftovers());
    }

    private sealed class FailingStream : MemoryStream
    {
        private int _reads;
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default) =>
            ++_reads < 3 ? ValueTask.FromResult(Math.Min(buffer.Length, 1000)) : throw new IOException("connection reset");
    }
}
