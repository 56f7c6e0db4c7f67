namespace TpmProvisioning.Kms;

/// <summary>
/// Opens the KMS engine of a data path the one way the server and the cmdlets share: the master-key wrapper that
/// <see cref="KmsSettings.MasterKey"/> chooses, with its files under <c>&lt;DataPath&gt;/kms</c>, checked against the store.
/// </summary>
public static class KmsEngineFactory
{
    /// <summary>The folder of the master-key files of a data path.</summary>
    public static string KmsDirectory(string dataPath) => Path.Combine(dataPath, "kms");

    /// <summary>The kind of master key already set up in a data path (by its file), or null when there is none yet.</summary>
    public static MasterKeyKind? DetectMasterKey(string dataPath)
    {
        var dir = KmsDirectory(dataPath);
        if (File.Exists(Path.Combine(dir, TpmSealedMasterKey.FileName))) return MasterKeyKind.Tpm;
        if (File.Exists(Path.Combine(dir, Pkcs11MasterKey.FileName))) return MasterKeyKind.Pkcs11;
        if (File.Exists(Path.Combine(dir, InsecureFileMasterKey.FileName))) return MasterKeyKind.InsecureFile;
        return null;
    }

    /// <summary>Loads (or creates) the master key of <paramref name="dataPath"/> and opens the engine on <paramref name="store"/>.</summary>
    public static async Task<(KmsEngine Engine, IMasterKeyWrapper Wrapper)> OpenAsync(Storage.IStore store, string dataPath, KmsSettings settings, CancellationToken ct = default)
    {
        var wrapper = KmsEngine.CreateWrapper(settings, KmsDirectory(dataPath));
        return (await KmsEngine.OpenAsync(store, wrapper, settings, ct).ConfigureAwait(false), wrapper);
    }
}
