using System.Security.Cryptography;
using System.Text;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Kms;

/// <summary>Users (PBKDF2-SHA256 password hashes), vSphere session ids and CipherTrust bearer tokens (stored as SHA-256).</summary>
public sealed partial class KmsEngine
{
    public const string SessionKind = "session";
    public const string BearerKind = "bearer";

    public async Task<KmsUserInfo> CreateUserAsync(string? name, string? password, KmsUserRole role, KmsCaller caller, int? iterations = null, CancellationToken ct = default)
    {
        CheckName(name, "username");
        if (string.IsNullOrEmpty(password) || password.Length < 8)
            throw new KmsException(KmsErrorKind.InvalidArgument, "password", "password must be at least 8 characters");
        int n = iterations ?? Settings.PasswordIterations;
        if (n < 1000) throw new KmsException(KmsErrorKind.InvalidArgument, "iterations", "at least 1000 PBKDF2 iterations");
        var salt = RandomNumberGenerator.GetBytes(16);
        var rec = new KmsUserRecord { Name = name!, Salt = salt, Iterations = n, Role = role.ToString(), PasswordHash = Hash(password, salt, n) };
        if (!await _store.InsertKmsUserAsync(rec, ct).ConfigureAwait(false))
            throw new KmsException(KmsErrorKind.AlreadyExists, "username", $"user '{name}' already exists");
        await AuditAsync(caller, "kms.user.create", name, AuditOutcome.Success, $"role={role}", ct).ConfigureAwait(false);
        return new KmsUserInfo(rec.Name, role, rec.Created);
    }

    public async Task<IReadOnlyList<KmsUserInfo>> ListUsersAsync(CancellationToken ct = default) =>
        (await _store.ListKmsUsersAsync(ct).ConfigureAwait(false)).Select(u => new KmsUserInfo(u.Name, ParseRole(u.Role), u.Created)).ToList();

    public async Task RemoveUserAsync(string name, KmsCaller caller, CancellationToken ct = default)
    {
        if (!await _store.DeleteKmsUserAsync(name, ct).ConfigureAwait(false))
            throw new KmsException(KmsErrorKind.NotFound, "username", $"user '{name}' does not exist");
        await AuditAsync(caller, "kms.user.delete", name, AuditOutcome.Success, null, ct).ConfigureAwait(false);
    }

    private static KmsUserRole ParseRole(string r) => Enum.TryParse<KmsUserRole>(r, out var role) ? role : KmsUserRole.ReadOnly;

    private static byte[] Hash(string password, byte[] salt, int iterations) =>
        Rfc2898DeriveBytes.Pbkdf2(Encoding.UTF8.GetBytes(password), salt, iterations, HashAlgorithmName.SHA256, 32);

    /// <summary>Backoff of failed logins (per user name and per address) for this engine's surfaces.</summary>
    public KmsLoginThrottle LoginThrottle => LazyInitializer.EnsureInitialized(ref _loginThrottle, () => new KmsLoginThrottle(Settings.LoginThrottle));
    private KmsLoginThrottle? _loginThrottle;

    /// <summary>
    /// Checks a password and issues a token of <paramref name="kind"/>; <see cref="KmsErrorKind.Unauthenticated"/> for an unknown
    /// user or a wrong password (the same answer, after the same work). Audited either way. Failed logins are throttled per user
    /// and per address (<see cref="KmsErrorKind.Throttled"/> with Retry-After, without a password check; lockouts audited), and the
    /// password hash runs in the process-wide <see cref="PasswordCheckGate"/> (<see cref="KmsErrorKind.Busy"/> when it is full).
    /// </summary>
    public async Task<KmsIssuedToken> LoginAsync(string? user, string? password, string kind, KmsCaller caller, CancellationToken ct = default)
    {
        string who = user ?? "", from = caller.Source;
        var throttle = LoginThrottle;
        if (!throttle.TryBegin(who, from, out int retryAfter, out var began))
        {
            if (began is not null) await AuditLockoutAsync(caller, kind, who, began, ct).ConfigureAwait(false);
            throw new KmsException(KmsErrorKind.Throttled, null, $"Too many failed logins; retry in {retryAfter} s.") { RetryAfterSeconds = retryAfter };
        }
        var rec = string.IsNullOrEmpty(user) ? null : await _store.GetKmsUserAsync(user, ct).ConfigureAwait(false);
        bool ok = await PasswordCheckGate.RunAsync(() =>
        {
            if (rec is null)
            {
                Hash(password ?? "", new byte[16], Settings.PasswordIterations);
                return false;
            }
            return CryptographicOperations.FixedTimeEquals(Hash(password ?? "", rec.Salt, rec.Iterations), rec.PasswordHash);
        }, ct).ConfigureAwait(false);
        if (!ok)
        {
            var lockouts = throttle.Failed(who, from);
            await AuditAsync(caller with { Actor = user ?? "" }, $"kms.{kind}.create", user, AuditOutcome.Denied, "bad user name or password", ct).ConfigureAwait(false);
            foreach (var l in lockouts) await AuditLockoutAsync(caller, kind, who, l, ct).ConfigureAwait(false);
            throw new KmsException(KmsErrorKind.Unauthenticated, null, "bad user name or password");
        }
        throttle.Succeeded(who, from);
        var token = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_');
        var now = DateTimeOffset.UtcNow;
        var expires = now + (kind == SessionKind ? Settings.SessionLifetime : Settings.TokenLifetime);
        await _store.InsertKmsTokenAsync(new KmsTokenRecord { TokenHash = SHA256.HashData(Encoding.ASCII.GetBytes(token)), UserName = rec!.Name, Kind = kind, Created = now, Expires = expires }, ct).ConfigureAwait(false);
        await AuditAsync(caller with { Actor = rec.Name }, $"kms.{kind}.create", rec.Name, AuditOutcome.Success, null, ct).ConfigureAwait(false);
        return new KmsIssuedToken(token, rec.Name, ParseRole(rec.Role), expires);
    }

    private Task AuditLockoutAsync(KmsCaller caller, string kind, string user, KmsLoginThrottle.Lockout l, CancellationToken ct) =>
        AuditAsync(caller with { Actor = user }, "kms.login.lockout", l.Kind == "user" ? user : l.Subject, AuditOutcome.Denied,
            $"{l.Kind} {(l.Kind == "user" ? user : l.Subject)} locked out of {kind} logins for {(int)Math.Ceiling(l.Duration.TotalSeconds)} s after {l.Failures} failed attempts", ct);

    /// <summary>The user and role behind a live token of <paramref name="kind"/>; null when unknown or expired.</summary>
    public async Task<KmsUserInfo?> AuthenticateAsync(string? token, string kind, CancellationToken ct = default)
    {
        if (string.IsNullOrEmpty(token) || token.Length > 512) return null;
        var t = await _store.GetKmsTokenAsync(SHA256.HashData(Encoding.ASCII.GetBytes(token)), DateTimeOffset.UtcNow, ct).ConfigureAwait(false);
        if (t is null || t.Kind != kind) return null;
        var u = await _store.GetKmsUserAsync(t.UserName, ct).ConfigureAwait(false);
        return u is null ? null : new KmsUserInfo(u.Name, ParseRole(u.Role), u.Created);
    }

    /// <summary>Ends a session or token; false when it was not live.</summary>
    public Task<bool> LogoutAsync(string token, CancellationToken ct = default) =>
        _store.DeleteKmsTokenAsync(SHA256.HashData(Encoding.ASCII.GetBytes(token)), ct);
}
