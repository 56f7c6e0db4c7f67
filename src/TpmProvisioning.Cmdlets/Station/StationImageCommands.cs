using System.Management.Automation;
using System.Net;
using TpmProvisioning.Station;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Cmdlets.Station;

/// <summary>
/// Base of the image cmdlets: local on a data path's images folder, or remote over the station's image routes, with long
/// operations run on a worker while the pipeline thread writes their progress.
/// </summary>
public abstract class StationImageCmdletBase : StationCmdletBase
{
    private readonly CancellationTokenSource _stop = new();
    private volatile string? _status;
    private double _fraction = -1;

    protected CancellationToken Stopping => _stop.Token;

    protected override void StopProcessing() => _stop.Cancel();

    /// <summary>Sets what the progress bar shows next (fraction 0 to 1, or negative for none).</summary>
    protected void SetProgress(double fraction, string status)
    {
        Interlocked.Exchange(ref _fraction, fraction);
        _status = status;
    }

    /// <summary>Runs <paramref name="work"/> on a worker, writing its progress here until it ends; station errors become non-terminating errors.</summary>
    protected bool TryPump<T>(string activity, Func<Task<T>> work, object? target, out T result)
    {
        const int id = 14;
        // Checked here, on the pipeline thread: a -Server that is not an absolute URL, or a data path without a store (for the
        // readers) or that cannot hold one (for Add), is the module's own error before any work starts.
        if (Remote) TransportErrors.RequireServerUri(this, Server, nameof(Server));
        else Defaults.OpenStore(this, ResolvedDataPath, Defaults.Creates(this)).Dispose();
        var task = Task.Run(work, Stopping);
        string? shown = null;
        double shownFraction = -2;
        try
        {
            while (!task.Wait(200))
            {
                double f = Interlocked.CompareExchange(ref _fraction, 0, 0);
                string? s = _status;
                if (s is not null && (s != shown || f != shownFraction))
                {
                    WriteProgress(new ProgressRecord(id, activity, s) { PercentComplete = f < 0 ? -1 : (int)Math.Clamp(f * 100, 0, 100) });
                    (shown, shownFraction) = (s, f);
                }
            }
            result = task.GetAwaiter().GetResult();
            return true;
        }
        catch (Exception outer) when (outer is not PipelineStoppedException)
        {
            var ex = outer is AggregateException { InnerException: { } inner } ? inner : outer;
            result = default!;
            if (ex is StationException or StationRequestException)
            {
                WriteStationError(ex, target);
                return false;
            }
            if (ex is OperationCanceledException && Stopping.IsCancellationRequested) throw new PipelineStoppedException();
            ErrorRecord record;
            if (ex is DataPathStoreException storeFailure) record = storeFailure.Record;
            else if (Remote)
            {
                var to = new TransportTarget(Server!, CertificateInput.Load(this, CaCertificate, nameof(CaCertificate)), false, ClientCertificate);
                record = TransportErrors.Classify(ex, to, Server)
                    ?? (ex is OperationCanceledException ? new ErrorRecord(ex, "StationTimeout", ErrorCategory.OperationTimeout, Server)
                        : ex is System.Net.WebSockets.WebSocketException ? new ErrorRecord(ex, TransportErrors.ServerUnreachable, ErrorCategory.ConnectionError, Server)
                        : new ErrorRecord(ex, "StationFailed", ErrorCategory.InvalidResult, target));
            }
            else if (Defaults.IsPathFailure(ex)) record = Defaults.DataPathNotWritable(ResolvedDataPath, ex);
            else record = new ErrorRecord(ex, "StationFailed", ErrorCategory.InvalidResult, target);
            ThrowTerminatingError(record);
            throw;
        }
        finally
        {
            if (shown is not null) WriteProgress(new ProgressRecord(id, activity, "done") { RecordType = ProgressRecordType.Completed });
        }
    }

    /// <summary>The image client for -Server.</summary>
    protected StationImageClient ImageClient() => new(new StationClientOptions
    {
        Server = Server!, Token = Token is null ? null : new NetworkCredential("", Token).Password,
        CaCertificate = CertificateInput.Load(this, CaCertificate, nameof(CaCertificate)), ClientCertificate = ClientCertificate,
    });

    /// <summary>Opens the data path's store and station engine for the duration of <paramref name="local"/>.</summary>
    protected async Task<T> WithLocalAsync<T>(string dataPath, Func<IStore, StationService, Task<T>> local)
    {
        // The data path's store (DataPathStore: its server's PostgreSQL store, else its SQLite file); TryPump checked it opens.
        using var store = await DataPathStore.OpenAsync(dataPath, mayCreate: true).ConfigureAwait(false);
        return await local(store, new StationService(store, new StationSettings(), dataPath)).ConfigureAwait(false);
    }
}

/// <summary>Lists the station's images (size, type, hash, assigned families), or analyses one.</summary>
[Cmdlet(VerbsCommon.Get, "ProvisioningImage", DefaultParameterSetName = "DataPath")]
[OutputType(typeof(StationImage), typeof(ImageAnalysis))]
public sealed class GetProvisioningImageCommand : StationImageCmdletBase
{
    /// <summary>Image names; wildcards allowed when listing.</summary>
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true)]
    [SupportsWildcards]
    public string[]? Name { get; set; }

    /// <summary>Analyse each image: its partition table, or the files of an artefact folder or archive with their SHA-256.</summary>
    [Parameter]
    public SwitchParameter Analyze { get; set; }

    protected override void ProcessRecord()
    {
        string dataPath = Remote ? "" : ResolvedDataPath;
        if (!TryPump("Reading images", async () =>
            {
                if (Remote) { using var c = ImageClient(); return await c.ListAsync(Stopping).ConfigureAwait(false); }
                return await WithLocalAsync(dataPath, (_, st) => st.ListImagesAsync(Stopping)).ConfigureAwait(false);
            }, null, out var all)) return;
        var selected = new List<StationImage>();
        foreach (var pattern in Name ?? ["*"])
        {
            if (!WildcardPattern.ContainsWildcardCharacters(pattern))
            {
                if (all.FirstOrDefault(i => i.Name == pattern) is { } one) selected.Add(one);
                else
                {
                    var why = StationImages.NameProblem(pattern);
                    WriteStationError(why is null ? new StationException(404, "IMAGE_NOT_FOUND", $"no image '{pattern}'") : new StationException(400, "INVALID_IMAGE_NAME", why), pattern);
                }
                continue;
            }
            var wc = new WildcardPattern(pattern, WildcardOptions.IgnoreCase);
            selected.AddRange(all.Where(i => wc.IsMatch(i.Name)));
        }
        foreach (var image in selected.DistinctBy(i => i.Name))
        {
            if (!Analyze)
            {
                WriteObject(image);
                continue;
            }
            SetProgress(-1, "Analysing " + image.Name);
            if (TryPump("Analysing images", async () =>
                {
                    if (Remote) { using var c = ImageClient(); return await c.AnalyzeAsync(image.Name, Stopping).ConfigureAwait(false); }
                    return await WithLocalAsync(dataPath, (_, st) => Task.FromResult(StationImageAnalyzer.AnalyzePath(st.Images.Resolve(image.Name), Stopping) with { Name = image.Name })).ConfigureAwait(false);
                }, image.Name, out var analysis))
                WriteObject(analysis);
        }
    }
}

/// <summary>Adds an image file to the station: streamed to its images folder and renamed into place when complete.</summary>
[Cmdlet(VerbsCommon.Add, "ProvisioningImage", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, DefaultParameterSetName = "DataPath")]
[OutputType(typeof(StationImage))]
public sealed class AddProvisioningImageCommand : StationImageCmdletBase
{
    /// <summary>The image file to add.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("FullName")]
    public string Path { get; set; } = "";

    /// <summary>The name in the images folder (default: the file's name). A taken name is stored as name_N.</summary>
    [Parameter(Position = 1)]
    public string? Name { get; set; }

    protected override void ProcessRecord()
    {
        string file = GetUnresolvedProviderPathFromPSPath(Path);
        if (!File.Exists(file))
        {
            WriteError(new ErrorRecord(new FileNotFoundException($"No file '{file}'.", file), "ImageFileNotFound", ErrorCategory.ObjectNotFound, Path));
            return;
        }
        string name = Name ?? System.IO.Path.GetFileName(file);
        if (StationImages.NameProblem(name) is { } why)
        {
            WriteStationError(new StationException(400, "INVALID_IMAGE_NAME", why), name);
            return;
        }
        string where = Remote ? Server!.ToString() : ResolvedDataPath;
        if (!ShouldProcess($"{name} on {where}", $"Upload {new FileInfo(file).Length} bytes from {file}")) return;
        long total = new FileInfo(file).Length;
        var reporter = new SyncProgress(n => SetProgress(total == 0 ? 1 : (double)n / total, $"{name}: {n >> 20} of {total >> 20} MiB"));
        string dataPath = Remote ? "" : ResolvedDataPath;
        if (TryPump("Adding image " + name, async () =>
            {
                if (Remote)
                {
                    using var c = ImageClient();
                    var up = await c.UploadAsync(file, name, reporter, Stopping).ConfigureAwait(false);
                    return await c.GetAsync(up.Name, Stopping).ConfigureAwait(false);
                }
                return await WithLocalAsync(dataPath, async (_, st) =>
                {
                    StationImageUpload up;
                    await using (var fs = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan | FileOptions.Asynchronous))
                        up = await st.Images.UploadAsync(name, fs, fs.Length, Stopping, reporter).ConfigureAwait(false);
                    return await st.GetImageAsync(up.Name, Stopping).ConfigureAwait(false);
                }).ConfigureAwait(false);
            }, name, out var image))
            WriteObject(image);
    }

    /// <summary>An <see cref="IProgress{T}"/> that reports on the calling thread (no synchronisation context to post to).</summary>
    private sealed class SyncProgress(Action<long> report) : IProgress<long>
    {
        public void Report(long value) => report(value);
    }
}

/// <summary>Computes (or reads the cached) SHA-256 of an image, showing progress.</summary>
[Cmdlet(VerbsCommon.Get, "ProvisioningImageHash", DefaultParameterSetName = "DataPath")]
[OutputType(typeof(ImageHashState))]
public sealed class GetProvisioningImageHashCommand : StationImageCmdletBase
{
    /// <summary>The image's name.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    public string Name { get; set; } = "";

    protected override void ProcessRecord()
    {
        string dataPath = Remote ? "" : ResolvedDataPath;
        SetProgress(0, Name + ": starting");
        if (TryPump("Hashing " + Name, async () =>
            {
                if (Remote)
                {
                    using var c = ImageClient();
                    return await c.HashAsync(Name, new Reporter(f => SetProgress(f, $"{Name}: {(int)(f * 100)}%")), Stopping).ConfigureAwait(false);
                }
                return await WithLocalAsync(dataPath, async (_, st) =>
                {
                    var (state, job, sub) = st.Images.Hasher.GetOrStart(Name, s => SetProgress(s.Progress, $"{Name}: {s.ProgressPercent}%"));
                    using (sub)
                        return job is null ? state : new ImageHashState(Name, "complete", await job.Completion.WaitAsync(Stopping).ConfigureAwait(false), 1, null);
                }).ConfigureAwait(false);
            }, Name, out var result))
            WriteObject(result);
    }

    private sealed class Reporter(Action<double> report) : IProgress<double>
    {
        public void Report(double value) => report(value);
    }
}

/// <summary>Deletes an image (and its assignments) from the station.</summary>
[Cmdlet(VerbsCommon.Remove, "ProvisioningImage", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High, DefaultParameterSetName = "DataPath")]
[OutputType(typeof(void))]
public sealed class RemoveProvisioningImageCommand : StationImageCmdletBase
{
    /// <summary>The image's name.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    public string Name { get; set; } = "";

    protected override void ProcessRecord()
    {
        if (StationImages.NameProblem(Name) is { } why)
        {
            WriteStationError(new StationException(400, "INVALID_IMAGE_NAME", why), Name);
            return;
        }
        string where = Remote ? Server!.ToString() : ResolvedDataPath;
        if (!ShouldProcess($"{Name} on {where}", "Delete image")) return;
        string dataPath = Remote ? "" : ResolvedDataPath;
        TryPump("Removing " + Name, async () =>
        {
            if (Remote) { using var c = ImageClient(); await c.DeleteAsync(Name, Stopping).ConfigureAwait(false); return true; }
            return await WithLocalAsync(dataPath, async (_, st) => { await st.DeleteImageAsync(Name, Actor, Stopping).ConfigureAwait(false); return true; }).ConfigureAwait(false);
        }, Name, out _);
    }
}
