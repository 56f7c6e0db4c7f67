using System.Text.RegularExpressions;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Storage;

namespace TpmProvisioning.Station;

/// <summary>
/// An image assigned to a device family: devices whose vendor, name and version match the patterns (<c>*</c> and <c>?</c>
/// wildcards, case-insensitive; null matches anything) get the image's name and SHA-256 in their manufacturing record.
/// </summary>
public sealed record ImageAssignment
{
    public long Id { get; init; }
    public required string Image { get; init; }
    /// <summary>The image's SHA-256 when it was assigned.</summary>
    public required string Sha256 { get; init; }
    public string? Vendor { get; init; }
    public string? NamePattern { get; init; }
    public string? VersionPattern { get; init; }
    public DateTimeOffset Created { get; init; } = DateTimeOffset.UtcNow;
    public string? Actor { get; init; }

    /// <summary>The family as text: <c>vendor/name/version</c>, <c>*</c> for a member that matches anything.</summary>
    public string Family => $"{Vendor ?? "*"}/{NamePattern ?? "*"}/{VersionPattern ?? "*"}";

    /// <summary>How many members are set: the most specific matching assignment wins, then the newest.</summary>
    public int Specificity => (Vendor is null ? 0 : 1) + (NamePattern is null ? 0 : 1) + (VersionPattern is null ? 0 : 1);

    public bool Matches(string vendor, string? name, string? version) =>
        Glob(Vendor, vendor) && Glob(NamePattern, name) && Glob(VersionPattern, version);

    private static bool Glob(string? pattern, string? value)
    {
        if (pattern is null) return true;
        if (value is null) return false;
        var regex = "^" + Regex.Escape(pattern).Replace(@"\*", ".*").Replace(@"\?", ".") + "$";
        try { return Regex.IsMatch(value, regex, RegexOptions.IgnoreCase | RegexOptions.CultureInvariant, TimeSpan.FromMilliseconds(100)); }
        catch (RegexMatchTimeoutException) { return false; }
    }

    /// <summary>Why a pattern is not acceptable, or null.</summary>
    public static string? PatternProblem(string field, string? value)
    {
        if (value is null) return null;
        if (value.Length is 0 or > 128 || string.IsNullOrWhiteSpace(value) || value.Any(char.IsControl))
            return $"{field}: 1-128 printable characters, not only spaces";
        return null;
    }
}

public sealed partial class StationService
{
    private StationImages? _images;
    private readonly string? _dataPath;

    /// <summary>The images folder (<c>&lt;DataPath&gt;/station/images</c> unless <see cref="StationSettings.ImagesDirectory"/> is set).</summary>
    public StationImages Images => _images ??= new StationImages(
        Settings.ImagesDirectory ?? Path.Combine(Path.GetFullPath(_dataPath ?? "."), "station", "images"), Settings.MaxImageBytes);

    /// <summary>Assigns an image to a device family (at least one of vendor, name, version); the image is hashed now if its hash is not known.</summary>
    public async Task<ImageAssignment> AssignImageAsync(string? image, string? vendor, string? name, string? version, string actor, CancellationToken ct = default)
    {
        Images.Resolve(image);
        foreach (var (f, v) in new[] { ("vendor", vendor), ("name", name), ("version", version) })
            if (ImageAssignment.PatternProblem(f, v) is { } why) throw new StationException(400, "INVALID_PARAMETER", why);
        if (vendor is null && name is null && version is null)
            throw new StationException(400, "MISSING_REQUIRED_FIELDS", "a device family needs at least one of vendor, name and version");
        if (System.IO.Directory.Exists(Path.Combine(Images.Directory, image!)))
            throw new StationException(400, "IMAGE_IS_FOLDER", "only an image file can be assigned (its SHA-256 goes into the manufacturing record)");
        var sha = await Images.Hasher.ComputeAsync(image, ct).ConfigureAwait(false);
        var a = new ImageAssignment { Image = image!, Sha256 = sha, Vendor = vendor, NamePattern = name, VersionPattern = version, Actor = actor };
        long id = await _store.InsertImageAssignmentAsync(a, ct).ConfigureAwait(false);
        await _store.AppendAuditAsync(new AuditEntry { Actor = actor, Action = "station.image.assign", Target = image, Outcome = AuditOutcome.Success, Detail = $"id={id} family={a.Family} sha256={sha}" }, ct).ConfigureAwait(false);
        return a with { Id = id };
    }

    public Task<IReadOnlyList<ImageAssignment>> ListImageAssignmentsAsync(CancellationToken ct = default) => _store.ListImageAssignmentsAsync(ct);

    /// <summary>Removes one assignment; ASSIGNMENT_NOT_FOUND when there is none with this id.</summary>
    public async Task RemoveImageAssignmentAsync(long id, string actor, CancellationToken ct = default)
    {
        if (!await _store.RemoveImageAssignmentAsync(id, ct).ConfigureAwait(false))
            throw new StationException(404, "ASSIGNMENT_NOT_FOUND", "no image assignment with this id", "Requested id: " + id);
        await _store.AppendAuditAsync(new AuditEntry { Actor = actor, Action = "station.image.unassign", Target = id.ToString(System.Globalization.CultureInfo.InvariantCulture), Outcome = AuditOutcome.Success }, ct).ConfigureAwait(false);
    }

    /// <summary>Deletes an image and its assignments.</summary>
    public async Task DeleteImageAsync(string? name, string actor, CancellationToken ct = default)
    {
        Images.Delete(name);
        foreach (var a in (await _store.ListImageAssignmentsAsync(ct).ConfigureAwait(false)).Where(a => a.Image == name))
            await _store.RemoveImageAssignmentAsync(a.Id, ct).ConfigureAwait(false);
        await _store.AppendAuditAsync(new AuditEntry { Actor = actor, Action = "station.image.delete", Target = name, Outcome = AuditOutcome.Success }, ct).ConfigureAwait(false);
    }

    /// <summary>The images as listed, with the families each is assigned to.</summary>
    public async Task<IReadOnlyList<StationImage>> ListImagesAsync(CancellationToken ct = default)
    {
        var assignments = await _store.ListImageAssignmentsAsync(ct).ConfigureAwait(false);
        return Images.List(n => assignments.Where(a => a.Image == n).Select(a => a.Family).ToList());
    }

    public async Task<StationImage> GetImageAsync(string? name, CancellationToken ct = default)
    {
        var assignments = await _store.ListImageAssignmentsAsync(ct).ConfigureAwait(false);
        return Images.Get(name, assignments.Where(a => a.Image == name).Select(a => a.Family).ToList());
    }

    /// <summary>The image a device gets: the most specific matching assignment (then the newest), else the configured image.</summary>
    public async Task<(string? Name, string? Sha256)> ImageForDeviceAsync(string vendor, string? name, string? version, CancellationToken ct = default)
    {
        var match = (await _store.ListImageAssignmentsAsync(ct).ConfigureAwait(false))
            .Where(a => a.Matches(vendor, name, version)).OrderByDescending(a => a.Specificity).ThenByDescending(a => a.Id).FirstOrDefault();
        return match is null ? (Settings.ImageName, Settings.ImageSha256) : (match.Image, match.Sha256);
    }
}
