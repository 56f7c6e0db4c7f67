using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using TpmProvisioning.Kms;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Kms;

namespace TpmProvisioning.Tests.Hardening;

/// <summary>
/// Failed logins at <c>POST /api/session</c> (vSphere) and <c>POST /api/v1/auth/tokens</c> (CCKM): 40 wrong passwords in a few
/// seconds drew no 429, and a flood of password checks (PBKDF2) slowed the other roles. Now: per-user and per-address backoff with
/// 429 and Retry-After in each surface's shape, lockouts audited, and a process-wide bound on concurrent password checks.
/// </summary>
public sealed class LoginThrottleTests
{
    private static async Task<(HttpStatusCode Status, JsonElement Body, HttpResponseHeaders Headers)> SessionAsync(KmsTestServer s, string user, string password)
    {
        using var req = new HttpRequestMessage(HttpMethod.Post, s.Url + "/api/session");
        req.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{user}:{password}")));
        using var resp = await s.Http.SendAsync(req);
        var text = await resp.Content.ReadAsStringAsync();
        return (resp.StatusCode, JsonDocument.Parse(text).RootElement.Clone(), resp.Headers);
    }

    private static async Task<(HttpStatusCode Status, JsonElement Body, HttpResponseHeaders Headers)> TokenAsync(KmsTestServer s, string user, string password)
    {
        using var req = new HttpRequestMessage(HttpMethod.Post, s.Url + "/api/v1/auth/tokens")
        {
            Content = new StringContent(JsonSerializer.Serialize(new { grant_type = "password", username = user, password }), Encoding.UTF8, "application/json"),
        };
        using var resp = await s.Http.SendAsync(req);
        return (resp.StatusCode, JsonDocument.Parse(await resp.Content.ReadAsStringAsync()).RootElement.Clone(), resp.Headers);
    }

    private static async Task<IReadOnlyList<AuditEntry>> LockoutsAsync(KmsTestServer s) =>
        await s.Store.QueryAuditAsync(new AuditQuery { Action = "kms.login.lockout" });

    [Fact]
    public async Task FortyWrongSessionPasswordsDraw429WithRetryAfterAndAreAudited()
    {
        await using var s = await KmsTestServer.StartAsync();
        var statuses = new List<HttpStatusCode>();
        (HttpStatusCode Status, JsonElement Body, HttpResponseHeaders Headers)? throttled = null;
        for (int i = 0; i < 40; i++)
        {
            var r = await SessionAsync(s, "admin", "wrong-password-" + i);
            statuses.Add(r.Status);
            if (r.Status == HttpStatusCode.TooManyRequests) throttled ??= r;
        }
        Assert.DoesNotContain(HttpStatusCode.Created, statuses);
        Assert.All(statuses, st => Assert.Contains(st, new[] { HttpStatusCode.Unauthorized, HttpStatusCode.TooManyRequests }));
        Assert.NotNull(throttled);
        var (_, body, headers) = throttled.Value;
        Assert.True(headers.RetryAfter?.Delta is { TotalSeconds: >= 1 }, "Retry-After in whole seconds");
        Assert.Equal("UNABLE_TO_ALLOCATE_RESOURCE", body.GetProperty("error_type").GetString());
        Assert.Contains("failed logins", body.GetProperty("messages")[0].GetProperty("default_message").GetString());
        // The first lockouts (of the user, and of the address) are in the audit log; the refusals while locked are not each audited.
        var lockouts = await LockoutsAsync(s);
        Assert.Contains(lockouts, a => a.Target == "admin" && a.Outcome == AuditOutcome.Denied && a.Detail!.Contains("locked out"));
        Assert.Contains(lockouts, a => a.Target == "127.0.0.1");
        Assert.True(lockouts.Count < 40);
        // Even the right password is refused while the lockout runs (no password is checked then).
        Assert.Equal(HttpStatusCode.TooManyRequests, (await SessionAsync(s, "admin", KmsTestServer.AdminPassword)).Status);
    }

    [Fact]
    public async Task FortyWrongTokenPasswordsDraw429InTheCipherTrustShape()
    {
        await using var s = await KmsTestServer.StartAsync();
        (HttpStatusCode Status, JsonElement Body, HttpResponseHeaders Headers)? throttled = null;
        for (int i = 0; i < 40; i++)
        {
            var r = await TokenAsync(s, "reader", "wrong-password-" + i);
            Assert.NotEqual(HttpStatusCode.OK, r.Status);
            if (r.Status == HttpStatusCode.TooManyRequests) throttled ??= r;
        }
        Assert.NotNull(throttled);
        var (_, body, headers) = throttled.Value;
        Assert.True(headers.RetryAfter?.Delta is { TotalSeconds: >= 1 });
        Assert.Equal(15, body.GetProperty("code").GetInt32());
        Assert.StartsWith("NCERRTooManyRequests", body.GetProperty("codeDesc").GetString());
        Assert.Contains(await LockoutsAsync(s), a => a.Target == "reader");
    }

    [Fact]
    public async Task TheRightPasswordWorksOnceTheLockoutExpires()
    {
        await using var s = await KmsTestServer.StartAsync(k => k.LoginThrottle = new KmsLoginThrottleSettings { FreeFailures = 3, FirstLockout = TimeSpan.FromSeconds(1) });
        HttpStatusCode st = default;
        for (int i = 0; i < 4; i++) st = (await SessionAsync(s, "admin", "wrong")).Status;
        Assert.Equal(HttpStatusCode.Unauthorized, st); // the fourth failure is answered 401 and starts the lockout
        var locked = await SessionAsync(s, "admin", KmsTestServer.AdminPassword);
        Assert.Equal(HttpStatusCode.TooManyRequests, locked.Status);
        // Wait as told (no timing is asserted: the client simply honours Retry-After), then log in.
        var answer = locked;
        for (int i = 0; i < 10 && answer.Status == HttpStatusCode.TooManyRequests; i++)
        {
            await Task.Delay(answer.Headers.RetryAfter!.Delta!.Value + TimeSpan.FromMilliseconds(200));
            answer = await SessionAsync(s, "admin", KmsTestServer.AdminPassword);
        }
        Assert.Equal(HttpStatusCode.Created, answer.Status);
        // A success forgets the failures: one more wrong password is a plain 401 again.
        Assert.Equal(HttpStatusCode.Unauthorized, (await SessionAsync(s, "admin", "wrong")).Status);
    }

    [Fact]
    public async Task AFloodOfPasswordChecksStaysWithinTheBoundAndHealthAnswers()
    {
        await using var s = await KmsTestServer.StartAsync();
        // A slow hash (as in production), so that parallel logins overlap.
        await s.Engine.CreateUserAsync("flood", "flood-password-1", KmsUserRole.ReadOnly, new KmsCaller("test"), iterations: 20_000);
        var flood = Enumerable.Range(0, 24).Select(async _ => (await TokenAsync(s, "flood", "flood-password-1")).Status).ToList();
        // Another role's route answers while the flood runs (the checks hold at most PasswordCheckGate.Bound threads).
        for (int i = 0; i < 5; i++) Assert.Equal(HttpStatusCode.OK, (await s.Http.GetAsync(s.Url + "/healthz")).StatusCode);
        var statuses = await Task.WhenAll(flood);
        Assert.All(statuses, st => Assert.Contains(st, new[] { HttpStatusCode.OK, HttpStatusCode.ServiceUnavailable }));
        Assert.Contains(HttpStatusCode.OK, statuses);
        Assert.InRange(PasswordCheckGate.Peak, 1, PasswordCheckGate.Bound);
    }
}

/// <summary>The backoff itself, on a clock the test moves.</summary>
public sealed class KmsLoginThrottleTests
{
    private sealed class Clock : TimeProvider
    {
        public DateTimeOffset Now = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
        public override DateTimeOffset GetUtcNow() => Now;
    }

    private static readonly KmsLoginThrottleSettings Settings = new()
    {
        FreeFailures = 5, FirstLockout = TimeSpan.FromSeconds(2), MaxUserLockout = TimeSpan.FromMinutes(15), MaxAddressLockout = TimeSpan.FromHours(1),
    };

    [Fact]
    public void AUserIsLockedAfterTheFreeFailuresAndTheLockoutDoublesUpToItsCap()
    {
        var clock = new Clock();
        var t = new KmsLoginThrottle(Settings, clock);
        for (int i = 0; i < 5; i++)
        {
            Assert.True(t.TryBegin("admin", $"10.0.0.{i}", out _, out _)); // five addresses: no address reaches its limit
            Assert.Empty(t.Failed("admin", $"10.0.0.{i}"));
        }
        Assert.True(t.TryBegin("admin", "10.0.0.9", out _, out _));
        var began = t.Failed("admin", "10.0.0.9");
        Assert.Equal("user", Assert.Single(began).Kind);
        Assert.Equal(2, t.UserLockedSeconds("admin"));
        // Locked for everyone, whatever the address.
        Assert.False(t.TryBegin("admin", "192.0.2.1", out int retry, out _));
        Assert.Equal(2, retry);
        int last = 0;
        for (int n = 0; n < 12; n++)
        {
            clock.Now += TimeSpan.FromSeconds(t.UserLockedSeconds("admin"));
            Assert.True(t.TryBegin("admin", $"10.1.0.{n}", out _, out _));
            t.Failed("admin", $"10.1.0.{n}");
            int now = t.UserLockedSeconds("admin");
            Assert.True(now >= last);
            last = now;
        }
        Assert.Equal(15 * 60, last);
    }

    [Fact]
    public void AnAddressHammeringALockedUserLocksItselfLongerButNotTheUser()
    {
        var clock = new Clock();
        var t = new KmsLoginThrottle(Settings, clock);
        for (int i = 0; i < 6; i++)
        {
            Assert.True(t.TryBegin("admin", "198.51.100.7", out _, out _));
            t.Failed("admin", "198.51.100.7");
        }
        int user = t.UserLockedSeconds("admin");
        int addressRetry = 0;
        KmsLoginThrottle.Lockout? any = null;
        for (int i = 0; i < 20; i++)
        {
            Assert.False(t.TryBegin("admin", "198.51.100.7", out addressRetry, out var began));
            any ??= began;
            clock.Now += TimeSpan.FromMilliseconds(10);
        }
        // The user's lockout did not grow from the refused attempts; the address's did, far past it.
        Assert.True(t.UserLockedSeconds("admin") <= user);
        Assert.True(addressRetry > 60 * user, $"address told to wait {addressRetry} s, user locked {user} s");
        // When the user's lockout ends, a login from another address is tried again; the hammering address is still refused.
        clock.Now += TimeSpan.FromSeconds(user);
        Assert.True(t.TryBegin("admin", "203.0.113.5", out _, out _));
        Assert.False(t.TryBegin("admin", "198.51.100.7", out _, out _));
        // A correct password resets the user.
        t.Succeeded("admin", "203.0.113.5");
        Assert.Equal(0, t.UserLockedSeconds("admin"));
    }
}
