using System.Reflection;
using Microsoft.Data.Sqlite;
using TpmProvisioning.Pki;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Fixtures;

namespace TpmProvisioning.Tests.Provisioning;

/// <summary>A provisioning service over a real SQLite store and a real TPM CA in a scratch directory, trusting a software manufacturer.</summary>
public sealed class ProvisioningHarness : IAsyncDisposable
{
    public string Dir { get; } = Directory.CreateTempSubdirectory("tpmprov-svc-").FullName;
    public SqliteStore Store { get; private set; } = null!;
    public TpmCa Ca { get; private set; } = null!;
    public TestManufacturer Manufacturer { get; } = new();
    public ProvisioningService Service { get; private set; } = null!;
    public NewApiKey Key { get; private set; } = null!;
    public string DbPath => Path.Combine(Dir, "store.db");

    public static async Task<ProvisioningHarness> CreateAsync(Func<IStore, IStore>? wrapStore = null, ProvisioningSettings? settings = null, TpmCa? ca = null,
        EkTrustStore? trust = null)
    {
        var h = new ProvisioningHarness();
        h.Store = await SqliteStore.OpenAsync(h.DbPath);
        h.Ca = ca ?? TpmCa.Create(Path.Combine(h.Dir, "tpm-ca"));
        var store = wrapStore?.Invoke(h.Store) ?? h.Store;
        h.Service = new ProvisioningService(store, h.Ca, trust ?? new EkTrustStore([h.Manufacturer.Root], [h.Manufacturer.Issuer]), settings);
        h.Key = await new ApiKeyManager(h.Store).CreateAsync("plant-1", ["Contoso"], 0);
        return h;
    }

    /// <summary>A device of vendor Contoso with a fresh software EK and AK.</summary>
    public SoftwareDevice NewDevice(string serial = "SN-0001", string name = "sensor-01", bool eccAk = false) =>
        new(Manufacturer, new DeviceIdentity(name, serial, "Contoso", "1.0"), eccAk);

    /// <summary>Records, bindings and keys as text (audit excluded: every call adds one entry).</summary>
    public Task<string> SnapshotAsync() => Fixtures.ProvisioningSnapshot.TakeAsync(DbPath);

    public async ValueTask DisposeAsync()
    {
        Store?.Dispose();
        Ca?.Dispose();
        Manufacturer.Dispose();
        SqliteConnection.ClearAllPools();
        try { Directory.Delete(Dir, true); } catch (IOException) { }
        await Task.CompletedTask;
    }
}

/// <summary>An <see cref="IStore"/> that forwards to a real store but lets a test make chosen members throw.</summary>
public class FaultyStore : DispatchProxy
{
    public IStore Inner { get; set; } = null!;
    public Func<string, Exception?> Fault { get; set; } = _ => null;

    public static IStore Wrap(IStore inner, Func<string, Exception?> fault)
    {
        var p = Create<IStore, FaultyStore>();
        var f = (FaultyStore)(object)p;
        f.Inner = inner;
        f.Fault = fault;
        return p;
    }

    protected override object? Invoke(MethodInfo? targetMethod, object?[]? args)
    {
        if (Fault(targetMethod!.Name) is { } ex)
        {
            if (typeof(Task).IsAssignableFrom(targetMethod.ReturnType))
            {
                // Fail asynchronously, as a real store would.
                var t = targetMethod.ReturnType;
                if (t == typeof(Task)) return Task.FromException(ex);
                var m = typeof(Task).GetMethod(nameof(Task.FromException), 1, [typeof(Exception)])!.MakeGenericMethod(t.GetGenericArguments()[0]);
                return m.Invoke(null, [ex]);
            }
            throw ex;
        }
        try { return targetMethod.Invoke(Inner, args); }
        catch (TargetInvocationException tie) { throw tie.InnerException!; }
    }
}

/// <summary>A signer that never answers (a hung HSM).</summary>
public sealed class HangingSigner(ICertificateSigner inner) : ICertificateSigner
{
    public string Description => "hanging test signer";
    public byte[] SubjectPublicKeyInfo => inner.SubjectPublicKeyInfo;
    public byte[] SignatureAlgorithm => inner.SignatureAlgorithm;
    public Task<byte[]> SignAsync(ReadOnlyMemory<byte> data, CancellationToken ct = default) => new TaskCompletionSource<byte[]>().Task;
    public void Dispose() => inner.Dispose();
}

/// <summary>A clock the test moves.</summary>
public sealed class ManualTime : TimeProvider
{
    private long _ticks = 1_000_000;
    public override long TimestampFrequency => TimeSpan.TicksPerSecond;
    public override long GetTimestamp() => Interlocked.Read(ref _ticks);
    public void Advance(TimeSpan by) => Interlocked.Add(ref _ticks, by.Ticks);
}
