using System.Collections.Concurrent;
using System.Management.Automation;
using System.Net;
using System.Security;
using System.Security.Cryptography.X509Certificates;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Tpm;
using TpmProvisioning.Tpm.Transport;

namespace TpmProvisioning.Cmdlets;

/// <summary>
/// Provisions devices at manufacture: for each device, reads the EK certificate, creates an AK, has it sign a CSR through
/// the TPM, posts to the provisioning server, activates the returned credential with the EK, checks the AK certificate and
/// persists the AK. Rows bind by property name, so a CSV of devices provisions as a batch.
/// </summary>
[Cmdlet(VerbsCommon.New, "TpmProvisioning", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(DeviceProvisioningResult))]
public sealed class NewTpmProvisioningCommand : PSCmdlet
{
    /// <summary>Provisioning server base URL, e.g. https://factory-ca:8443 (the request goes to /api/tpm/tpm/provision).</summary>
    [Parameter(Mandatory = true, ValueFromPipelineByPropertyName = true)]
    [Alias("Url")]
    public Uri? Server { get; set; }

    /// <summary>The plant's API key (from New-ProvisioningApiKey).</summary>
    [Parameter(Mandatory = true)]
    public SecureString? ApiKey { get; set; }

    /// <summary>The device's TPM connection string (default: TPM2TOOLS_TCTI, else the platform TPM).</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [Alias("ConnectionString", "Tcti")]
    [ArgumentCompleter(typeof(TpmConnectionCompleter))]
    public string? Tpm { get; set; }

    /// <summary>Device name (6 to 1024 characters).</summary>
    [Parameter(Mandatory = true, ValueFromPipelineByPropertyName = true)]
    [Alias("Name")]
    [ValidateLength(6, 1024)]
    public string DeviceName { get; set; } = "";

    /// <summary>Device serial number.</summary>
    [Parameter(Mandatory = true, ValueFromPipelineByPropertyName = true)]
    [Alias("SerialNumber")]
    [ValidateLength(1, 1024)]
    public string Serial { get; set; } = "";

    /// <summary>Device vendor (must be in the API key's vendor scope).</summary>
    [Parameter(Mandatory = true, ValueFromPipelineByPropertyName = true)]
    [ValidateLength(1, 1024)]
    public string Vendor { get; set; } = "";

    /// <summary>Device version.</summary>
    [Parameter(Mandatory = true, ValueFromPipelineByPropertyName = true)]
    [ValidateLength(1, 1024)]
    public string Version { get; set; } = "";

    /// <summary>Persistent handle for the AK (default: the first free handle from 0x81000002).</summary>
    [Parameter(ValueFromPipelineByPropertyName = true)]
    [TpmHandleTransformation]
    public uint? AkHandle { get; set; }

    /// <summary>
    /// Provision again a device that is already provisioned (its AK still persisted, its certificate valid): a new AK replaces the
    /// old one at its handle. Also replaces any other object at -AkHandle. Without it such a device is skipped and reported
    /// with Status AlreadyProvisioned.
    /// </summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    /// <summary>Which EK certificate to present: Rsa2048 (default) or another EK kind the TPM holds a certificate for.</summary>
    [Parameter]
    public EkKind EkKind { get; set; } = EkKind.Rsa2048;

    /// <summary>Namespace for the namespaced route /api/v1/namespaces/{namespace}/api/tpm/tpm/provision.</summary>
    [Parameter]
    public string? Namespace { get; set; }

    /// <summary>CA certificate (object or PEM/DER path) that the server's TLS certificate must chain to.</summary>
    [Parameter]
    public object? CaCertificate { get; set; }

    /// <summary>Accept any server TLS certificate (testing only).</summary>
    [Parameter]
    public SwitchParameter SkipCertificateCheck { get; set; }

    /// <summary>The TPM CA certificate (object or path) the returned AK certificate must chain to; checked when given.</summary>
    [Parameter]
    public object? TpmCaCertificate { get; set; }

    /// <summary>How many devices to provision at once (different TPMs only; one TPM serves one request at a time). Default 4.</summary>
    [Parameter]
    [ValidateRange(1, 256)]
    public int ThrottleLimit { get; set; } = 4;

    private sealed record Job(int Index, Uri Server, string? Tpm, DeviceIdentity Device, uint? AkHandle);
    private readonly List<Job> _jobs = new();
    private X509Certificate2? _ca, _tpmCa;
    private string? _key;

    protected override void BeginProcessing()
    {
        _ca = LoadCert(CaCertificate, nameof(CaCertificate));
        _tpmCa = LoadCert(TpmCaCertificate, nameof(TpmCaCertificate));
        _key = new NetworkCredential("", ApiKey).Password;
        if (string.IsNullOrEmpty(_key))
            ThrowTerminatingError(new ErrorRecord(new ArgumentException("The API key is empty."), "ApiKeyEmpty", ErrorCategory.InvalidArgument, null));
    }

    private X509Certificate2? LoadCert(object? value, string name) => CertificateInput.Load(this, value, name);

    protected override void ProcessRecord()
    {
        string tpm;
        try { tpm = string.IsNullOrWhiteSpace(Tpm) ? TpmTransportFactory.DefaultConnectionString() : Tpm.Trim(); }
        catch (TpmTransportException ex)
        {
            WriteError(new ErrorRecord(ex, "TpmConnectionFailed", ErrorCategory.ConnectionError, Serial));
            return;
        }
        if (!ShouldProcess($"{Serial} on {tpm}", $"Provision device '{DeviceName}' through {Server} and persist its AK")) return;
        _jobs.Add(new Job(_jobs.Count, Server!, tpm, new DeviceIdentity(DeviceName, Serial, Vendor, Version), AkHandle));
    }

    protected override void EndProcessing()
    {
        if (_jobs.Count == 0) return;
        var events = new BlockingCollection<object>();
        var cts = new CancellationTokenSource();
        _cts = cts;
        int done = 0, failed = 0, skipped = 0, total = _jobs.Count;
        // One queue per TPM: a TPM takes one connection, so its devices go one after another; different TPMs run in parallel.
        var lanes = _jobs.GroupBy(j => j.Tpm ?? "", StringComparer.OrdinalIgnoreCase).Select(g => g.ToList()).ToList();
        var clients = new ConcurrentDictionary<(Uri, string?), ProvisioningClient>();
        var existing = Force ? ExistingAkPolicy.Replace : ExistingAkPolicy.Reuse;
        var worker = Task.Run(async () =>
        {
            try
            {
                await Parallel.ForEachAsync(lanes, new ParallelOptions { MaxDegreeOfParallelism = ThrottleLimit, CancellationToken = cts.Token }, async (lane, ct) =>
                {
                    foreach (var job in lane)
                    {
                        ct.ThrowIfCancellationRequested();
                        var reporter = new Reporter(events, job);
                        object outcome;
                        try
                        {
                            var client = clients.GetOrAdd((job.Server, Namespace), k => new ProvisioningClient(new ProvisioningClientOptions
                            {
                                Server = k.Item1, Namespace = k.Item2, CaCertificate = _ca, SkipCertificateCheck = SkipCertificateCheck,
                            }));
                            using var dev = TpmDevice.Open(job.Tpm);
                            var result = await client.ProvisionAsync(dev, job.Device, _key!, new DeviceProvisioningOptions
                            {
                                EkKind = EkKind, AkHandle = job.AkHandle, ReplaceAkHandle = Force, TpmCaCertificate = _tpmCa, ExistingAk = existing,
                            }, reporter, ct).ConfigureAwait(false);
                            if (result.AlreadyProvisioned) Interlocked.Increment(ref skipped);
                            else Interlocked.Increment(ref done);
                            outcome = DeviceProvisioningResult.From(result, job.Index + 1, job.Tpm ?? "");
                        }
                        catch (OperationCanceledException) when (ct.IsCancellationRequested) { throw; }
                        catch (Exception ex)
                        {
                            Interlocked.Increment(ref failed);
                            outcome = ToError(ex, job);
                        }
                        events.Add(new Finished(job, outcome));
                    }
                }).ConfigureAwait(false);
            }
            catch (OperationCanceledException) { }
            finally
            {
                foreach (var c in clients.Values) c.Dispose();
                events.CompleteAdding();
            }
        });

        // Results (and each device's error) are written in input order; progress moves as each device completes.
        var progress = new ProgressRecord(1, "Provisioning devices", $"0 of {total}");
        var ready = new SortedDictionary<int, object>();
        int next = 0;
        foreach (var e in events.GetConsumingEnumerable())
        {
            switch (e)
            {
                case Finished f:
                    int finished = done + failed + skipped;
                    progress.StatusDescription = $"{finished} of {total} ({done} provisioned, {skipped} already provisioned, {failed} failed)";
                    progress.CurrentOperation = $"{f.Job.Device.Serial}: {(f.Outcome is DeviceProvisioningResult r ? r.Status : "failed")}";
                    progress.PercentComplete = (int)(100L * finished / total);
                    WriteProgress(progress);
                    WriteProgress(new ProgressRecord(DeviceActivityId(f.Job), "Device " + f.Job.Device.Serial, "done") { ParentActivityId = 1, RecordType = ProgressRecordType.Completed });
                    ready[f.Job.Index] = f.Outcome;
                    while (ready.Remove(next, out var o))
                    {
                        if (o is ErrorRecord er) WriteError(er);
                        else WriteObject(o);
                        next++;
                    }
                    break;
                case string v: WriteVerbose(v); break;
                case WarningText w: WriteWarning(w.Text); break;
                case DeviceProgress dp:
                    WriteProgress(new ProgressRecord(DeviceActivityId(dp.Job), "Device " + dp.Job.Device.Serial, dp.Status)
                    {
                        ParentActivityId = 1, PercentComplete = Math.Clamp(dp.Percent, 0, 100),
                    });
                    break;
            }
        }
        worker.GetAwaiter().GetResult();
        foreach (var o in ready.Values)
        {
            if (o is ErrorRecord er) WriteError(er);
            else WriteObject(o);
        }
        progress.RecordType = ProgressRecordType.Completed;
        WriteProgress(progress);
    }

    private static int DeviceActivityId(Job job) => 2 + job.Index;

    private CancellationTokenSource? _cts;
    protected override void StopProcessing() => _cts?.Cancel();

    private ErrorRecord ToError(Exception ex, Job job)
    {
        string target = job.Device.Serial;
        var to = job.Server is { } server ? new TransportTarget(server, _ca, SkipCertificateCheck, null) : null;
        return ex switch
        {
            ProvisioningRequestException { StatusCode: HttpStatusCode.Unauthorized } p => TransportErrors.FromStatus(401, p.Message, ex, to, target)!,
            _ when TransportErrors.Classify(ex, to, target) is { } transport => transport,
            ProvisioningRequestException p => new ErrorRecord(ex, $"ProvisioningRefused{(int)p.StatusCode}", p.StatusCode switch
            {
                HttpStatusCode.Unauthorized => ErrorCategory.AuthenticationError,
                HttpStatusCode.Forbidden => ErrorCategory.PermissionDenied,
                HttpStatusCode.Conflict => ErrorCategory.ResourceExists,
                HttpStatusCode.TooManyRequests => ErrorCategory.LimitsExceeded,
                HttpStatusCode.BadRequest => ErrorCategory.InvalidData,
                _ => ErrorCategory.ResourceUnavailable,
            }, target),
            TpmException => new ErrorRecord(ex, "TpmCommandFailed", ErrorCategory.DeviceError, target),
            TpmTransportException or IOException => new ErrorRecord(ex, "TpmConnectionFailed", ErrorCategory.ConnectionError, target),
            HttpRequestException => new ErrorRecord(ex, "ServerUnreachable", ErrorCategory.ConnectionError, target),
            TaskCanceledException or TimeoutException => new ErrorRecord(ex, "ServerTimeout", ErrorCategory.OperationTimeout, target),
            ArgumentException => new ErrorRecord(ex, "InvalidArgument", ErrorCategory.InvalidArgument, target),
            DeviceProvisioningException => new ErrorRecord(ex, "DeviceProvisioningFailed", ErrorCategory.InvalidResult, target),
            _ => new ErrorRecord(ex, "ProvisioningFailed", ErrorCategory.NotSpecified, target),
        };
    }

    private sealed record Finished(Job Job, object Outcome);
    private sealed record DeviceProgress(Job Job, int Percent, string Status);
    private sealed record WarningText(string Text);

    private sealed class Reporter(BlockingCollection<object> events, Job job) : IOperationReporter
    {
        public void Verbose(string message) => events.Add($"{job.Device.Serial}: {message}");
        public void Warning(string message) => events.Add(new WarningText($"{job.Device.Serial}: {message}"));
        public void Progress(int percent, string status)
        {
            events.Add($"{job.Device.Serial}: {status} ({percent}%)");
            events.Add(new DeviceProgress(job, percent, status));
        }
    }
}
