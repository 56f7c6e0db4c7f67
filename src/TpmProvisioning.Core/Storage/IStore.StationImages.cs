using TpmProvisioning.Station;

namespace TpmProvisioning.Storage;

/// <summary>Station image assignments (migration 8).</summary>
public partial interface IStore
{
    /// <summary>Stores an assignment; returns its id.</summary>
    Task<long> InsertImageAssignmentAsync(ImageAssignment assignment, CancellationToken ct = default);
    /// <summary>Every assignment, oldest first.</summary>
    Task<IReadOnlyList<ImageAssignment>> ListImageAssignmentsAsync(CancellationToken ct = default);
    Task<bool> RemoveImageAssignmentAsync(long id, CancellationToken ct = default);
}
