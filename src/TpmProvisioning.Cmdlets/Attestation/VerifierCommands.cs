using System.Management.Automation;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json.Nodes;
using TpmProvisioning.Attestation;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Cmdlets;

/// <summary>An agent as a Keylime verifier watches it.</summary>
public sealed class VerifierAgent
{
    public string AgentId { get; init; } = "";
    /// <summary>The verifier asked (binds to Test-AgentAttestation -Verifier).</summary>
    public Uri? Verifier { get; init; }
    /// <summary>The operational state by Keylime's name (GET_QUOTE, INVALID_QUOTE, ...; see <see cref="AttestationStateNames"/>).</summary>
    public string State { get; init; } = "";
    /// <summary>Keylime's number of <see cref="State"/>.</summary>
    public int StateCode { get; init; }
    /// <summary>PASS for GET_QUOTE..PROVIDE_V_RETRY, FAIL for FAILED, INVALID_QUOTE and TENANT_FAILED, PENDING otherwise.</summary>
    public string AttestationStatus { get; init; } = "";
    public long AttestationCount { get; init; }
    public DateTimeOffset? LastReceivedQuote { get; init; }
    public DateTimeOffset? LastSuccessfulAttestation { get; init; }
    public int? SeverityLevel { get; init; }
    public string? LastEventId { get; init; }
    /// <summary>The failed checks of the last judgement (objects; hidden from Export-Csv, which gets <see cref="FailureSummary"/>).</summary>
    [Hidden]
    public AttestationFailure[] Failures { get; init; } = [];
    /// <summary>The failed checks as one string: <c>event_id: reason</c>, separated by <c>; </c>. Empty when none failed.</summary>
    public string FailureSummary => AttestationStateNames.Summary(Failures);
    /// <summary>The manufacturing serial of the device whose AK this agent uses, when the store knows it (-DataPath).</summary>
    public string? Serial { get; init; }
    /// <summary>The manufacturing device name, when the store knows it.</summary>
    public string? DeviceName { get; init; }
    public string Ip { get; init; } = "";
    public int Port { get; init; }
    public string HashAlg { get; init; } = "";
    public string EncAlg { get; init; } = "";
    public string SignAlg { get; init; } = "";
    public string TpmPolicy { get; init; } = "{}";
    public bool HasRuntimePolicy { get; init; }
    public bool HasMbRefstate { get; init; }
    /// <summary>Start-AgentAttestation -Payload: true once the agent proved it derived the payload key (keys/verify); null without a payload.</summary>
    public bool? PayloadVerified { get; init; }

    internal VerifierAgent WithDevice(string serial, string deviceName) => new()
    {
        AgentId = AgentId, Verifier = Verifier, State = State, StateCode = StateCode, AttestationStatus = AttestationStatus,
        AttestationCount = AttestationCount, LastReceivedQuote = LastReceivedQuote, LastSuccessfulAttestation = LastSuccessfulAttestation,
        SeverityLevel = SeverityLevel, LastEventId = LastEventId, Failures = Failures, Serial = serial, DeviceName = deviceName, Ip = Ip, Port = Port,
        HashAlg = HashAlg, EncAlg = EncAlg, SignAlg = SignAlg, TpmPolicy = TpmPolicy, HasRuntimePolicy = HasRuntimePolicy, HasMbRefstate = HasMbRefstate,
        PayloadVerified = PayloadVerified,
    };

    internal static DateTimeOffset? Time(long unix) => unix > 0 ? DateTimeOffset.FromUnixTimeSeconds(unix) : null;

    internal static VerifierAgent From(string id, VerifierAgentStatus s, Uri verifier, bool? payloadVerified = null) => new()
    {
        PayloadVerified = payloadVerified,
        AgentId = id, Verifier = verifier, State = OperationalStates.KeylimeName((OperationalState)s.OperationalState), StateCode = s.OperationalState,
        AttestationStatus = AttestationStateNames.Status(OperationalStates.Status((OperationalState)s.OperationalState)), AttestationCount = s.AttestationCount,
        LastReceivedQuote = Time(s.LastReceivedQuote), LastSuccessfulAttestation = Time(s.LastSuccessfulAttestation), SeverityLevel = s.SeverityLevel,
        LastEventId = s.LastEventId, Failures = [.. s.Failures], Ip = s.Ip, Port = s.Port, HashAlg = s.HashAlg, EncAlg = s.EncAlg, SignAlg = s.SignAlg,
        TpmPolicy = s.TpmPolicy, HasRuntimePolicy = s.HasRuntimePolicy != 0, HasMbRefstate = s.HasMbRefstate != 0,
    };
}

/// <summary>One agent's verdict from Test-AgentAttestation.</summary>
public sealed class AttestationTestResult
{
    public string AgentId { get; init; } = "";
    public bool Passed { get; init; }
    /// <summary>
    /// Keylime's state name (<see cref="AttestationStateNames"/>): the verifier's, or for a direct check GET_QUOTE (the quote passed),
    /// INVALID_QUOTE (it failed a check) or FAILED (no quote could be had).
    /// </summary>
    public string State { get; init; } = "";
    /// <summary>The failed checks (objects; hidden from Export-Csv, which gets <see cref="FailureSummary"/>).</summary>
    [Hidden]
    public AttestationFailure[] Failures { get; init; } = [];
    /// <summary>The failed checks as one string: <c>event_id: reason</c>, separated by <c>; </c>. Empty when all passed.</summary>
    public string FailureSummary => AttestationStateNames.Summary(Failures);
    /// <summary>The input row (1 = the first agent checked by this call), so results can be matched to what was asked.</summary>
    public int Row { get; init; }
    /// <summary>When the judged quote was taken (direct check) or last passed (verifier).</summary>
    public DateTimeOffset? QuoteTime { get; init; }
    /// <summary>verifier or agent: where the verdict came from.</summary>
    public string Source { get; init; } = "";
}

/// <summary>An attestation policy: PCR values (Keylime's tpm_policy), and optionally a runtime (IMA) policy and a measured-boot refstate.</summary>
public sealed class AttestationPolicy
{
    /// <summary>Keylime's tpm_policy JSON text.</summary>
    public string TpmPolicy { get; init; } = "{}";
    /// <summary>Keylime 7 runtime policy JSON, or null.</summary>
    public string? RuntimePolicy { get; init; }
    /// <summary>Measured-boot reference state JSON, or null.</summary>
    public string? MbRefstate { get; init; }
    /// <summary>The PCRs the tpm_policy pins.</summary>
    public int[] Pcr { get; init; } = [];
    /// <summary>The PCR bank the values come from.</summary>
    public string HashAlgorithm { get; init; } = "sha256";
    /// <summary>Files in the runtime policy.</summary>
    public int RuntimeEntries { get; init; }
}

/// <summary>Base of the cmdlets that talk to a Keylime verifier: TLS trust and the tenant's client certificate.</summary>
public abstract class VerifierCmdletBase : PSCmdlet
{
    /// <summary>CA certificate (object or PEM/DER path) the verifier's TLS certificate must chain to: the server-components CA.</summary>
    [Parameter]
    public object? CaCertificate { get; set; }

    /// <summary>Tenant client certificate (with key) from the components CA.</summary>
    [Parameter]
    public X509Certificate2? ClientCertificate { get; set; }

    /// <summary>Accept any verifier TLS certificate (labs only).</summary>
    [Parameter]
    public SwitchParameter SkipCertificateCheck { get; set; }

    protected VerifierClient VerifierClient(Uri verifier)
    {
        TransportErrors.RequireServerUri(this, verifier, "Verifier");
        var ca = CertificateInput.Load(this, CaCertificate, nameof(CaCertificate));
        _transport = new TransportTarget(verifier, ca, SkipCertificateCheck, ClientCertificate);
        return new(new VerifierClientOptions
        {
            Verifier = verifier, CaCertificate = ca, ClientCertificate = ClientCertificate,
            SkipCertificateCheck = SkipCertificateCheck,
        });
    }

    private TransportTarget? _transport;

    internal ErrorRecord VerifierError(Exception ex, object? target) => RegistrarCmdletBase.KeylimeError(ex, "Verifier", target, _transport);

    protected static bool IsExpected(Exception ex) => RegistrarCmdletBase.IsExpected(ex);
}

/// <summary>Adds agents to a Keylime verifier with a policy: from then on the verifier watches them.</summary>
[Cmdlet(VerbsLifecycle.Start, "AgentAttestation", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(VerifierAgent))]
public sealed class StartAgentAttestationCommand : VerifierCmdletBase
{
    /// <summary>The verifier's base address, e.g. https://verifier:8881.</summary>
    [Parameter(Mandatory = true)]
    [ArgumentCompleter(typeof(VerifierUrlCompleter))]
    public Uri? Verifier { get; set; }

    /// <summary>The agent id (binds from Get-AttestationAgent -Registrar output).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("Id", "AgentUuid")]
    public string AgentId { get; set; } = "";

    /// <summary>Address the verifier reaches the agent at.</summary>
    [Parameter(Mandatory = true, ValueFromPipelineByPropertyName = true)]
    [Alias("CloudAgentIp")]
    public string? Ip { get; set; }

    /// <summary>Port the verifier reaches the agent at.</summary>
    [Parameter(Mandatory = true, ValueFromPipelineByPropertyName = true)]
    [Alias("CloudAgentPort")]
    [ValidateRange(1, 65535)]
    public int Port { get; set; }

    /// <summary>The agent's AK, TPM2B_PUBLIC base64 (the registrar's aik_tpm).</summary>
    [Parameter(Mandatory = true, ValueFromPipelineByPropertyName = true)]
    [Alias("AkTpm")]
    public string? AikTpm { get; set; }

    /// <summary>The agent's TLS certificate, PEM (the registrar's mtls_cert); the verifier accepts only this certificate from the agent.</summary>
    [Parameter(Mandatory = true, ValueFromPipelineByPropertyName = true)]
    [Alias("MtlsCert")]
    public string? MtlsCertificate { get; set; }

    /// <summary>The policy (New-AttestationPolicy output) or Keylime tpm_policy JSON text.</summary>
    [Parameter]
    public object? Policy { get; set; }

    /// <summary>Tenant's revocation key (RSA private key, PEM text or path): the verifier signs revocation notices with it.</summary>
    [Parameter]
    public string? RevocationKey { get; set; }

    /// <summary>
    /// A file delivered to the agent encrypted under a fresh payload key K (a zip is extracted by the agent). The tenant part of
    /// Keylime's bootstrap: the agent's NK is checked with an identity quote, U goes to the agent, V to the verifier, which
    /// releases it only after a good quote.
    /// </summary>
    [Parameter]
    public string? Payload { get; set; }

    /// <summary>With -Payload: the client certificate (with key) presented to the agent; default -ClientCertificate.</summary>
    [Parameter]
    public X509Certificate2? AgentCertificate { get; set; }

    /// <summary>With -Payload: how long to wait for the agent to prove it derived the payload key (default 30 s).</summary>
    [Parameter]
    public TimeSpan PayloadTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Accepted PCR bank hash algorithms (default sha512, sha384, sha256).</summary>
    [Parameter]
    [ValidateSet("sha1", "sha256", "sha384", "sha512")]
    public string[] AcceptHashAlgorithm { get; set; } = ["sha512", "sha384", "sha256"];

    protected override void ProcessRecord()
    {
        var body = new JsonObject
        {
            ["cloudagent_ip"] = Ip,
            ["cloudagent_port"] = Port,
            ["ak_tpm"] = AikTpm,
            ["mtls_cert"] = MtlsCertificate,
            ["tpm_policy"] = "{}",
            ["runtime_policy"] = "",
            ["mb_refstate"] = "null",
            ["ima_sign_verification_keys"] = "[]",
            ["metadata"] = "{}",
            ["accept_tpm_hash_algs"] = new JsonArray([.. AcceptHashAlgorithm.Select(a => (JsonNode)a)]),
            ["accept_tpm_encryption_algs"] = new JsonArray("ecc", "rsa"),
            ["accept_tpm_signing_algs"] = new JsonArray("ecschnorr", "rsassa", "rsapss", "ecdsa"),
            ["supported_version"] = KeylimeApi.CurrentVersion,
        };
        switch (Policy is PSObject p ? p.BaseObject : Policy)
        {
            case AttestationPolicy ap:
                body["tpm_policy"] = ap.TpmPolicy;
                if (ap.RuntimePolicy is not null) body["runtime_policy"] = Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes(ap.RuntimePolicy));
                if (ap.MbRefstate is not null) body["mb_refstate"] = ap.MbRefstate;
                break;
            case string s:
                body["tpm_policy"] = s;
                break;
            case null: break;
            default:
                ThrowTerminatingError(new ErrorRecord(new ArgumentException("-Policy takes New-AttestationPolicy output or tpm_policy JSON text."), "InvalidPolicy", ErrorCategory.InvalidArgument, Policy));
                break;
        }
        if (RevocationKey is { } rk)
        {
            string? pem = rk.Contains("-----BEGIN", StringComparison.Ordinal) ? rk : ReadRevocationKey(rk);
            if (pem is null) return;
            body["revocation_key"] = pem;
        }
        if (!ShouldProcess($"{AgentId} ({Ip}:{Port}) at {Verifier}", Payload is null ? "Start attestation" : "Start attestation and deliver a payload")) return;
        using var client = VerifierClient(Verifier!);
        KeylimePayload? bootstrap = null;
        using var agent = Payload is null ? null : new AgentConnector(AgentCertificate ?? ClientCertificate, TimeSpan.FromSeconds(30));
        var agentConfig = new VerifierAgentConfig { Ip = Ip!, Port = Port, AkTpm = AikTpm!, MtlsCert = MtlsCertificate };
        try
        {
            if (Payload is not null)
            {
                bootstrap = SendU(agent!, agentConfig);
                if (bootstrap is null) return;
                body["v"] = Convert.ToBase64String(bootstrap.V);
            }
            client.AddAsync(AgentId, body.ToJsonString()).GetAwaiter().GetResult();
            bool? verified = bootstrap is null ? null : WaitForKey(agent!, agentConfig, bootstrap);
            WriteObject(VerifierAgent.From(AgentId, client.GetAsync(AgentId).GetAwaiter().GetResult(), Verifier!, verified));
        }
        catch (Exception ex) when (IsExpected(ex)) { WriteError(VerifierError(ex, AgentId)); }
    }

    /// <summary>The PEM text of the -RevocationKey file, or null after a FileNotFound / RevocationKeyUnreadable error for this agent.</summary>
    private string? ReadRevocationKey(string path)
    {
        string full = GetUnresolvedProviderPathFromPSPath(path);
        try { return File.ReadAllText(full); }
        catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException)
        {
            WriteError(new ErrorRecord(new FileNotFoundException($"-RevocationKey: no file at '{full}'.", full), "FileNotFound", ErrorCategory.ObjectNotFound, AgentId));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            WriteError(new ErrorRecord(new IOException($"-RevocationKey: cannot read '{full}': {ex.Message}", ex), "RevocationKeyUnreadable", ErrorCategory.ReadError, AgentId));
        }
        return null;
    }

    /// <summary>Checks the agent's NK with an identity quote under its AK, then sends U (encrypted to the NK), the auth tag and the payload.</summary>
    private KeylimePayload? SendU(AgentConnector agent, VerifierAgentConfig config)
    {
        byte[] content;
        try { content = File.ReadAllBytes(GetUnresolvedProviderPathFromPSPath(Payload!)); }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { WriteError(new ErrorRecord(ex, "PayloadUnreadable", ErrorCategory.ReadError, Payload)); return null; }
        string nonce = VerifierService.NewNonce();
        var id = agent.GetIdentityQuoteAsync(config, nonce, default).GetAwaiter().GetResult();
        if (id.Status != AgentCallStatus.Ok)
        {
            WriteError(new ErrorRecord(new HttpRequestException($"Agent {AgentId}: identity quote: {id.HttpStatus} {id.Message}"), id.Status == AgentCallStatus.Unreachable ? "AgentUnreachable" : $"AgentRefused{id.HttpStatus}", ErrorCategory.ConnectionError, AgentId));
            return null;
        }
        var response = QuoteResponse.FromJson(id.Results);
        using var ak = PreparedAk.FromTpm2B(Convert.FromBase64String(AikTpm!));
        var verdict = QuoteJudge.Judge(config, new VerifierAgentProgress(), ak, global::TpmProvisioning.Attestation.Verifier.TpmPolicy.Empty, nonce, 1u << AgentService.DataPcr, response);
        if (!verdict.Passed || verdict.Progress.NkPem is not { } nk)
        {
            WriteError(new ErrorRecord(new InvalidOperationException($"Agent {AgentId}: the identity quote does not bind its NK: {string.Join("; ", verdict.Failures)}"), "AgentIdentityInvalid", ErrorCategory.SecurityError, AgentId));
            return null;
        }
        var bootstrap = KeylimePayload.Create(content);
        var u = agent.ProvideUAsync(config, KeylimePayload.EncryptKeyShare(nk, bootstrap.U), bootstrap.AuthTag(AgentId), bootstrap.EncryptedPayload, default).GetAwaiter().GetResult();
        if (u.Status != AgentCallStatus.Ok)
        {
            WriteError(new ErrorRecord(new HttpRequestException($"Agent {AgentId}: keys/ukey: {u.HttpStatus} {u.Message}"), $"AgentRefused{u.HttpStatus}", ErrorCategory.ConnectionError, AgentId));
            return null;
        }
        return bootstrap;
    }

    /// <summary>Polls keys/verify until the agent answers the HMAC of a fresh challenge under K (it has U and the verifier's V).</summary>
    private bool WaitForKey(AgentConnector agent, VerifierAgentConfig config, KeylimePayload bootstrap)
    {
        var deadline = DateTime.UtcNow + PayloadTimeout;
        var progress = new ProgressRecord(1, "Start-AgentAttestation", $"Waiting for {AgentId} to derive the payload key");
        while (DateTime.UtcNow < deadline)
        {
            WriteProgress(progress);
            string challenge = VerifierService.NewNonce();
            var r = agent.VerifyKeyAsync(config, challenge, default).GetAwaiter().GetResult();
            if (r.Status == AgentCallStatus.Ok && r.Results.ValueKind == System.Text.Json.JsonValueKind.Object && r.Results.TryGetProperty("hmac", out var h)
                && h.ValueKind == System.Text.Json.JsonValueKind.String)
            {
                bool ok = System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(
                    System.Text.Encoding.ASCII.GetBytes(h.GetString() ?? ""), System.Text.Encoding.ASCII.GetBytes(KeylimePayload.Hmac(bootstrap.K, challenge)));
                if (!ok) WriteWarning($"Agent {AgentId} answered keys/verify with a wrong HMAC.");
                progress.RecordType = ProgressRecordType.Completed;
                WriteProgress(progress);
                return ok;
            }
            Thread.Sleep(250);
        }
        progress.RecordType = ProgressRecordType.Completed;
        WriteProgress(progress);
        WriteWarning($"Agent {AgentId} did not prove it derived the payload key within {PayloadTimeout.TotalSeconds} s (the verifier releases V only after a good quote).");
        return false;
    }
}

/// <summary>Stops a Keylime verifier watching agents (PUT .../stop), or removes them from it with -Remove.</summary>
[Cmdlet(VerbsLifecycle.Stop, "AgentAttestation", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
public sealed class StopAgentAttestationCommand : VerifierCmdletBase
{
    /// <summary>The verifier's base address.</summary>
    [Parameter(Mandatory = true, ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(VerifierUrlCompleter))]
    public Uri? Verifier { get; set; }

    /// <summary>The agent id.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("Id", "AgentUuid")]
    public string AgentId { get; set; } = "";

    /// <summary>Delete the agent from the verifier instead of only stopping (DELETE).</summary>
    [Parameter]
    public SwitchParameter Remove { get; set; }

    protected override void ProcessRecord()
    {
        if (!ShouldProcess($"{AgentId} at {Verifier}", Remove ? "Remove the agent from the verifier" : "Stop attestation (the agent's attestation then fails)")) return;
        using var client = VerifierClient(Verifier!);
        try
        {
            if (Remove) client.DeleteAsync(AgentId).GetAwaiter().GetResult();
            else client.StopAsync(AgentId).GetAwaiter().GetResult();
        }
        catch (Exception ex) when (IsExpected(ex)) { WriteError(VerifierError(ex, AgentId)); }
    }
}

/// <summary>
/// Checks agents' attestation now, for scripts and scheduled tasks: from a verifier (its verdict and how fresh it is), or
/// directly (a fresh quote fetched over mutual TLS and judged here against a policy). One result per agent.
/// </summary>
[Cmdlet(VerbsDiagnostic.Test, "AgentAttestation", DefaultParameterSetName = "Verifier")]
[OutputType(typeof(AttestationTestResult), typeof(bool))]
public sealed class TestAgentAttestationCommand : VerifierCmdletBase
{
    /// <summary>The verifier to ask (binds from Get-AttestationAgent -Verifier output).</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Verifier", ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(VerifierUrlCompleter))]
    public Uri? Verifier { get; set; }

    /// <summary>Agent ids; with -Verifier and none given, every agent the verifier watches.</summary>
    [Parameter(Position = 0, ValueFromPipelineByPropertyName = true, ParameterSetName = "Verifier")]
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true, ParameterSetName = "Direct")]
    [Alias("Id", "AgentUuid")]
    public string[]? AgentId { get; set; }

    /// <summary>With -Verifier: the last passing quote must be at most this old (default 60 s).</summary>
    [Parameter(ParameterSetName = "Verifier")]
    public TimeSpan MaxAge { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>Direct: the agent's address.</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Direct", ValueFromPipelineByPropertyName = true)]
    public string? Ip { get; set; }

    /// <summary>Direct: the agent's port.</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Direct", ValueFromPipelineByPropertyName = true)]
    [ValidateRange(1, 65535)]
    public int Port { get; set; }

    /// <summary>Direct: the agent's AK, TPM2B_PUBLIC base64.</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Direct", ValueFromPipelineByPropertyName = true)]
    [Alias("AkTpm")]
    public string? AikTpm { get; set; }

    /// <summary>Direct: the agent's TLS certificate, PEM; only this certificate is accepted from the agent.</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Direct", ValueFromPipelineByPropertyName = true)]
    [Alias("MtlsCert")]
    public string? MtlsCertificate { get; set; }

    /// <summary>Direct: the policy to judge by (New-AttestationPolicy output or tpm_policy JSON text).</summary>
    [Parameter(ParameterSetName = "Direct")]
    public object? Policy { get; set; }

    /// <summary>Return only $true when every agent passed, else $false.</summary>
    [Parameter]
    public SwitchParameter Quiet { get; set; }

    /// <summary>How many agents are checked at once (verifier reads or direct quotes). Default 8.</summary>
    [Parameter]
    [ValidateRange(1, 256)]
    public int ThrottleLimit { get; set; } = 8;

    private bool _all = true;
    private bool _any;

    /// <summary>One agent to check: run on a worker; what it reports is written in input order.</summary>
    private sealed class Check(int row, string agentId, Action<Check> body)
    {
        public int Row { get; } = row;
        public string AgentId { get; } = agentId;
        public readonly List<object> Output = new();
        public void Execute() => body(this);
    }

    private readonly List<Check> _checks = new();
    private readonly List<IDisposable> _owned = new();
    private Check? _current;

    protected override void ProcessRecord()
    {
        if (ParameterSetName == "Verifier") TestViaVerifier();
        else TestDirect();
    }

    protected override void EndProcessing()
    {
        try { RunChecks(); }
        finally
        {
            foreach (var d in _owned) d.Dispose();
            _owned.Clear();
        }
        if (Quiet) WriteObject(_any && _all);
    }

    /// <summary>Runs the queued checks, at most -ThrottleLimit at once; writes each agent's result in input order as soon as it and every earlier one are done.</summary>
    private void RunChecks()
    {
        if (_checks.Count == 0) return;
        var done = new System.Collections.Concurrent.BlockingCollection<Check>();
        var worker = Task.Run(() =>
        {
            try
            {
                Parallel.ForEach(_checks, new ParallelOptions { MaxDegreeOfParallelism = ThrottleLimit }, c =>
                {
                    try { c.Execute(); }
                    catch (Exception ex) when (ex is not OutOfMemoryException)
                    {
                        c.Output.Add(new ErrorRecord(ex, "AttestationCheckFailed", ErrorCategory.NotSpecified, c.AgentId));
                        c.Output.Add(new AttestationTestResult { AgentId = c.AgentId, Row = c.Row, Passed = false, State = AttestationStateNames.Unknown, Source = "verifier",
                            Failures = [new() { EventId = "internal.error", Reason = ex.Message }] });
                    }
                    done.Add(c);
                });
            }
            finally { done.CompleteAdding(); }
        });
        var ready = new SortedDictionary<int, Check>();
        int next = 1, finished = 0;
        var progress = new ProgressRecord(1, "Checking attestation", $"0 of {_checks.Count}");
        foreach (var c in done.GetConsumingEnumerable())
        {
            finished++;
            if (!Quiet)
            {
                progress.StatusDescription = $"{finished} of {_checks.Count}";
                progress.CurrentOperation = c.AgentId;
                progress.PercentComplete = (int)(100L * finished / _checks.Count);
                WriteProgress(progress);
            }
            ready[c.Row] = c;
            while (ready.Remove(next, out var r)) { Flush(r); next++; }
        }
        worker.GetAwaiter().GetResult();
        foreach (var r in ready.Values) Flush(r);
        if (!Quiet)
        {
            progress.RecordType = ProgressRecordType.Completed;
            WriteProgress(progress);
        }
    }

    private void Flush(Check c)
    {
        foreach (var o in c.Output)
        {
            if (o is ErrorRecord e)
            {
                // An error about one agent; with -Quiet it is not written: the final boolean carries the failure.
                _all = false;
                if (!Quiet) WriteError(e);
            }
            else if (o is AttestationTestResult r)
            {
                _any = true;
                _all &= r.Passed;
                if (!Quiet) WriteObject(r);
            }
        }
    }

    private void Queue(string agentId, Action<Check> body) => _checks.Add(new Check(_checks.Count + 1, agentId, body));

    private static void Report(Check c, ErrorRecord error) => c.Output.Add(error);

    private static void Emit(Check c, AttestationTestResult r) => c.Output.Add(new AttestationTestResult
    {
        AgentId = r.AgentId, Passed = r.Passed, State = r.State, Failures = r.Failures, QuoteTime = r.QuoteTime, Source = r.Source, Row = c.Row,
    });

    protected override void BeginProcessing()
    {
        if (MaxAge <= TimeSpan.Zero)
            ThrowTerminatingError(new ErrorRecord(new ArgumentOutOfRangeException(nameof(MaxAge), MaxAge, "-MaxAge must be positive."), "InvalidMaxAge", ErrorCategory.InvalidArgument, MaxAge));
    }

    private void TestViaVerifier()
    {
        var client = VerifierClient(Verifier!);
        _owned.Add(client);
        IReadOnlyList<string> ids;
        try { ids = AgentId is { Length: > 0 } ? AgentId : client.ListAsync().GetAwaiter().GetResult(); }
        // Not a verdict on any agent: the verifier itself could not be asked. Written even with -Quiet, so a scheduled check can tell
        // "an agent failed" from "nothing could be checked".
        catch (Exception ex) when (IsExpected(ex)) { _all = false; WriteError(VerifierError(ex, Verifier)); return; }
        var maxAge = MaxAge;
        foreach (var agent in ids) Queue(agent, c =>
        {
            string id = c.AgentId;
            VerifierAgentStatus s;
            try { s = client.GetAsync(id).GetAwaiter().GetResult(); }
            catch (Exception ex) when (IsExpected(ex))
            {
                Report(c, VerifierError(ex, id));
                bool unknown = ex is KeylimeRequestException { StatusCode: 404 };
                Emit(c, new AttestationTestResult { AgentId = id, Passed = false, State = unknown ? AttestationStateNames.NotWatched : AttestationStateNames.Unknown, Source = "verifier",
                    Failures = [new() { EventId = unknown ? "verifier.unknown_agent" : "verifier.unreachable", Reason = ex.Message }] });
                return;
            }
            var state = (OperationalState)s.OperationalState;
            var failures = new List<AttestationFailure>(s.Failures);
            bool pass = OperationalStates.Status(state) == AttestationStatus.Pass;
            var last = VerifierAgent.Time(s.LastSuccessfulAttestation);
            if (pass && (last is null || DateTimeOffset.UtcNow - last > maxAge))
            {
                pass = false;
                failures.Add(new() { EventId = "verifier.stale", Reason = last is null ? "The verifier has no passing quote yet." : $"The last passing quote is {(int)(DateTimeOffset.UtcNow - last.Value).TotalSeconds} s old (more than {maxAge.TotalSeconds} s)." });
            }
            if (!pass && failures.Count == 0) failures.Add(new() { EventId = s.LastEventId ?? "verifier.state", Reason = $"The verifier reports {OperationalStates.KeylimeName(state)}." });
            Emit(c, new AttestationTestResult { AgentId = id, Passed = pass, State = OperationalStates.KeylimeName(state), Failures = [.. failures], QuoteTime = last, Source = "verifier" });
        });
    }

    private void TestDirect()
    {
        string id = AgentId![0];
        var given = Policy is PSObject p ? p.BaseObject : Policy;
        var policy = given switch
        {
            AttestationPolicy ap => ap.TpmPolicy,
            string s => s,
            null => "{}",
            _ => null,
        };
        var full = given as AttestationPolicy;
        if (policy is null)
        {
            ThrowTerminatingError(new ErrorRecord(new ArgumentException("-Policy takes New-AttestationPolicy output or tpm_policy JSON text."), "InvalidPolicy", ErrorCategory.InvalidArgument, Policy));
            return;
        }
        var config = new VerifierAgentConfig
        {
            Ip = Ip!, Port = Port, AkTpm = AikTpm!, MtlsCert = MtlsCertificate, TpmPolicy = policy,
            RuntimePolicy = full?.RuntimePolicy is { } rp ? Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes(rp)) : null,
            MbRefstate = full?.MbRefstate,
        };
        foreach (var check in MeasurementChecks.Default.OfType<IConfigValidator>())
            if (check.Validate(config) is { } invalid) { ThrowTerminatingError(new ErrorRecord(new ArgumentException(invalid), "InvalidPolicy", ErrorCategory.InvalidArgument, Policy)); return; }
        var tpmPolicy = TpmPolicy.TryParse(policy, out var perr);
        if (tpmPolicy is null) { ThrowTerminatingError(new ErrorRecord(new ArgumentException(perr), "InvalidPolicy", ErrorCategory.InvalidArgument, Policy)); return; }
        string ip = Ip!, aikTpm = AikTpm!;
        int port = Port;
        var clientCertificate = ClientCertificate;
        Queue(id, c =>
        {
            PreparedAk ak;
            try { ak = PreparedAk.FromTpm2B(Convert.FromBase64String(aikTpm)); }
            catch (Exception ex) when (ex is FormatException or TpmFormatException or NotSupportedException)
            {
                Report(c, new ErrorRecord(ex, "InvalidAk", ErrorCategory.InvalidData, id));
                Emit(c, new AttestationTestResult { AgentId = id, Passed = false, State = AttestationStateNames.InvalidQuote, Source = "agent", Failures = [new() { EventId = "qoute_validation.ak", Reason = ex.Message }] });
                return;
            }
            using (ak)
            using (var connector = new AgentConnector(clientCertificate, TimeSpan.FromSeconds(30)))
            {
                string nonce = VerifierService.NewNonce();
                uint mask = QuoteJudge.QuoteMask(config, tpmPolicy, MeasurementChecks.Default);
                var call = connector.GetIntegrityQuoteAsync(config, nonce, mask, partial: false, 0, default).GetAwaiter().GetResult();
                if (call.Status != AgentCallStatus.Ok)
                {
                    Report(c, new ErrorRecord(new HttpRequestException($"Agent {id} at {ip}:{port}: {call.HttpStatus} {call.Message}"),
                        call.Status == AgentCallStatus.Unreachable ? "AgentUnreachable" : $"AgentRefused{call.HttpStatus}", ErrorCategory.ConnectionError, id));
                    Emit(c, new AttestationTestResult { AgentId = id, Passed = false, State = AttestationStateNames.Failed, Source = "agent",
                        Failures = [new() { EventId = call.Status == AgentCallStatus.Unreachable ? "internal.not_reachable" : "internal.no_quote", Reason = $"{call.HttpStatus} {call.Message}" }] });
                    return;
                }
                var verdict = QuoteJudge.Judge(config, new VerifierAgentProgress(), ak, tpmPolicy, nonce, mask, QuoteResponse.FromJson(call.Results), MeasurementChecks.Default);
                Emit(c, new AttestationTestResult { AgentId = id, Passed = verdict.Passed, State = verdict.Passed ? AttestationStateNames.GetQuote : AttestationStateNames.InvalidQuote, Failures = [.. verdict.Failures], QuoteTime = DateTimeOffset.UtcNow, Source = "agent" });
            }
        });
    }
}

/// <summary>
/// Makes an attestation policy: PCRs pinned to a TPM's current values (Keylime's tpm_policy), a runtime (IMA) policy from an IMA
/// measurement list or by hashing a folder tree, and a measured-boot refstate from a known-good UEFI event log.
/// </summary>
[Cmdlet(VerbsCommon.New, "AttestationPolicy")]
[OutputType(typeof(AttestationPolicy))]
public sealed class NewAttestationPolicyCommand : TpmCmdletBase
{
    /// <summary>PCRs to pin to their current values (e.g. 0..7, 15); read from -Tpm.</summary>
    [Parameter(Position = 0)]
    [ValidateRange(0, 23)]
    public int[] Pcr { get; set; } = [];

    /// <summary>PCR bank (default sha256).</summary>
    [Parameter]
    [ValidateSet("sha1", "sha256", "sha384", "sha512")]
    public string HashAlgorithm { get; set; } = "sha256";

    /// <summary>An IMA measurement list (ascii_runtime_measurements) whose every file digest the runtime policy allows.</summary>
    [Parameter]
    public string? ImaLog { get; set; }

    /// <summary>Folder trees whose files are hashed into the runtime policy (paths recorded as on the device, see -PathPrefix).</summary>
    [Parameter]
    public string[]? Path { get; set; }

    /// <summary>
    /// Station images whose artefacts become the runtime policy: an artefact folder or a tar/zip archive (a path), or the output of
    /// Get-ProvisioningImage -Analyze. Each file's path on the device (-PathPrefix, default /, joined with its path in the image) maps to its SHA-256.
    /// </summary>
    [Parameter]
    public object[]? Image { get; set; }

    /// <summary>Analysed artefact images from the pipeline (Get-ProvisioningImage -Analyze), as -Image takes them.</summary>
    [Parameter(ValueFromPipeline = true)]
    public global::TpmProvisioning.Station.ImageAnalysis[]? Analysis { get; set; }

    /// <summary>With -Path or -Image: the path the tree has on the device (e.g. / for an image mounted at /mnt/image).</summary>
    [Parameter]
    public string? PathPrefix { get; set; }

    /// <summary>Runtime policy excludes: regular expressions matched at the start of each path (e.g. /tmp/.*).</summary>
    [Parameter]
    public string[]? Exclude { get; set; }

    /// <summary>A known-good UEFI event log (binary_bios_measurements) to make the measured-boot refstate from.</summary>
    [Parameter]
    public string? EventLog { get; set; }

    protected override void ProcessRecord()
    {
        var bank = ParseHashAlgorithm(HashAlgorithm);
        string? runtime = null;
        int entries = 0;
        string? refstate = null;
        try
        {
            global::TpmProvisioning.Attestation.Measurements.RuntimePolicy? rp = null;
            if (ImaLog is not null)
                rp = global::TpmProvisioning.Attestation.Measurements.RuntimePolicy.FromImaList(File.ReadAllText(GetUnresolvedProviderPathFromPSPath(ImaLog)), Exclude);
            foreach (var root in Path ?? [])
            {
                var dir = GetUnresolvedProviderPathFromPSPath(root);
                var skipped = new List<string>();
                var part = global::TpmProvisioning.Attestation.Measurements.RuntimePolicy.FromDirectory(dir, Exclude, HashAlgorithm, PathPrefix, skipped);
                foreach (var f in skipped) WriteWarning($"Not hashed (unreadable): {f}");
                if (rp is null) rp = part;
                else foreach (var (path, digests) in part.Digests) foreach (var d in digests) rp.AddDigest(path, d);
            }
            foreach (var item in (Image ?? []).Concat(Analysis ?? []))
            {
                var analysis = (item is PSObject ps ? ps.BaseObject : item) switch
                {
                    global::TpmProvisioning.Station.ImageAnalysis a => a,
                    FileSystemInfo fsi => global::TpmProvisioning.Station.StationImageAnalyzer.AnalyzePath(fsi.FullName),
                    string s => global::TpmProvisioning.Station.StationImageAnalyzer.AnalyzePath(GetUnresolvedProviderPathFromPSPath(s)),
                    var other => throw new ArgumentException($"-Image takes an artefact folder or archive path, or Get-ProvisioningImage -Analyze output, not {other?.GetType().Name ?? "null"}."),
                };
                foreach (var skipped in analysis.Skipped) WriteWarning($"Not in the runtime policy ({analysis.Name}): {skipped}");
                var part = global::TpmProvisioning.Station.StationImageAnalyzer.ToRuntimePolicy(analysis, PathPrefix, Exclude);
                if (rp is null) rp = part;
                else foreach (var (path, digests) in part.Digests) foreach (var d in digests) rp.AddDigest(path, d);
            }
            if (rp is not null)
            {
                runtime = rp.ToJson();
                entries = rp.Digests.Count;
            }
            if (EventLog is not null)
                refstate = global::TpmProvisioning.Attestation.Measurements.MeasuredBootPolicy.FromEventLog(File.ReadAllBytes(GetUnresolvedProviderPathFromPSPath(EventLog)), bank).ToJson();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or ArgumentException or global::TpmProvisioning.Station.StationException)
        {
            WriteError(new ErrorRecord(ex, ex is FormatException or global::TpmProvisioning.Station.StationException ? "InvalidMeasurementInput" : "MeasurementInputUnreadable", ex is FormatException or global::TpmProvisioning.Station.StationException ? ErrorCategory.InvalidData : ErrorCategory.ReadError, ImaLog ?? EventLog ?? (object?)Path ?? Image));
            return;
        }
        if (Pcr.Length == 0)
        {
            WriteObject(new AttestationPolicy { HashAlgorithm = HashAlgorithm, RuntimePolicy = runtime, RuntimeEntries = entries, MbRefstate = refstate });
            return;
        }
        WithTpm(dev =>
        {
            var values = new Dictionary<int, IReadOnlyList<string>>();
            var read = dev.PcrRead(PcrSelection.Create(bank, Pcr));
            foreach (var i in Pcr.Distinct())
                if (read.TryGet(bank, i, out var v)) values[i] = [Convert.ToHexStringLower(v)];
            Emit(new AttestationPolicy { TpmPolicy = TpmPolicy.Format(values), Pcr = [.. values.Keys.Order()], HashAlgorithm = HashAlgorithm, RuntimePolicy = runtime, RuntimeEntries = entries, MbRefstate = refstate });
        });
    }
}
