using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using TpmProvisioning.Pki;
using TpmProvisioning.Tests.Hardening;
using TpmProvisioning.Tests.Keylime;
using Xunit.Abstractions;

namespace TpmProvisioning.Tests.Station;

/// <summary>
/// Uploads against a station in a process of its own (the test assembly's <see cref="ChildServer"/> entry point), so its memory
/// can be read from /proc and the process killed: a 2 GiB sparse image streams through with the server's resident size flat,
/// and a server killed mid-upload lists nothing of it after a restart on the same data path (the temporary file is removed).
/// </summary>
public sealed class StationImageUploadProcessTests(ITestOutputHelper output)
{
    private sealed class Child : IAsyncDisposable
    {
        public required Process Process { get; init; }
        public required string Url { get; init; }

        public long StatusBytes(string field)
        {
            foreach (var line in File.ReadAllLines($"/proc/{Process.Id}/status"))
                if (line.StartsWith(field + ":", StringComparison.Ordinal))
                    return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0]) * 1024;
            throw new InvalidOperationException(field + " not in /proc status");
        }

        public static async Task<Child> StartAsync(string dataPath)
        {
            var psi = new ProcessStartInfo(Environment.ProcessPath!.EndsWith("dotnet", StringComparison.Ordinal) ? Environment.ProcessPath : "dotnet")
            {
                RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
            };
            foreach (var a in new[] { typeof(ChildServer).Assembly.Location, "serve", dataPath, "Provisioning,Station" }) psi.ArgumentList.Add(a);
            var p = Process.Start(psi)!;
            _ = p.StandardError.ReadToEndAsync();
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
            string? line;
            try
            {
                while ((line = await p.StandardOutput.ReadLineAsync(cts.Token)) is not null && !line.StartsWith("URL ", StringComparison.Ordinal)) { }
            }
            catch (OperationCanceledException) { line = null; }
            if (line is null)
            {
                p.Kill(true);
                p.Dispose();
                throw new InvalidOperationException("the child server did not start");
            }
            _ = p.StandardOutput.ReadToEndAsync();
            return new Child { Process = p, Url = line[4..].TrimEnd('/') };
        }

        public async Task KillAsync()
        {
            if (!Process.HasExited) Process.Kill(entireProcessTree: true);
            await Process.WaitForExitAsync();
        }

        public async ValueTask DisposeAsync()
        {
            try { Process.StandardInput.Close(); } catch (IOException) { } catch (InvalidOperationException) { }
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            try { await Process.WaitForExitAsync(cts.Token); }
            catch (OperationCanceledException) { await KillAsync(); }
            Process.Dispose();
        }
    }

    /// <summary>Zeros up to <paramref name="length"/>; after <paramref name="stallAfter"/> bytes it signals and then waits forever.</summary>
    private sealed class ZeroStream(long length, long stallAfter) : Stream
    {
        private long _pos;
        public readonly TaskCompletionSource Stalled = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly CancellationTokenSource _abort = new();
        /// <summary>Ends the stall with an error (HttpClient does not notice a dead server while it waits for body bytes).</summary>
        public void Abort() => _abort.Cancel();
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => length;
        public override long Position { get => _pos; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();
        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default)
        {
            if (_pos >= stallAfter)
            {
                Stalled.TrySetResult();
                using var both = CancellationTokenSource.CreateLinkedTokenSource(ct, _abort.Token);
                try { await Task.Delay(Timeout.Infinite, both.Token); }
                catch (OperationCanceledException) { throw new IOException("the upload was abandoned"); }
            }
            int n = (int)Math.Min(buffer.Length, Math.Min(length, stallAfter) - _pos);
            if (n <= 0) return 0;
            buffer.Span[..n].Clear();
            _pos += n;
            return n;
        }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    private static HttpClient Client(string dataPath)
    {
        var ca = X509Certificate2.CreateFromPem(File.ReadAllText(Path.Combine(dataPath, "ca", "cacert.pem")));
        X509Certificate2 tenant;
        using (var cca = ComponentCa.LoadOrCreate(Path.Combine(dataPath, "ca"))) tenant = cca.IssueClientCertificate("image-tests");
        var http = KeylimeTestServer.Client(ca, tenant);
        http.Timeout = TimeSpan.FromMinutes(15);
        return http;
    }

    private static async Task<HttpStatusCode> UploadAsync(HttpClient http, string url, string name, Stream body, long length)
    {
        using var content = new StreamContent(body, 1 << 20);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        content.Headers.ContentLength = length;
        using var resp = await http.PostAsync(url + "/upload-image?name=" + name, content);
        return resp.StatusCode;
    }

    private static async Task<List<(string Name, long Size)>> ListAsync(HttpClient http, string url)
    {
        var body = await http.GetStringAsync(url + "/images/list");
        return JsonDocument.Parse(body).RootElement.GetProperty("images").EnumerateArray()
            .Select(i => (i.GetProperty("name").GetString()!, i.GetProperty("size_bytes").GetInt64())).ToList();
    }

    [Fact]
    public async Task ATwoGibImageStreamsWithFlatMemoryAndAKilledUploadLeavesNothingListed()
    {
        if (!OperatingSystem.IsLinux()) return; // /proc is where the resident size is read
        var dataPath = Directory.CreateTempSubdirectory("tpmprov-images-child-").FullName;
        var source = Path.Combine(dataPath, "sparse-source.img");
        try
        {
            const long size = 2L << 30;
            using (var fs = File.Create(source)) fs.SetLength(size); // sparse: no disk, reads as zeros
            string images = Path.Combine(dataPath, "station", "images");

            await using (var child = await Child.StartAsync(dataPath))
            {
                using var http = Client(dataPath);
                // Warm up the route, TLS and the file path before the baseline.
                using (var small = new MemoryStream(new byte[4 << 20]))
                    Assert.Equal(HttpStatusCode.OK, await UploadAsync(http, child.Url, "warmup.img", small, small.Length));
                long baseline = child.StatusBytes("VmRSS");

                await using (var src = new FileStream(source, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan))
                    Assert.Equal(HttpStatusCode.OK, await UploadAsync(http, child.Url, "big.img", src, size));
                long peak = child.StatusBytes("VmHWM"), after = child.StatusBytes("VmRSS");
                output.WriteLine($"RSS baseline {baseline >> 20} MiB, peak {peak >> 20} MiB, after {after >> 20} MiB for a {size >> 20} MiB upload");
                Assert.Contains(("big.img", size), await ListAsync(http, child.Url));
                Assert.Equal(size, new FileInfo(Path.Combine(images, "big.img")).Length);
                // Streamed, never buffered whole: the peak grows by far less than the image (2048 MiB).
                Assert.True(peak - baseline < 256L << 20, $"peak resident size grew by {(peak - baseline) >> 20} MiB during a {size >> 20} MiB upload");
                Assert.Equal(HttpStatusCode.OK, (await http.PostAsync(child.Url + "/delete-image?name=big.img", null)).StatusCode);

                // An upload in flight when the server is killed: 1 GiB declared, 96 MiB sent, then the client stalls.
                var stalling = new ZeroStream(1L << 30, 96L << 20);
                var upload = UploadAsync(http, child.Url, "killed.img", stalling, 1L << 30);
                await stalling.Stalled.Task.WaitAsync(TimeSpan.FromMinutes(5));
                // The server has the partial upload on disk (a hidden temporary file) before it is killed.
                string? part = null;
                for (var until = DateTime.UtcNow.AddMinutes(2); part is null && DateTime.UtcNow < until; await Task.Delay(100))
                    part = Directory.GetFiles(images, ".upload-*.part").FirstOrDefault(f => new FileInfo(f).Length > 0);
                Assert.NotNull(part);
                Assert.DoesNotContain(await ListAsync(http, child.Url), i => i.Name == "killed.img");
                await child.KillAsync();
                stalling.Abort();
                await Assert.ThrowsAnyAsync<Exception>(() => upload);
                Assert.True(File.Exists(part), "the temporary file is what a killed server leaves behind");
            }

            // Restarted on the same data path: nothing of the killed upload is listed, and the leftover is gone.
            await using (var again = await Child.StartAsync(dataPath))
            {
                using var http = Client(dataPath);
                var list = await ListAsync(http, again.Url);
                Assert.Equal(["warmup.img"], list.Select(i => i.Name).ToArray());
                Assert.Empty(Directory.GetFiles(images, ".upload-*"));
                Assert.False(File.Exists(Path.Combine(images, "killed.img")));
            }
        }
        finally
        {
            try { Directory.Delete(dataPath, true); } catch (IOException) { }
        }
    }
}
