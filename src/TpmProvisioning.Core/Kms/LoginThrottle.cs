using System.Collections.Concurrent;

namespace TpmProvisioning.Kms;

/// <summary>How failed KMS logins are throttled (docs/rest/kms.md, "Failed logins").</summary>
public sealed class KmsLoginThrottleSettings
{
    /// <summary>Failed logins a user name, or an address, may have before it is locked out.</summary>
    public int FreeFailures { get; set; } = 5;
    /// <summary>The first lockout; each further failure (or, for an address, each attempt while locked) doubles it.</summary>
    public TimeSpan FirstLockout { get; set; } = TimeSpan.FromSeconds(2);
    /// <summary>The longest a user name is locked out: a distributed guesser can keep a user out no longer than this per round.</summary>
    public TimeSpan MaxUserLockout { get; set; } = TimeSpan.FromMinutes(15);
    /// <summary>The longest an address is locked out.</summary>
    public TimeSpan MaxAddressLockout { get; set; } = TimeSpan.FromHours(1);
    /// <summary>Failures older than this (with no lockout running) are forgotten.</summary>
    public TimeSpan ForgetAfter { get; set; } = TimeSpan.FromMinutes(30);
}

/// <summary>
/// Backoff of failed logins per user name and per source address, in memory (servers sharing a database do not share it).
/// A failure counts against both; past <see cref="KmsLoginThrottleSettings.FreeFailures"/> each is locked out for a time that
/// doubles with every further failure. While either is locked, attempts are refused (429) without checking the password, and
/// such attempts count against the address only: an address that keeps trying while locked locks itself out for longer, but
/// cannot extend a user's lockout, so no single address can hold a user out for longer than it holds itself out.
/// A correct password resets both.
/// </summary>
public sealed class KmsLoginThrottle(KmsLoginThrottleSettings? settings = null, TimeProvider? time = null)
{
    private const int MaxEntries = 10_000;

    private sealed class Entry
    {
        public int Failures;
        public DateTimeOffset LockedUntil;
        public DateTimeOffset LastFailure;
    }

    private readonly ConcurrentDictionary<string, Entry> _entries = new(StringComparer.Ordinal);
    private readonly TimeProvider _time = time ?? TimeProvider.System;

    public KmsLoginThrottleSettings Settings { get; } = settings ?? new KmsLoginThrottleSettings();

    /// <summary>A lockout that began (for the audit log): what is locked, for how long, after how many failures.</summary>
    public sealed record Lockout(string Kind, string Subject, TimeSpan Duration, int Failures);

    private static string UserKey(string user) => "u:" + (user.Length > 128 ? user[..128] : user).ToLowerInvariant();
    private static string AddressKey(string address) => "a:" + address;

    /// <summary>
    /// Whether a login for <paramref name="user"/> from <paramref name="address"/> may be tried now; when not, the whole seconds
    /// until it may, and (when this refusal locked the address) the lockout to audit.
    /// </summary>
    public bool TryBegin(string user, string address, out int retryAfterSeconds, out Lockout? began)
    {
        var now = _time.GetUtcNow();
        began = null;
        retryAfterSeconds = 0;
        var a = Get(AddressKey(address), now);
        var u = Get(UserKey(user), now);
        lock (a)
        {
            TimeSpan wait = Remaining(a, now);
            if (u is not null)
                lock (u) wait = Max(wait, Remaining(u, now));
            if (wait <= TimeSpan.Zero) return true;
            // Refused: the address pays for trying while locked; the user does not.
            bool wasLocked = a.LockedUntil > now;
            a.Failures++;
            a.LastFailure = now;
            if (a.Failures > Settings.FreeFailures)
            {
                var until = now + Backoff(a.Failures, Settings.MaxAddressLockout);
                if (until > a.LockedUntil) a.LockedUntil = until;
                if (!wasLocked) began = new Lockout("address", address, a.LockedUntil - now, a.Failures);
            }
            retryAfterSeconds = Seconds(Max(wait, Remaining(a, now)));
            return false;
        }
    }

    /// <summary>Records a wrong password (or unknown user); the lockouts it began, for the audit log.</summary>
    public IReadOnlyList<Lockout> Failed(string user, string address)
    {
        var now = _time.GetUtcNow();
        var began = new List<Lockout>(2);
        Fail(Get(UserKey(user), now, create: _entries.Count < MaxEntries), now, Settings.MaxUserLockout, "user", user, began);
        Fail(Get(AddressKey(address), now), now, Settings.MaxAddressLockout, "address", address, began);
        return began;
    }

    /// <summary>A correct password: the user's and the address's failures are forgotten.</summary>
    public void Succeeded(string user, string address)
    {
        _entries.TryRemove(UserKey(user), out _);
        _entries.TryRemove(AddressKey(address), out _);
    }

    /// <summary>Seconds until <paramref name="user"/> may log in from anywhere (0 when not locked); for tests and diagnostics.</summary>
    public int UserLockedSeconds(string user) =>
        _entries.TryGetValue(UserKey(user), out var e) ? Seconds(Remaining(e, _time.GetUtcNow())) : 0;

    private void Fail(Entry? e, DateTimeOffset now, TimeSpan max, string kind, string subject, List<Lockout> began)
    {
        if (e is null) return;
        lock (e)
        {
            bool wasLocked = e.LockedUntil > now;
            e.Failures++;
            e.LastFailure = now;
            if (e.Failures <= Settings.FreeFailures) return;
            e.LockedUntil = now + Backoff(e.Failures, max);
            if (!wasLocked) began.Add(new Lockout(kind, subject, e.LockedUntil - now, e.Failures));
        }
    }

    private TimeSpan Backoff(int failures, TimeSpan max)
    {
        int excess = Math.Clamp(failures - Settings.FreeFailures - 1, 0, 30);
        var t = Settings.FirstLockout * Math.Pow(2, excess);
        return t > max ? max : t;
    }

    private Entry? Get(string key, DateTimeOffset now, bool create = true)
    {
        if (_entries.TryGetValue(key, out var e))
        {
            lock (e)
            {
                if (e.LockedUntil <= now && now - e.LastFailure > Settings.ForgetAfter)
                {
                    e.Failures = 0;
                    e.LockedUntil = default;
                }
            }
            return e;
        }
        if (!create) return null;
        if (_entries.Count >= MaxEntries) Prune(now);
        return _entries.GetOrAdd(key, _ => new Entry());
    }

    /// <summary>Forgets entries with no lockout running and no failure for <see cref="KmsLoginThrottleSettings.ForgetAfter"/>.</summary>
    private void Prune(DateTimeOffset now)
    {
        foreach (var (k, e) in _entries)
            if (e.LockedUntil <= now && now - e.LastFailure > Settings.ForgetAfter)
                _entries.TryRemove(k, out _);
    }

    private static TimeSpan Remaining(Entry e, DateTimeOffset now) => e.LockedUntil > now ? e.LockedUntil - now : TimeSpan.Zero;
    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;
    private static int Seconds(TimeSpan t) => t <= TimeSpan.Zero ? 0 : Math.Max(1, (int)Math.Ceiling(t.TotalSeconds));
}

/// <summary>
/// The process-wide bound on concurrent password hashing (PBKDF2 at 600,000 iterations is ~0.3 s of one core): at most
/// <see cref="Bound"/> run at once, others wait in a queue of at most <see cref="MaxQueue"/> for at most <see cref="QueueTimeout"/>
/// and are then refused (503 with Retry-After), so a flood of logins cannot take every core from the other roles of the process.
/// </summary>
public static class PasswordCheckGate
{
    /// <summary>Password checks that may run at once: half the processors, at least 1, at most 4.</summary>
    public static int Bound { get; } = Math.Clamp(Environment.ProcessorCount / 2, 1, 4);

    private static readonly SemaphoreSlim s_slots = new(Bound, Bound);
    private static int s_inFlight, s_peak, s_waiting;
    /// <summary>Logins that may wait for a slot; more are refused at once.</summary>
    public static int MaxQueue { get; } = 64;
    /// <summary>How long a login waits for a slot.</summary>
    public static TimeSpan QueueTimeout { get; set; } = TimeSpan.FromSeconds(10);
    /// <summary>Seconds a refused login is told to wait.</summary>
    public const int RetryAfterSeconds = 1;

    /// <summary>Password checks running now.</summary>
    public static int InFlight => Volatile.Read(ref s_inFlight);
    /// <summary>The most password checks ever seen running at once in this process (never more than <see cref="Bound"/>).</summary>
    public static int Peak => Volatile.Read(ref s_peak);

    /// <summary>Runs <paramref name="check"/> in a slot; <see cref="KmsErrorKind.Busy"/> when none frees up in time.</summary>
    public static async Task<T> RunAsync<T>(Func<T> check, CancellationToken ct)
    {
        if (Interlocked.Increment(ref s_waiting) > MaxQueue + Bound)
        {
            Interlocked.Decrement(ref s_waiting);
            throw Busy();
        }
        bool entered;
        try { entered = await s_slots.WaitAsync(QueueTimeout, ct).ConfigureAwait(false); }
        finally { Interlocked.Decrement(ref s_waiting); }
        if (!entered) throw Busy();
        try
        {
            int now = Interlocked.Increment(ref s_inFlight);
            int p;
            while (now > (p = Volatile.Read(ref s_peak)) && Interlocked.CompareExchange(ref s_peak, now, p) != p) { }
            return check();
        }
        finally
        {
            Interlocked.Decrement(ref s_inFlight);
            s_slots.Release();
        }
    }

    private static KmsException Busy() =>
        new(KmsErrorKind.Busy, null, "Too many logins are being checked; retry shortly.") { RetryAfterSeconds = RetryAfterSeconds };
}
