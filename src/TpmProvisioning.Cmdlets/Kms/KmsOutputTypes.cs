using System.Security;
using TpmProvisioning.Kms;

namespace TpmProvisioning.Cmdlets;

/// <summary>A KMS provider (vSphere NATIVE provider), the same from the local store and from a server. Never its key derivation key.</summary>
public sealed class KmsProvider
{
    /// <summary>The provider name.</summary>
    public string Name { get; init; } = "";
    /// <summary>The provider's key id (vSphere native_spec.key_id).</summary>
    public string KeyId { get; init; } = "";
    /// <summary>Health as vSphere reports it (OK, WARNING, ERROR, NONE).</summary>
    public string Health { get; init; } = "";
    /// <summary>Provider type; always NATIVE.</summary>
    public string Type { get; init; } = "NATIVE";

    internal static KmsProvider From(KmsProviderInfo p) => new() { Name = p.Name, KeyId = p.KeyId, Health = p.Health, Type = p.Type };
}

/// <summary>A KMS key (CCKM OCI key), the same from the local store and from a server.</summary>
public sealed class KmsKey
{
    /// <summary>The key's id.</summary>
    public string Id { get; init; } = "";
    /// <summary>The key's name (unique).</summary>
    public string Name { get; init; } = "";
    /// <summary>OCI compartment id.</summary>
    public string CompartmentId { get; init; } = "";
    /// <summary>OCI vault id.</summary>
    public string VaultId { get; init; } = "";
    /// <summary>OCI key id.</summary>
    public string OciKeyId { get; init; } = "";
    /// <summary>Algorithm (AES).</summary>
    public string Algorithm { get; init; } = "";
    /// <summary>Key length in bytes.</summary>
    public int Length { get; init; }
    /// <summary>Id of the primary version.</summary>
    public string? CurrentVersionId { get; init; }
    /// <summary>OCI version id of the primary version.</summary>
    public string? CurrentOciVersionId { get; init; }
    /// <summary>Number of versions.</summary>
    public int VersionCount { get; init; }
    /// <summary>When the key was created.</summary>
    public DateTimeOffset Created { get; init; }
    /// <summary>When the key last changed.</summary>
    public DateTimeOffset Updated { get; init; }

    internal static KmsKey From(KmsKeyInfo k) => new()
    {
        Id = k.Id, Name = k.Name, CompartmentId = k.CompartmentId, VaultId = k.VaultId, OciKeyId = k.OciKeyId, Algorithm = k.Algorithm,
        Length = k.Length, CurrentVersionId = k.CurrentVersionId, CurrentOciVersionId = k.CurrentOciVersionId, VersionCount = k.VersionCount,
        Created = KmsTime.Ms(k.Created), Updated = KmsTime.Ms(k.Updated),
    };
}

/// <summary>A version of a KMS key (CCKM OCI key version), the same from the local store and from a server. Never its material.</summary>
public sealed class KmsKeyVersion
{
    /// <summary>The version's id.</summary>
    public string Id { get; init; } = "";
    /// <summary>The key's id.</summary>
    public string KeyId { get; init; } = "";
    /// <summary>The key's name.</summary>
    public string KeyName { get; init; } = "";
    /// <summary>Version number: 1 for the first, counting up.</summary>
    public int Number { get; init; }
    /// <summary>OCI version id.</summary>
    public string OciVersionId { get; init; } = "";
    /// <summary>OCI key id.</summary>
    public string OciKeyId { get; init; } = "";
    /// <summary>OCI compartment id.</summary>
    public string CompartmentId { get; init; } = "";
    /// <summary>OCI vault id.</summary>
    public string VaultId { get; init; } = "";
    /// <summary>INTERNAL (native) or EXTERNAL (uploaded).</summary>
    public string Origin { get; init; } = "";
    /// <summary>native, or the source key tier (local, hsm-luna).</summary>
    public string KeyMaterialOrigin { get; init; } = "";
    /// <summary>ENABLED when usable.</summary>
    public string LifecycleState { get; init; } = "";
    /// <summary>Whether new data is encrypted under this version.</summary>
    public bool IsPrimary { get; init; }
    /// <summary>When the version was created.</summary>
    public DateTimeOffset Created { get; init; }
    /// <summary>When the version last changed.</summary>
    public DateTimeOffset Updated { get; init; }

    internal static KmsKeyVersion From(KmsKeyVersionInfo v) => new()
    {
        Id = v.Id, KeyId = v.KeyId, KeyName = v.KeyName, Number = v.Number, OciVersionId = v.OciVersionId, OciKeyId = v.OciKeyId,
        CompartmentId = v.CompartmentId, VaultId = v.VaultId, Origin = v.Origin, KeyMaterialOrigin = v.KeyMaterialOrigin,
        LifecycleState = v.LifecycleState, IsPrimary = v.IsPrimary, Created = KmsTime.Ms(v.Created), Updated = KmsTime.Ms(v.Updated),
    };
}

/// <summary>A KMS user (never its password or hash).</summary>
public sealed class KmsUser
{
    /// <summary>User name.</summary>
    public string Name { get; init; } = "";
    /// <summary>Administrator or ReadOnly.</summary>
    public KmsUserRole Role { get; init; }
    /// <summary>When the user was created.</summary>
    public DateTimeOffset Created { get; init; }
}

/// <summary>
/// A data key released to this device. <see cref="Key"/> holds the key as a SecureString of its base64 text;
/// <see cref="KeyBytes"/> is filled only when the caller asked for plain bytes (-AsPlainBytes).
/// </summary>
public sealed class KmsDataKey
{
    /// <summary>The agent the key was released to.</summary>
    public string AgentId { get; init; } = "";
    /// <summary>The KMS server asked.</summary>
    public string Server { get; init; } = "";
    /// <summary>Provider (provider requests).</summary>
    public string? Provider { get; init; }
    /// <summary>Key identifier (provider requests).</summary>
    public string? KeyIdentifier { get; init; }
    /// <summary>Key id (key requests).</summary>
    public string? KeyId { get; init; }
    /// <summary>Version id (key requests).</summary>
    public string? VersionId { get; init; }
    /// <summary>Version number (key requests).</summary>
    public int? VersionNumber { get; init; }
    /// <summary>AES-256.</summary>
    public string Algorithm { get; init; } = "";
    /// <summary>The key material, base64, as a SecureString.</summary>
    public SecureString Key { get; init; } = new();
    /// <summary>The key material as bytes; null unless -AsPlainBytes was given.</summary>
    public byte[]? KeyBytes { get; init; }
}

/// <summary>The store keeps KMS times to the millisecond; objects carry them so, whether just made, read back or read remotely.</summary>
internal static class KmsTime
{
    public static DateTimeOffset Ms(DateTimeOffset t) => new(t.UtcTicks - t.UtcTicks % TimeSpan.TicksPerMillisecond, TimeSpan.Zero);
}
