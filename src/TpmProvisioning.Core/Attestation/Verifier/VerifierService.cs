using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using TpmProvisioning.Storage;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Attestation.Verifier;

/// <summary>
/// Spec 001's cloud verifier. Tenants add agents with a policy; for each watched agent an asynchronous loop (no thread of its
/// own) asks for a quote with a fresh nonce, judges it (<see cref="QuoteJudge"/>), stores the verdict and schedules the next
/// quote <see cref="VerifierSettings.QuoteInterval"/> later (counted from when the last one was due, or from its verdict:
/// <see cref="VerifierSettings.QuoteSchedule"/>). Unreachable agents are retried with back-off, then FAILED. After
/// the first good quote V is delivered. A failed quote stops watching, is audited and is sent to the revocation webhooks.
/// Watching resumes from the store when the verifier starts again.
/// </summary>
public sealed partial class VerifierService : IAsyncDisposable
{
    public const string AuditAdd = "verifier.add";
    public const string AuditDelete = "verifier.delete";
    public const string AuditReactivate = "verifier.reactivate";
    public const string AuditStop = "verifier.stop";
    public const string AuditFailed = "verifier.attestation-failed";

    private readonly IStore _store;
    private readonly VerifierSettings _settings;
    private readonly AgentConnector _agents;
    private readonly RevocationNotifier _notifier;
    private readonly IReadOnlyList<IMeasurementCheck> _checks;
    private readonly TimeProvider _time;
    private readonly Action<string>? _log;
    private readonly SemaphoreSlim _concurrency;
    private readonly ConcurrentDictionary<string, Watch> _watches = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stopping = new();
    private readonly VerdictWriter _writer;

    private sealed record Watch(CancellationTokenSource Cts, Task Task);

    public VerifierService(IStore store, VerifierSettings settings, AgentConnector agents, RevocationNotifier notifier,
        IEnumerable<IMeasurementCheck>? checks = null, TimeProvider? time = null, Action<string>? log = null)
    {
        _store = store ?? throw new ArgumentNullException(nameof(store));
        _settings = settings ?? throw new ArgumentNullException(nameof(settings));
        _agents = agents ?? throw new ArgumentNullException(nameof(agents));
        _notifier = notifier ?? throw new ArgumentNullException(nameof(notifier));
        _checks = checks?.ToList() ?? [];
        _time = time ?? TimeProvider.System;
        _log = log;
        _concurrency = new SemaphoreSlim(Math.Max(1, settings.MaxConcurrentRequests));
        _writer = new VerdictWriter(store, log);
    }

    /// <summary>Verdict writes so far: commits and records (several watches' verdicts share one commit under load).</summary>
    public (long Commits, long Records) VerdictWrites => _writer.Counts;

    public VerifierSettings Settings => _settings;

    /// <summary>The address and port the verifier reports as <c>verifier_ip</c>/<c>verifier_port</c>.</summary>
    public string ContactIp { get; set; } = "127.0.0.1";
    /// <summary>This verifier's id (<see cref="VerifierSettings.VerifierId"/>), Keylime's <c>verifier_id</c>.</summary>
    public string VerifierId => _settings.VerifierId;
    public int ContactPort { get; set; }

    /// <summary>How many agents are being watched now.</summary>
    public int WatchedCount => _watches.Count;

    /// <summary>Keylime's agent id rule (<see cref="KeylimeValidators.IsValidAgentId"/>).</summary>
    public static bool IsValidAgentId(string? id) => KeylimeValidators.IsValidAgentId(id);

    // ------------------------------------------------------------------ tenant API

    /// <summary><c>POST /v2.1/agents/{id}</c>: 200 and watching starts; 400 for a malformed body; 409 when the id is known.</summary>
    public Task<AttestationOutcome<EmptyResults>> AddAsync(string agentId, ReadOnlyMemory<byte> body, AttestationCallInfo? call = null, CancellationToken ct = default) =>
        AddAsync(agentId, new System.Buffers.ReadOnlySequence<byte>(body), call, ct);

    /// <summary><c>POST /v2.1/agents/{id}</c> over a body as the server buffered it (parsed in place, not copied).</summary>
    public async Task<AttestationOutcome<EmptyResults>> AddAsync(string agentId, System.Buffers.ReadOnlySequence<byte> body, AttestationCallInfo? call = null, CancellationToken ct = default)
    {
        call ??= new AttestationCallInfo();
        if (!IsValidAgentId(agentId)) return await RejectAsync<EmptyResults>(AuditAdd, 400, "agent_id not not valid", Clip(agentId), call, ct).ConfigureAwait(false);
        var config = VerifierAgentRequest.Parse(body, _settings.RequireAgentMtls, out var error);
        if (config is null) return await RejectAsync<EmptyResults>(AuditAdd, 400, error ?? "body: malformed", agentId, call, ct).ConfigureAwait(false);
        foreach (var c in _checks.OfType<IConfigValidator>())
        {
            var e = c.Validate(config);
            if (e is not null) return await RejectAsync<EmptyResults>(AuditAdd, 400, e, agentId, call, ct).ConfigureAwait(false);
        }
        var now = _time.GetUtcNow();
        // The tenant's private revocation key and its V share are secrets: stored (and kept in memory) sealed, opened only to use.
        if (_settings.Secrets is { } sealer)
            config = config with { RevocationKey = sealer.Seal(config.RevocationKey, SecretRow(agentId, "revocation_key")), V = sealer.Seal(config.V, SecretRow(agentId, "v")) };
        var record = new VerifierAgentRecord { AgentId = agentId, Config = config, State = OperationalState.Start, VerifierId = _settings.VerifierId, Added = now, Updated = now };
        if (!await _store.InsertVerifierAgentAsync(record, ct).ConfigureAwait(false))
            return await RejectAsync<EmptyResults>(AuditAdd, 409, $"Agent of uuid {agentId} already exists. Please use delete or update.", agentId, call, ct).ConfigureAwait(false);
        await AuditAsync(AuditAdd, agentId, AuditOutcome.Success, $"{config.Ip}:{config.Port} mask 0x{QuoteJudge.QuoteMask(config, TpmPolicy.TryParse(config.TpmPolicy, out _)!, _checks):x}", call, ct).ConfigureAwait(false);
        await WatchIfClaimedAsync(agentId, ct).ConfigureAwait(false);
        return AttestationOutcome<EmptyResults>.Ok(EmptyResults.Instance);
    }

    /// <summary><c>GET /v2.1/agents/{id}</c>.</summary>
    public async Task<AttestationOutcome<VerifierAgentStatus>> GetAsync(string agentId, CancellationToken ct = default)
    {
        if (!IsValidAgentId(agentId)) return AttestationOutcome<VerifierAgentStatus>.Fail(400, "agent_id not not valid");
        var r = await _store.GetVerifierAgentAsync(agentId, ct).ConfigureAwait(false);
        return !Visible(r)
            ? AttestationOutcome<VerifierAgentStatus>.Fail(404, "agent id not found")
            : AttestationOutcome<VerifierAgentStatus>.Ok(VerifierAgentStatus.From(r, ContactIp, ContactPort));
    }

    /// <summary>Every agent of this verifier with its status.</summary>
    public async Task<IReadOnlyList<(string AgentId, VerifierAgentStatus Status)>> ListAsync(CancellationToken ct = default) =>
        (await _store.ListVerifierAgentsAsync(Shared ? null : _settings.VerifierId, ct).ConfigureAwait(false)).Select(r => (r.AgentId, VerifierAgentStatus.From(r, ContactIp, ContactPort))).ToList();

    /// <summary>
    /// <c>DELETE /v2.1/agents/{id}</c>: 200 and removed when the agent is not being watched (SAVED, FAILED, TERMINATED,
    /// TENANT_FAILED, INVALID_QUOTE); otherwise watching stops, then the agent is removed and 202 answered, as Keylime does.
    /// </summary>
    public async Task<AttestationOutcome<EmptyResults>> DeleteAsync(string agentId, AttestationCallInfo? call = null, CancellationToken ct = default)
    {
        call ??= new AttestationCallInfo();
        if (!IsValidAgentId(agentId)) return await RejectAsync<EmptyResults>(AuditDelete, 400, "agent_id not not valid", Clip(agentId), call, ct).ConfigureAwait(false);
        var r = await _store.GetVerifierAgentAsync(agentId, ct).ConfigureAwait(false);
        if (!Visible(r)) return await RejectAsync<EmptyResults>(AuditDelete, 404, "agent id not found", agentId, call, ct).ConfigureAwait(false);
        bool watched = OperationalStates.IsWatched(r.State);
        await StopWatchAsync(agentId).ConfigureAwait(false);
        await _store.DeleteVerifierAgentAsync(agentId, ct).ConfigureAwait(false);
        await AuditAsync(AuditDelete, agentId, AuditOutcome.Success, watched ? "202 stopped watching and removed" : "200 removed", call, ct).ConfigureAwait(false);
        return watched ? new AttestationOutcome<EmptyResults>(202, "Accepted", EmptyResults.Instance) : AttestationOutcome<EmptyResults>.Ok(EmptyResults.Instance);
    }

    /// <summary><c>PUT /v2.1/agents/{id}/reactivate</c>: watching starts again from START.</summary>
    public async Task<AttestationOutcome<EmptyResults>> ReactivateAsync(string agentId, AttestationCallInfo? call = null, CancellationToken ct = default)
    {
        call ??= new AttestationCallInfo();
        if (!IsValidAgentId(agentId)) return await RejectAsync<EmptyResults>(AuditReactivate, 400, "agent_id not not valid", Clip(agentId), call, ct).ConfigureAwait(false);
        await StopWatchAsync(agentId).ConfigureAwait(false);
        var r = await _store.GetVerifierAgentAsync(agentId, ct).ConfigureAwait(false);
        if (!Visible(r)) return await RejectAsync<EmptyResults>(AuditReactivate, 404, "agent id not found", agentId, call, ct).ConfigureAwait(false);
        await TenantWriteAsync(r with { State = OperationalState.Start, SeverityLevel = null, LastEventId = null, Progress = r.Progress with { Failures = [] }, Updated = _time.GetUtcNow() }, ct).ConfigureAwait(false);
        await AuditAsync(AuditReactivate, agentId, AuditOutcome.Success, $"from {OperationalStates.KeylimeName(r.State)}", call, ct).ConfigureAwait(false);
        await WatchIfClaimedAsync(agentId, ct).ConfigureAwait(false);
        return AttestationOutcome<EmptyResults>.Ok(EmptyResults.Instance);
    }

    /// <summary><c>PUT /v2.1/agents/{id}/stop</c>: watching stops and the agent is TENANT_FAILED (its attestation now fails).</summary>
    public async Task<AttestationOutcome<EmptyResults>> StopAsync(string agentId, AttestationCallInfo? call = null, CancellationToken ct = default)
    {
        call ??= new AttestationCallInfo();
        if (!IsValidAgentId(agentId)) return await RejectAsync<EmptyResults>(AuditStop, 400, "agent_id not not valid", Clip(agentId), call, ct).ConfigureAwait(false);
        await StopWatchAsync(agentId).ConfigureAwait(false);
        var r = await _store.GetVerifierAgentAsync(agentId, ct).ConfigureAwait(false);
        if (!Visible(r)) return await RejectAsync<EmptyResults>(AuditStop, 404, "agent id not found", agentId, call, ct).ConfigureAwait(false);
        await TenantWriteAsync(r with { State = OperationalState.TenantFailed, Updated = _time.GetUtcNow() }, ct).ConfigureAwait(false);
        await AuditAsync(AuditStop, agentId, AuditOutcome.Success, $"from {OperationalStates.KeylimeName(r.State)}", call, ct).ConfigureAwait(false);
        return AttestationOutcome<EmptyResults>.Ok(EmptyResults.Instance);
    }

    /// <summary>At start: every agent of this verifier left in a watched state (1, 3-6) is watched again, from START.</summary>
    public async Task<int> ResumeAsync(CancellationToken ct = default)
    {
        // Several servers on one store: the lease loop claims agents instead (VerifierService.Leases.cs).
        if (Leases is { } leases) { leases.Start(this); if (leases.Shared) return 0; }
        var resumed = new List<string>();
        foreach (var r in await _store.ListVerifierAgentsAsync(_settings.VerifierId, ct).ConfigureAwait(false))
        {
            if (r.State == OperationalState.Terminated) { await _store.DeleteVerifierAgentAsync(r.AgentId, ct).ConfigureAwait(false); continue; }
            if (!OperationalStates.IsApprovedReactivate(r.State)) continue;
            await _store.UpdateVerifierAgentAsync(r with { State = OperationalState.Start, Updated = _time.GetUtcNow() }, ct).ConfigureAwait(false);
            resumed.Add(r.AgentId);
        }
        // The first quotes are spread over one interval (agent k of n after k/n of it) rather than all asked at once: each agent
        // keeps the phase it starts with, so a fleet resumed in one burst would otherwise stay one burst every interval.
        for (int k = 0; k < resumed.Count; k++) StartWatch(resumed[k], _settings.QuoteInterval * k / resumed.Count);
        return resumed.Count;
    }

    // ------------------------------------------------------------------ the watch loop

    private void StartWatch(string agentId, TimeSpan firstQuoteAfter = default)
    {
        if (_stopping.IsCancellationRequested) return;
        var cts = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token);
        var task = Task.Run(() => WatchAsync(agentId, firstQuoteAfter, cts.Token));
        if (!_watches.TryAdd(agentId, new Watch(cts, task)))
        {
            cts.Cancel();
            cts.Dispose();
        }
    }

    private async Task StopWatchAsync(string agentId)
    {
        if (!_watches.TryRemove(agentId, out var w)) return;
        await w.Cts.CancelAsync().ConfigureAwait(false);
        try { await w.Task.ConfigureAwait(false); }
        catch (OperationCanceledException) { }
        w.Cts.Dispose();
    }

    /// <summary>What a watch prepares once from the agent's request instead of at every quote: the PCR policy, the mask to ask for, the AK.</summary>
    private sealed class Prepared : IDisposable
    {
        public Prepared(VerifierAgentConfig config, IReadOnlyList<IMeasurementCheck> checks)
        {
            Policy = TpmPolicy.TryParse(config.TpmPolicy, out _) ?? TpmPolicy.Empty;
            Mask = QuoteJudge.QuoteMask(config, Policy, checks);
            Ak = PreparedAk.FromTpm2B(Convert.FromBase64String(config.AkTpm));
        }

        public TpmPolicy Policy { get; }
        public uint Mask { get; }
        public PreparedAk Ak { get; }
        public void Dispose() => Ak.Dispose();
    }

    /// <summary>
    /// One agent's watch. The agent is read from the store once: while it is watched only this loop changes it (the tenant
    /// routes stop the watch before they write), so each round carries the record forward and only writes it back.
    /// </summary>
    private async Task WatchAsync(string agentId, TimeSpan firstQuoteAfter, CancellationToken ct)
    {
        bool provideV = true;
        int retries = 0;
        Prepared? prepared = null;
        try
        {
            if (firstQuoteAfter > TimeSpan.Zero) await Task.Delay(firstQuoteAfter, _time, ct).ConfigureAwait(false);
            var r = await _store.GetVerifierAgentAsync(agentId, ct).ConfigureAwait(false);
            if (r is null || !OperationalStates.IsWatched(r.State)) return;
            prepared = new Prepared(r.Config, _checks);
            var due = _time.GetUtcNow();
            while (!ct.IsCancellationRequested && MayJudge(agentId))
            {
                bool providingV = r.State is OperationalState.ProvideV or OperationalState.ProvideVRetry;
                _inFlight[agentId] = 0;
                var step = providingV
                    ? await ProvideVStepAsync(r, retries, ct).ConfigureAwait(false)
                    : await QuoteStepAsync(r, prepared, retries, provideV, ct).ConfigureAwait(false);
                retries = step.Record.State is OperationalState.GetQuoteRetry or OperationalState.ProvideVRetry ? retries + 1 : 0;
                if (providingV && step.Record.State == OperationalState.GetQuote) provideV = false;
                if (step.Abandoned) return;
                r = step.Record;
                // Gone from the store (removed by another verifier sharing it): nothing left to watch.
                if (!await WriteVerdictAsync(r, ct).ConfigureAwait(false)) return;
                if (step.Failure is { } failure) await FailAsync(r, failure, step.NotifyType, ct).ConfigureAwait(false);
                _inFlight.TryRemove(agentId, out _);
                if (step.Done) return;
                // The lease went (given back, a clean stop): the verdict is stored, nothing more to ask.
                if (!MayJudge(agentId)) return;
                var now = _time.GetUtcNow();
                due = step.Periodic ? NextDue(_settings.QuoteSchedule, due, now, step.Delay) : now + step.Delay;
                if (due > now) await Task.Delay(due - now, _time, ct).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested) { }
        catch (StoreUnavailableException ex) when (Shared)
        {
            // The shared store is down: not the agent's fault. The lease loop restarts the watch once the store answers.
            _log?.Invoke($"Verifier: watching {agentId} paused, the store is unavailable: {ex.Message}");
        }
        catch (Exception ex)
        {
            _log?.Invoke($"Verifier: watching {agentId} failed: {ex.Message}");
            try
            {
                var r = await _store.GetVerifierAgentAsync(agentId, CancellationToken.None).ConfigureAwait(false);
                if (r is not null)
                {
                    var f = new AttestationFailure { EventId = "internal.exception", Reason = "The verifier could not judge this agent: " + ex.Message, Recoverable = false };
                    var failed = Failed(r, OperationalState.Failed, [f], _time.GetUtcNow());
                    await _store.UpdateVerifierAgentAsync(failed, CancellationToken.None).ConfigureAwait(false);
                    await FailAsync(failed, f, null, CancellationToken.None).ConfigureAwait(false);
                }
            }
            catch (Exception inner) { _log?.Invoke($"Verifier: could not record the failure of {agentId}: {inner.Message}"); }
        }
        finally
        {
            _inFlight.TryRemove(agentId, out _);
            prepared?.Dispose();
            if (_watches.TryGetValue(agentId, out var w) && w.Cts.Token == ct) _watches.TryRemove(new KeyValuePair<string, Watch>(agentId, w));
        }
    }

    /// <summary>One round's outcome; <paramref name="Periodic"/>: the delay is the quote interval (not a retry's back-off).</summary>
    /// <param name="Abandoned">The lease on the agent was lost while the request waited its turn: nothing was asked, nothing is stored.</param>
    private sealed record Step(VerifierAgentRecord Record, TimeSpan Delay, bool Done, AttestationFailure? Failure = null, string? NotifyType = null, bool Periodic = false, bool Abandoned = false)
    {
        public static Step LeaseLost(VerifierAgentRecord r) => new(r, TimeSpan.Zero, true, Abandoned: true);
    }

    /// <summary>
    /// When the next periodic quote is due. <see cref="QuoteSchedule.FixedRate"/>: one <paramref name="interval"/> after the last
    /// one was due, so an agent is asked every interval whatever the round trip took, but never sooner than half an interval
    /// after the verdict (<paramref name="now"/>): a quote that came late (a long round trip, a busy verifier) is not followed
    /// by another right away, and missed slots are not made up. <see cref="QuoteSchedule.AfterVerdict"/>: one interval after
    /// the verdict, as Keylime's verifier waits.
    /// </summary>
    public static DateTimeOffset NextDue(QuoteSchedule schedule, DateTimeOffset due, DateTimeOffset now, TimeSpan interval)
    {
        if (schedule == QuoteSchedule.AfterVerdict) return now + interval;
        var next = due + interval;
        var earliest = now + interval / 2;
        return next > earliest ? next : earliest;
    }

    private TimeSpan RetryDelay(int retry) =>
        TimeSpan.FromSeconds(_settings.ExponentialBackoff ? Math.Pow(_settings.RetryInterval, retry) : _settings.RetryInterval);

    private async Task<Step> QuoteStepAsync(VerifierAgentRecord r, Prepared prepared, int retries, bool provideV, CancellationToken ct)
    {
        var now = _time.GetUtcNow();
        string nonce = NewNonce();
        AgentCallResult call;
        await _concurrency.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            // Shared store: the wait for a turn can outlast the lease; a node that lost it meanwhile must not ask the agent, whose
            // new holder may already have.
            if (!MayJudge(r.AgentId)) return Step.LeaseLost(r);
            call = await _agents.GetIntegrityQuoteAsync(r.Config, nonce, prepared.Mask, partial: r.Progress.NkPem is not null, r.Progress.NextImaEntry, ct).ConfigureAwait(false);
        }
        finally { _concurrency.Release(); }

        if (call.Status == AgentCallStatus.Unreachable)
        {
            if (retries >= _settings.MaxRetries)
            {
                var f = new AttestationFailure { EventId = "internal.not_reachable", Reason = $"The agent was not reachable for a quote in {retries} retries: {call.Message}", Recoverable = false };
                return new(Failed(r, OperationalState.Failed, [f], now), TimeSpan.Zero, true, f, r.AttestationCount > 0 ? "comm_error" : null);
            }
            _log?.Invoke($"Verifier: agent {r.AgentId} unreachable ({call.Message}); retry {retries + 1}/{_settings.MaxRetries}");
            return new(r with { State = OperationalState.GetQuoteRetry, Updated = now }, RetryDelay(retries + 1), false);
        }
        if (call.Status == AgentCallStatus.Refused)
        {
            var f = new AttestationFailure { EventId = "internal.no_quote", Reason = $"Unexpected answer to the quote request: {call.HttpStatus} {call.Message}", Recoverable = false };
            return new(Failed(r, OperationalState.Failed, [f], now), TimeSpan.Zero, true, f, null);
        }

        var verdict = QuoteJudge.Judge(r.Config, r.Progress with { LastNonce = nonce }, prepared.Ak, prepared.Policy, nonce, prepared.Mask, QuoteResponse.FromJson(call.Results), _checks);
        long unixNow = now.ToUnixTimeSeconds();
        if (!verdict.Passed)
        {
            var failed = Failed(r with { Progress = verdict.Progress, LastReceivedQuote = unixNow }, OperationalState.InvalidQuote, verdict.Failures, now);
            _log?.Invoke($"Verifier: agent {r.AgentId} INVALID_QUOTE: {string.Join("; ", verdict.Failures)}");
            return new(failed, TimeSpan.Zero, true, verdict.Failures[0], "revocation");
        }
        var passed = r with
        {
            Progress = verdict.Progress with { LastNonce = nonce },
            AttestationCount = r.AttestationCount + 1,
            LastReceivedQuote = unixNow,
            LastSuccessfulAttestation = unixNow,
            Updated = now,
        };
        if (provideV && !string.IsNullOrEmpty(r.Config.V))
            return new(passed with { State = OperationalState.ProvideV }, TimeSpan.Zero, false);
        return new(passed with { State = OperationalState.GetQuote }, _settings.QuoteInterval, false, Periodic: true);
    }

    private async Task<Step> ProvideVStepAsync(VerifierAgentRecord r, int retries, CancellationToken ct)
    {
        var now = _time.GetUtcNow();
        if (r.Progress.NkPem is not { } nk || string.IsNullOrEmpty(r.Config.V))
            return new(r with { State = OperationalState.GetQuote, Updated = now }, _settings.QuoteInterval, false, Periodic: true);
        byte[] v;
        try { v = Convert.FromBase64String(OpenSecret(r, r.Config.V, "v")!); }
        catch (Kms.KmsException ex)
        {
            var sealedFailure = new AttestationFailure { EventId = "internal.no_v", Reason = ex.Message, Recoverable = false };
            return new(Failed(r, OperationalState.Failed, [sealedFailure], now), TimeSpan.Zero, true, sealedFailure, null);
        }
        string encrypted;
        try { encrypted = KeylimePayload.EncryptKeyShare(nk, v); }
        finally { System.Security.Cryptography.CryptographicOperations.ZeroMemory(v); }
        AgentCallResult call;
        await _concurrency.WaitAsync(ct).ConfigureAwait(false);
        try { call = await _agents.ProvideVAsync(r.Config, encrypted, ct).ConfigureAwait(false); }
        finally { _concurrency.Release(); }
        if (call.Status == AgentCallStatus.Ok)
            return new(r with { State = OperationalState.GetQuote, Progress = r.Progress with { VDelivered = true }, Updated = now }, _settings.QuoteInterval, false, Periodic: true);
        if (call.Status == AgentCallStatus.Unreachable && retries < _settings.MaxRetries)
            return new(r with { State = OperationalState.ProvideVRetry, Updated = now }, RetryDelay(retries + 1), false);
        var f = new AttestationFailure
        {
            EventId = call.Status == AgentCallStatus.Unreachable ? "internal.not_reachable_v" : "internal.no_v",
            Reason = call.Status == AgentCallStatus.Unreachable ? $"The agent was not reachable to provide V in {retries} retries: {call.Message}" : $"Unexpected answer to provide V: {call.HttpStatus} {call.Message}",
            Recoverable = false,
        };
        return new(Failed(r, OperationalState.Failed, [f], now), TimeSpan.Zero, true, f, call.Status == AgentCallStatus.Unreachable ? "comm_error" : null);
    }

    /// <summary>The record in a failed state: highest severity, the first failure's event id, the failures kept for the tenant.</summary>
    private static VerifierAgentRecord Failed(VerifierAgentRecord r, OperationalState state, IReadOnlyList<AttestationFailure> failures, DateTimeOffset now) => r with
    {
        State = state,
        SeverityLevel = VerifierSeverity.Emergency,
        LastEventId = failures[0].EventId,
        Progress = r.Progress with { Failures = failures },
        Updated = now,
    };

    private async Task FailAsync(VerifierAgentRecord r, AttestationFailure f, string? notifyType, CancellationToken ct)
    {
        var reasons = r.Progress.Failures.Count > 0 ? string.Join("; ", r.Progress.Failures.Select(x => x.ToString())) : f.ToString();
        await AuditAsync(AuditFailed, r.AgentId, AuditOutcome.Failed, $"{OperationalStates.KeylimeName(r.State)}: {Clip(reasons, 900)}", new AttestationCallInfo { Actor = "verifier", Source = "local" }, CancellationToken.None).ConfigureAwait(false);
        if (notifyType is null || _notifier.Webhooks.Count == 0) return;
        RevocationNotice notice;
        try
        {
            notice = RevocationNotifier.Prepare(r with { Config = r.Config with { RevocationKey = OpenSecret(r, r.Config.RevocationKey, "revocation_key") } },
                notifyType, f, VerifierSeverity.Emergency, _time.GetUtcNow());
        }
        catch (Kms.KmsException ex)
        {
            _log?.Invoke($"Verifier: no revocation notice for agent {r.AgentId}: {ex.Message}");
            return;
        }
        // Sent in the background so a slow subscriber cannot hold up the loop; one notice per event, to each subscriber once.
        _ = Task.Run(() => _notifier.SendAsync(notice, _stopping.Token), CancellationToken.None);
    }

    /// <summary>The associated data a sealed secret of an agent is bound to: copied into another agent's row, it does not open.</summary>
    private static string SecretRow(string agentId, string field) => $"verifier_agents/{agentId}/{field}";

    private string? OpenSecret(VerifierAgentRecord r, string? value, string field)
    {
        if (!Kms.SecretSealer.IsSealed(value)) return value;
        return (_settings.Secrets ?? throw new Kms.KmsException(Kms.KmsErrorKind.Unavailable, null, $"Agent {r.AgentId}'s {field} is sealed, but this verifier has no master key."))
            .Open(value, SecretRow(r.AgentId, field));
    }

    private const string NonceAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

    /// <summary>
    /// A fresh nonce: 20 characters of [A-Za-z0-9] from the system CSPRNG, uniformly: bytes of 248 and above are dropped (248 is
    /// 4 × 62), the rest taken modulo 62. One call to the generator per nonce (GetString asks it once per character).
    /// </summary>
    public static string NewNonce()
    {
        Span<byte> random = stackalloc byte[64];
        Span<char> nonce = stackalloc char[20];
        int n = 0;
        while (n < nonce.Length)
        {
            RandomNumberGenerator.Fill(random);
            foreach (byte b in random)
            {
                if (b >= 248) continue;
                nonce[n++] = NonceAlphabet[b % 62];
                if (n == nonce.Length) break;
            }
        }
        CryptographicOperations.ZeroMemory(random);
        return new string(nonce);
    }

    private async Task<AttestationOutcome<T>> RejectAsync<T>(string action, int status, string message, string? target, AttestationCallInfo call, CancellationToken ct)
    {
        await AuditAsync(action, target, status == 403 ? AuditOutcome.Denied : AuditOutcome.Rejected, $"{status} {message}", call, ct).ConfigureAwait(false);
        return AttestationOutcome<T>.Fail(status, message);
    }

    private Task AuditAsync(string action, string? target, AuditOutcome outcome, string? detail, AttestationCallInfo call, CancellationToken ct) =>
        _store.AppendAuditAsync(new AuditEntry { Time = _time.GetUtcNow(), Actor = call.Actor, Action = action, Target = target, Source = call.Source, Outcome = outcome, Detail = detail }, ct);

    private static string Clip(string? s, int max = 64) => s is null ? "" : s.Length <= max ? s : s[..max] + "…";

    private int _disposed;

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        await _stopping.CancelAsync().ConfigureAwait(false);
        foreach (var id in _watches.Keys.ToList()) await StopWatchAsync(id).ConfigureAwait(false);
        await _writer.DisposeAsync().ConfigureAwait(false);
        _agents.Dispose();
        _notifier.Dispose();
    }
}

/// <summary>A measurement check that also validates its part of the tenant's request (policy syntax) before the agent is added.</summary>
public interface IConfigValidator
{
    /// <summary>Null when the config is acceptable, else the field and why.</summary>
    string? Validate(VerifierAgentConfig config);
}
