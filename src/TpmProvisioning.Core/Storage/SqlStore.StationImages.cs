using TpmProvisioning.Station;

namespace TpmProvisioning.Storage;

/// <summary>Station image assignments over portable SQL (table from migration 8).</summary>
public abstract partial class SqlStore
{
    public async Task<long> InsertImageAssignmentAsync(ImageAssignment assignment, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(assignment);
        return await Guard("add an image assignment", async () =>
        {
            await using var conn = await OpenAsync(ct).ConfigureAwait(false);
            await using var cmd = conn.CreateCommand();
            cmd.CommandText = "INSERT INTO station_image_assignments (image_name, image_sha256, vendor, name_pattern, version_pattern, created_ms, actor) VALUES (@image, @sha, @vendor, @name, @version, @t, @actor)" + Dialect.ReturningId;
            AddParam(cmd, "image", assignment.Image);
            AddParam(cmd, "sha", assignment.Sha256);
            AddParam(cmd, "vendor", assignment.Vendor);
            AddParam(cmd, "name", assignment.NamePattern);
            AddParam(cmd, "version", assignment.VersionPattern);
            AddParam(cmd, "t", assignment.Created.ToUnixTimeMilliseconds());
            AddParam(cmd, "actor", Limit(assignment.Actor, 1024));
            return Convert.ToInt64(await cmd.ExecuteScalarAsync(ct).ConfigureAwait(false));
        }).ConfigureAwait(false);
    }

    public Task<IReadOnlyList<ImageAssignment>> ListImageAssignmentsAsync(CancellationToken ct = default) =>
        AllAsync("list image assignments", _ => "SELECT id, image_name, image_sha256, vendor, name_pattern, version_pattern, created_ms, actor FROM station_image_assignments ORDER BY id",
            r => new ImageAssignment
            {
                Id = r.GetInt64(0), Image = r.GetString(1), Sha256 = r.GetString(2), Vendor = r.IsDBNull(3) ? null : r.GetString(3),
                NamePattern = r.IsDBNull(4) ? null : r.GetString(4), VersionPattern = r.IsDBNull(5) ? null : r.GetString(5),
                Created = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(6)), Actor = r.IsDBNull(7) ? null : r.GetString(7),
            }, ct);

    public async Task<bool> RemoveImageAssignmentAsync(long id, CancellationToken ct = default) =>
        await ExecuteAsync("remove an image assignment", cmd => { AddParam(cmd, "id", id); return "DELETE FROM station_image_assignments WHERE id = @id"; }, ct).ConfigureAwait(false) > 0;
}
