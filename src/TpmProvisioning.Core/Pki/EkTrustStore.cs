using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace TpmProvisioning.Pki;

/// <summary>The role of a certificate in the EK trust store.</summary>
public enum EkTrustKind
{
    /// <summary>A TPM manufacturer's root CA: a trust anchor.</summary>
    Root,
    /// <summary>A manufacturer's intermediate CA: used to build chains from EK certificates to a root, never trusted by itself.</summary>
    Intermediate,
}

/// <summary>One certificate in the EK trust store, as management cmdlets list it.</summary>
public sealed record EkTrustEntry(EkTrustKind Kind, string Subject, string Issuer, string Thumbprint, DateTimeOffset NotBefore, DateTimeOffset NotAfter, string Path);

/// <summary>Outcome of an EK certificate chain check.</summary>
public sealed record EkChainResult(bool Trusted, string? Problem, X509Certificate2? Root)
{
    public static EkChainResult Ok(X509Certificate2 root) => new(true, null, root);
    public static EkChainResult Fail(string problem) => new(false, problem, null);
}

/// <summary>
/// The TPM manufacturers the provisioning surface trusts: roots in one folder, intermediates in another. This is how vendors
/// ship them (Infineon, STMicroelectronics and Nuvoton publish a root and several intermediate "EK CA" certificates that the
/// TPM's EK certificate names in its Authority Information Access; the TPM itself carries only the leaf): an admin drops the
/// roots into <c>ek-roots</c> and the intermediates into <c>ek-intermediates</c>. Files are PEM (one or more certificates)
/// or DER. Chains are built offline (no AIA downloads, no revocation fetches) against the roots alone.
/// A snapshot is immutable; <see cref="EkTrustAnchors"/> swaps in a new one when the folders change.
/// </summary>
public sealed class EkTrustStore
{
    private readonly X509Certificate2Collection _roots;
    private readonly X509Certificate2Collection _intermediates;

    public EkTrustStore(IEnumerable<X509Certificate2> roots, IEnumerable<X509Certificate2>? intermediates = null)
    {
        _roots = [.. roots];
        _intermediates = [.. intermediates ?? []];
    }

    public IReadOnlyList<X509Certificate2> Roots => [.. _roots];
    public IReadOnlyList<X509Certificate2> Intermediates => [.. _intermediates];

    /// <summary>Loads every certificate file of the two folders (missing folders are empty).</summary>
    public static EkTrustStore Load(string rootsDirectory, string? intermediatesDirectory) =>
        new(ReadFolder(rootsDirectory).Select(e => e.Cert), intermediatesDirectory is null ? [] : ReadFolder(intermediatesDirectory).Select(e => e.Cert));

    /// <summary>
    /// Checks that <paramref name="ekCertificate"/> chains to one of the roots through the known intermediates, with every
    /// signature valid and every certificate within its validity at <paramref name="at"/> (default now). The EK certificate must
    /// not itself be a CA. TCG-specific critical extensions (the subjectAltName with TPM manufacturer, model and version)
    /// and key-usage or policy mismatches are tolerated, as EK certificates carry them by design.
    /// </summary>
    public EkChainResult Validate(X509Certificate2 ekCertificate, DateTimeOffset? at = null)
    {
        ArgumentNullException.ThrowIfNull(ekCertificate);
        if (_roots.Count == 0) return EkChainResult.Fail("no trusted TPM manufacturer root is configured");
        bool isCa;
        // Extensions decode lazily: a malformed basicConstraints throws here, and is a bad certificate.
        try { isCa = ekCertificate.Extensions.OfType<X509BasicConstraintsExtension>().FirstOrDefault() is { CertificateAuthority: true }; }
        catch (CryptographicException) { return EkChainResult.Fail("its basicConstraints extension is malformed"); }
        if (isCa) return EkChainResult.Fail("is a CA certificate, not an EK certificate");
        using var chain = new X509Chain();
        var p = chain.ChainPolicy;
        p.TrustMode = X509ChainTrustMode.CustomRootTrust;
        p.CustomTrustStore.AddRange(_roots);
        p.ExtraStore.AddRange(_intermediates);
        p.RevocationMode = X509RevocationMode.NoCheck;
        p.DisableCertificateDownloads = true;
        p.VerificationFlags = X509VerificationFlags.IgnoreWrongUsage | X509VerificationFlags.IgnoreInvalidPolicy;
        p.VerificationTime = (at ?? DateTimeOffset.UtcNow).UtcDateTime;
        try
        {
            chain.Build(ekCertificate);
        }
        catch (CryptographicException ex)
        {
            return EkChainResult.Fail("cannot be chained: " + ex.Message);
        }
        var problems = new List<string>();
        foreach (var element in chain.ChainElements)
        {
            foreach (var s in element.ChainElementStatus)
            {
                if (Tolerated(s.Status)) continue;
                problems.Add(Describe(s.Status));
            }
        }
        foreach (var s in chain.ChainStatus)
            if (!Tolerated(s.Status)) problems.Add(Describe(s.Status));
        if (problems.Count > 0) return EkChainResult.Fail(string.Join("; ", problems.Distinct()));
        var top = chain.ChainElements[^1].Certificate;
        var root = _roots.FirstOrDefault(r => r.RawData.AsSpan().SequenceEqual(top.RawData));
        if (root is null || chain.ChainElements.Count < 2)
            return EkChainResult.Fail("does not chain to a trusted TPM manufacturer root");
        return EkChainResult.Ok(root);
    }

    private static bool Tolerated(X509ChainStatusFlags f) => f is X509ChainStatusFlags.NoError
        or X509ChainStatusFlags.HasNotSupportedCriticalExtension
        or X509ChainStatusFlags.NotValidForUsage
        or X509ChainStatusFlags.InvalidPolicyConstraints
        or X509ChainStatusFlags.NoIssuanceChainPolicy
        or X509ChainStatusFlags.RevocationStatusUnknown
        or X509ChainStatusFlags.OfflineRevocation;

    private static string Describe(X509ChainStatusFlags f) => f switch
    {
        X509ChainStatusFlags.UntrustedRoot or X509ChainStatusFlags.PartialChain => "does not chain to a trusted TPM manufacturer root",
        X509ChainStatusFlags.NotSignatureValid => "a signature in its chain does not verify",
        X509ChainStatusFlags.NotTimeValid => "it or a certificate in its chain is outside its validity period",
        X509ChainStatusFlags.InvalidBasicConstraints => "an issuer in its chain is not a CA",
        X509ChainStatusFlags.Revoked => "revoked",
        _ => "chain problem: " + f,
    };

    // ------------------------------------------------------------------ folder management (used by the cmdlets)

    /// <summary>Certificate files in a folder, with where each came from.</summary>
    internal static List<(X509Certificate2 Cert, string Path)> ReadFolder(string directory)
    {
        var list = new List<(X509Certificate2, string)>();
        if (!Directory.Exists(directory)) return list;
        foreach (var file in Directory.EnumerateFiles(directory).Order(StringComparer.Ordinal))
        {
            var ext = Path.GetExtension(file).ToLowerInvariant();
            if (ext is not (".pem" or ".crt" or ".cer" or ".der")) continue;
            foreach (var c in ReadCertificates(File.ReadAllBytes(file))) list.Add((c, file));
        }
        return list;
    }

    /// <summary>Every certificate of a PEM bundle, or the single certificate of a DER file.</summary>
    public static IReadOnlyList<X509Certificate2> ReadCertificates(byte[] content)
    {
        ArgumentNullException.ThrowIfNull(content);
        if (content.Length > 0 && content[0] == 0x30)
            return [X509CertificateLoader.LoadCertificate(content)];
        var text = System.Text.Encoding.ASCII.GetString(content);
        var c = new X509Certificate2Collection();
        c.ImportFromPem(text);
        return [.. c];
    }

    /// <summary>The folder for <paramref name="kind"/> under a data path.</summary>
    public static string FolderFor(string dataPath, EkTrustKind kind) => kind == EkTrustKind.Root
        ? Provisioning.ProvisioningPaths.EkRoots(dataPath)
        : Provisioning.ProvisioningPaths.EkIntermediates(dataPath);

    /// <summary>
    /// Adds a certificate to the trust store of <paramref name="dataPath"/> as <c>&lt;thumbprint&gt;.pem</c>. A root must be
    /// self-signed CA; an intermediate must be a CA. Adding a certificate already there returns the existing entry.
    /// </summary>
    public static EkTrustEntry Add(string dataPath, X509Certificate2 certificate, EkTrustKind kind)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        if (certificate.Extensions.OfType<X509BasicConstraintsExtension>().FirstOrDefault() is not { CertificateAuthority: true })
            throw new ArgumentException($"{certificate.Subject} is not a CA certificate (basicConstraints cA is not set).", nameof(certificate));
        if (kind == EkTrustKind.Root && certificate.SubjectName.RawData.AsSpan().SequenceEqual(certificate.IssuerName.RawData) is false)
            throw new ArgumentException($"{certificate.Subject} is not self-signed; add it as an intermediate.", nameof(certificate));
        var folder = FolderFor(dataPath, kind);
        Storage.PrivateFiles.CreateFolder(folder);
        var thumb = certificate.GetCertHashString(HashAlgorithmName.SHA256);
        var path = Path.Combine(folder, thumb + ".pem");
        if (!File.Exists(path)) Storage.PrivateFiles.WriteAllText(path, certificate.ExportCertificatePem() + "\n");
        return Entry(kind, certificate, path);
    }

    /// <summary>Every certificate of the trust store of <paramref name="dataPath"/>, roots first.</summary>
    public static IReadOnlyList<EkTrustEntry> List(string dataPath) =>
        [.. ReadFolder(FolderFor(dataPath, EkTrustKind.Root)).Select(e => Entry(EkTrustKind.Root, e.Cert, e.Path)),
         .. ReadFolder(FolderFor(dataPath, EkTrustKind.Intermediate)).Select(e => Entry(EkTrustKind.Intermediate, e.Cert, e.Path))];

    /// <summary>
    /// Removes the certificate with SHA-256 <paramref name="thumbprint"/> (hex) from the trust store. A file holding several
    /// certificates is rewritten without it. Returns false when none matched.
    /// </summary>
    public static bool Remove(string dataPath, string thumbprint)
    {
        ArgumentNullException.ThrowIfNull(thumbprint);
        bool removed = false;
        foreach (var kind in new[] { EkTrustKind.Root, EkTrustKind.Intermediate })
        {
            foreach (var group in ReadFolder(FolderFor(dataPath, kind)).GroupBy(e => e.Path))
            {
                var keep = group.Where(e => !string.Equals(e.Cert.GetCertHashString(HashAlgorithmName.SHA256), thumbprint, StringComparison.OrdinalIgnoreCase)).ToList();
                if (keep.Count == group.Count()) continue;
                removed = true;
                if (keep.Count == 0) File.Delete(group.Key);
                else Storage.PrivateFiles.WriteAllText(group.Key, string.Concat(keep.Select(k => k.Cert.ExportCertificatePem() + "\n")));
            }
        }
        return removed;
    }

    private static EkTrustEntry Entry(EkTrustKind kind, X509Certificate2 c, string path) =>
        new(kind, c.Subject, c.Issuer, c.GetCertHashString(HashAlgorithmName.SHA256), c.NotBefore.ToUniversalTime(), c.NotAfter.ToUniversalTime(), path);
}

/// <summary>
/// The live EK trust store of a server: reloads the two folders when their contents change (checked at most once per
/// <see cref="RefreshInterval"/>), so roots added by a cmdlet apply to the next request without a restart.
/// </summary>
public sealed class EkTrustAnchors
{
    private readonly string _roots;
    private readonly string? _intermediates;
    private readonly object _gate = new();
    private EkTrustStore _current;
    private string _stamp;
    private long _nextCheck;

    public EkTrustAnchors(string rootsDirectory, string? intermediatesDirectory)
    {
        _roots = rootsDirectory;
        _intermediates = intermediatesDirectory;
        _stamp = Stamp();
        _current = EkTrustStore.Load(_roots, _intermediates);
    }

    /// <summary>How often the folders are looked at.</summary>
    public TimeSpan RefreshInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// The current snapshot. Adding or removing a file changes its folder's modification time, which is looked at on every
    /// call (one stat per folder), so a root added by a cmdlet applies to the very next request; a file rewritten in place
    /// is noticed within <see cref="RefreshInterval"/>.
    /// </summary>
    public EkTrustStore Current
    {
        get
        {
            long now = Environment.TickCount64;
            long dirs = FolderTimes();
            if (now < Volatile.Read(ref _nextCheck) && dirs == Volatile.Read(ref _folderTimes)) return Volatile.Read(ref _current);
            lock (_gate)
            {
                _nextCheck = now + (long)RefreshInterval.TotalMilliseconds;
                _folderTimes = dirs;
                var stamp = Stamp();
                if (stamp != _stamp)
                {
                    Volatile.Write(ref _current, EkTrustStore.Load(_roots, _intermediates));
                    _stamp = stamp;
                }
                return _current;
            }
        }
    }

    private long _folderTimes;

    private long FolderTimes()
    {
        long t = 0;
        foreach (var dir in new[] { _roots, _intermediates })
            if (dir is not null) t = t * 31 + Directory.GetLastWriteTimeUtc(dir).Ticks;
        return t;
    }

    /// <summary>Reloads now.</summary>
    public void Reload()
    {
        lock (_gate)
        {
            _stamp = Stamp();
            Volatile.Write(ref _current, EkTrustStore.Load(_roots, _intermediates));
        }
    }

    private string Stamp()
    {
        var sb = new System.Text.StringBuilder();
        foreach (var dir in new[] { _roots, _intermediates })
        {
            if (dir is null || !Directory.Exists(dir)) { sb.Append('|'); continue; }
            foreach (var f in new DirectoryInfo(dir).EnumerateFiles().OrderBy(f => f.Name, StringComparer.Ordinal))
                sb.Append(f.Name).Append(':').Append(f.Length).Append(':').Append(f.LastWriteTimeUtc.Ticks).Append(';');
            sb.Append('|');
        }
        return sb.ToString();
    }
}
