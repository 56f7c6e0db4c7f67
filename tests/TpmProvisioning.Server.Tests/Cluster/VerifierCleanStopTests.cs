using System.Text;
using TpmProvisioning.Attestation.Verifier;
using TpmProvisioning.Storage;
using TpmProvisioning.Tests.Fixtures;
using Xunit.Abstractions;

namespace TpmProvisioning.Tests.Cluster;

/// <summary>
/// A verifier node's clean stop on a shared (PostgreSQL) store while a quote is in flight: the agent's answer is judged and
/// stored before the node lets go (it is not thrown away, so the next holder does not ask again within the interval), the lease
/// goes back at once, and the node leaves the cluster view. The agent is a real software agent over TLS that takes 1.5 s to
/// answer, as a TPM quote can.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class VerifierCleanStopTests(PostgresFixture pg, ITestOutputHelper output)
{
    [SkippableFact]
    public async Task ACleanStopStoresTheQuoteInFlightAndGivesTheLeaseBack()
    {
        var db = await pg.CreateDatabaseAsync("cleanstop");
        await using var fleet = await SoftwareAgentFleet.StartAsync(1);
        fleet.AnswerDelay = TimeSpan.FromSeconds(1.5);
        using var store = await PostgresStore.OpenAsync(db);
        var settings = new VerifierSettings { VerifierId = "v1", QuoteInterval = TimeSpan.FromSeconds(3), LeaseDuration = TimeSpan.FromSeconds(30), RequestTimeout = TimeSpan.FromSeconds(30) };
        var verifier = new VerifierService(store, settings, new AgentConnector(null, settings.RequestTimeout), new RevocationNotifier([]), MeasurementChecks.Default)
        {
            Leases = new VerifierLeases(store, "v1", settings.QuoteInterval, settings.LeaseDuration.Value),
        };
        bool stopped = false;
        try
        {
            await verifier.ResumeAsync();
            var added = await verifier.AddAsync(fleet.AgentIds[0], Encoding.UTF8.GetBytes(fleet.AddBody(0)));
            Assert.True(added.Succeeded, $"{added.Status} {added.Message}");

            // The second quote request has reached the agent, which is still working on its answer.
            var until = DateTime.UtcNow + TimeSpan.FromSeconds(60);
            while (!(fleet.Requests(0) >= 2 && fleet.Quotes(0).Count == 1) && DateTime.UtcNow < until) await Task.Delay(20);
            Assert.True(fleet.Requests(0) >= 2 && fleet.Quotes(0).Count == 1, $"requests {fleet.Requests(0)}, answered {fleet.Quotes(0).Count}");
            Assert.Equal(1, (await store.GetVerifierAgentAsync(fleet.AgentIds[0]))!.AttestationCount);

            await verifier.ShutdownAsync(TimeSpan.FromSeconds(10));
            stopped = true;

            var record = (await store.GetVerifierAgentAsync(fleet.AgentIds[0]))!;
            output.WriteLine($"requests {fleet.Requests(0)}, answered {fleet.Quotes(0).Count}, stored verdicts {record.AttestationCount}, state {record.State}");
            Assert.Equal(2, fleet.Quotes(0).Count);        // the agent answered the quote in flight...
            Assert.Equal(2, record.AttestationCount);       // ...and its verdict was stored before the node let go
            Assert.Equal(2, fleet.Requests(0));             // nothing was asked after the stop began
            Assert.Equal(OperationalState.GetQuote, record.State);
            Assert.DoesNotContain(await store.ListVerifierNodesAsync(), n => n.VerifierId == "v1" && n.Heartbeat is not null);
            // The lease went back: another node claims the agent at once.
            Assert.True(await store.ClaimVerifierAgentAsync("v2", fleet.AgentIds[0], TimeSpan.FromSeconds(30)));
        }
        finally
        {
            if (!stopped) await verifier.DisposeAsync();
            if (verifier.Leases is { } l) await l.DisposeAsync();
        }
    }
}
