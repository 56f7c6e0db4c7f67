using System.Security.Cryptography.X509Certificates;
using TpmProvisioning.Attestation;
using TpmProvisioning.Hosting;
using TpmProvisioning.Provisioning;
using TpmProvisioning.Station;
using TpmProvisioning.Tests.Fixtures;
using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests.Station;

/// <summary>
/// After provisioning, the device registers with the registrar of the same server (its EK certificate, a fresh AK, the
/// credential activated on swtpm): the station appends REGISTERED once, logs the agent id, and lists it in the records.
/// </summary>
public sealed class StationRegistrationTests : IClassFixture<SwtpmFixture>
{
    private readonly SwtpmFixture _tpm;

    public StationRegistrationTests(SwtpmFixture tpm) => _tpm = tpm;

    [Fact]
    public async Task ARegisteredDeviceBecomesRegisteredOnce()
    {
        var root = X509Certificate2.CreateFromPem(File.ReadAllText(_tpm.Swtpm.ManufacturerRootPath));
        var issuer = X509Certificate2.CreateFromPem(File.ReadAllText(_tpm.Swtpm.ManufacturerIssuerPath));
        await using var s = await StationTestServer.StartAsync(root, issuer, o =>
        {
            o.Roles |= ServerRole.Registrar;
            o.Station.WatchInterval = TimeSpan.FromMilliseconds(200);
        });
        try
        {
            using (var client = new ProvisioningClient(new ProvisioningClientOptions { Server = new Uri(s.Url), CaCertificate = s.ServerCa }))
            using (var dev = _tpm.Open())
                await client.ProvisionAsync(dev, new DeviceIdentity("door-controller", "REG-0001", "Contoso", "1"), s.Key.Key,
                    new DeviceProvisioningOptions { TpmCaCertificate = s.TpmCa, ReplaceAkHandle = true });

            string agentId = Guid.NewGuid().ToString();
            using (var registrar = new RegistrarClient(new RegistrarClientOptions { Registrar = new Uri(s.Url), CaCertificate = s.ServerCa }))
            using (var dev = _tpm.Open())
            {
                var ek = dev.CreateEk(EkKind.Rsa2048);
                var ak = dev.CreateAk().Key;
                var keys = new AgentTpmKeys
                {
                    EkHandle = ek.Handle, AkHandle = ak.Handle, EkPublic = ek.Public.ToTpm2B(), AkPublic = ak.Public.ToTpm2B(),
                    EkCertificate = dev.ReadEkCertificateDer(EkKind.Rsa2048),
                };
                await registrar.RegisterAndActivateAsync(dev, keys, new AgentIdentity { AgentId = agentId, Ip = "127.0.0.1", Port = 9002, MtlsCertificatePem = "disabled" });
            }

            // The watch loop runs on its own: wait (without a timing assert) for the state to appear.
            var deadline = DateTime.UtcNow.AddMinutes(2);
            List<string?> states;
            do
            {
                await Task.Delay(100);
                states = StationTestServer.Json((await s.GetAsync("/devices/REG-0001")).Body).GetProperty("history").EnumerateArray()
                    .Select(h => h.GetProperty("state").GetString()).ToList();
            } while (!states.Contains(DeviceStates.Registered) && DateTime.UtcNow < deadline);
            Assert.Equal(DeviceStates.Registered, states[^1]);

            // Further rounds change nothing: REGISTERED is appended once.
            var before = await s.SnapshotAsync();
            var waitUntil = DateTime.UtcNow.AddMinutes(1);
            var services = StationTestServer.Json((await s.GetAsync("/api/v2/services")).Body).GetProperty("services").EnumerateArray()
                .Single(x => x.GetProperty("name").GetString() == "registration-watch");
            long start = services.GetProperty("counters").GetProperty("rounds").GetInt64();
            long now;
            do
            {
                await Task.Delay(100);
                now = StationTestServer.Json((await s.GetAsync("/api/v2/services")).Body).GetProperty("services").EnumerateArray()
                    .Single(x => x.GetProperty("name").GetString() == "registration-watch").GetProperty("counters").GetProperty("rounds").GetInt64();
            } while (now < start + 2 && DateTime.UtcNow < waitUntil);
            Assert.True(now >= start + 2, "the watch loop kept running");
            Assert.Equal(before, await s.SnapshotAsync());

            var detail = StationTestServer.Json((await s.GetAsync("/devices/REG-0001")).Body);
            Assert.Equal(agentId, detail.GetProperty("agent_id").GetString());
            Assert.Equal(agentId, StationTestServer.Json((await s.GetAsync("/api/v2/manufacturing")).Body)[0].GetProperty("agent_id").GetString());
            Assert.Contains($"registered with the registrar as agent {agentId}", (await s.GetAsync("/devices/REG-0001/log/provisioner")).Body);
        }
        finally
        {
            _tpm.FlushTransients();
            _tpm.EvictPersistent(0x81000002, 0x8100FFFF);
        }
    }
}
