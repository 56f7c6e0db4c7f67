using Net.Pkcs11Interop.Common;
using Net.Pkcs11Interop.HighLevelAPI;

namespace TpmProvisioning.Kms;

/// <summary>Where a PKCS#11 token is and how to log in to it.</summary>
public sealed class Pkcs11Settings
{
    /// <summary>The PKCS#11 module, e.g. <c>/usr/lib/softhsm/libsofthsm2.so</c>.</summary>
    public required string LibraryPath { get; init; }
    /// <summary>The token's label.</summary>
    public required string TokenLabel { get; init; }
    /// <summary>The user PIN. Never logged.</summary>
    public required string Pin { get; init; }
    /// <summary>Master-key wrapper: label of the AES key that wraps the master key (created when absent).</summary>
    public string KeyLabel { get; init; } = "tpmprov-kms-master";

    public override string ToString() => $"pkcs11:{Path.GetFileName(LibraryPath)}/{TokenLabel}";
}

/// <summary>
/// Sessions on a PKCS#11 token. A module is loaded (C_Initialize) once per process and kept; calls are serialized, each in its
/// own logged-in session.
/// </summary>
public static class Pkcs11Token
{
    private static readonly Dictionary<string, IPkcs11Library> s_libraries = new(StringComparer.Ordinal);
    private static readonly object s_gate = new();

    static Pkcs11Token()
    {
        // Pkcs11Interop loads modules through "libdl", which current glibc ships only as libdl.so.2 (or inside libc).
        if (!OperatingSystem.IsLinux()) return;
        try
        {
            System.Runtime.InteropServices.NativeLibrary.SetDllImportResolver(typeof(Pkcs11InteropFactories).Assembly, (name, asm, path) =>
            {
                if (name != "libdl") return IntPtr.Zero;
                foreach (var candidate in new[] { "libdl.so.2", "libc.so.6", "libdl.so" })
                    if (System.Runtime.InteropServices.NativeLibrary.TryLoad(candidate, out var h)) return h;
                return IntPtr.Zero;
            });
        }
        catch (InvalidOperationException) { } // a resolver is already set for the assembly
    }

    /// <summary>The factories used to build attributes and mechanisms.</summary>
    public static Pkcs11InteropFactories Factories { get; } = new();

    /// <summary>Runs <paramref name="op"/> in a logged-in read-write session on the token.</summary>
    public static T Run<T>(Pkcs11Settings settings, Func<ISession, T> op)
    {
        ArgumentNullException.ThrowIfNull(settings);
        lock (s_gate)
        {
            var lib = Load(settings.LibraryPath);
            var slot = lib.GetSlotList(SlotsType.WithTokenPresent).FirstOrDefault(s => s.GetTokenInfo().Label.Trim() == settings.TokenLabel)
                ?? throw new KmsException(KmsErrorKind.Unavailable, null, $"No PKCS#11 token labelled '{settings.TokenLabel}' in {Path.GetFileName(settings.LibraryPath)}.");
            using var session = slot.OpenSession(SessionType.ReadWrite);
            try { session.Login(CKU.CKU_USER, settings.Pin); }
            catch (Pkcs11Exception ex) when (ex.RV == CKR.CKR_PIN_INCORRECT || ex.RV == CKR.CKR_PIN_LEN_RANGE)
            {
                throw new KmsException(KmsErrorKind.Unavailable, null, $"The PIN of PKCS#11 token '{settings.TokenLabel}' was refused.");
            }
            catch (Pkcs11Exception ex) when (ex.RV == CKR.CKR_USER_ALREADY_LOGGED_IN) { }
            try { return op(session); }
            finally { try { session.Logout(); } catch (Pkcs11Exception) { } }
        }
    }

    /// <summary>Runs <paramref name="op"/> on the module at <paramref name="libraryPath"/> (loaded once per process), serialized with every other call.</summary>
    public static T WithLibrary<T>(string libraryPath, Func<IPkcs11Library, T> op)
    {
        ArgumentNullException.ThrowIfNull(libraryPath);
        lock (s_gate) return op(Load(libraryPath));
    }

    private static IPkcs11Library Load(string libraryPath)
    {
        if (!s_libraries.TryGetValue(libraryPath, out var lib))
        {
            if (!File.Exists(libraryPath))
                throw new KmsException(KmsErrorKind.Unavailable, null, $"The PKCS#11 module '{libraryPath}' does not exist.");
            lib = Factories.Pkcs11LibraryFactory.LoadPkcs11Library(Factories, libraryPath, AppType.MultiThreaded);
            s_libraries[libraryPath] = lib;
        }
        return lib;
    }

    /// <summary>Secret-key objects with <paramref name="label"/> (CKA_LABEL), or with CKA_ID equal to the hex <paramref name="label"/>.</summary>
    public static IObjectHandle? FindSecretKey(ISession session, string label)
    {
        ArgumentNullException.ThrowIfNull(session);
        var f = Factories.ObjectAttributeFactory;
        var byLabel = session.FindAllObjects([f.Create(CKA.CKA_CLASS, CKO.CKO_SECRET_KEY), f.Create(CKA.CKA_LABEL, label)]);
        if (byLabel.Count > 0) return byLabel[0];
        if (label.Length % 2 == 0 && label.All(Uri.IsHexDigit))
        {
            var byId = session.FindAllObjects([f.Create(CKA.CKA_CLASS, CKO.CKO_SECRET_KEY), f.Create(CKA.CKA_ID, Convert.FromHexString(label))]);
            if (byId.Count > 0) return byId[0];
        }
        return null;
    }
}
