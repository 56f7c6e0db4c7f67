using System.Net;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using TpmProvisioning.Attestation.Verifier;

namespace TpmProvisioning.Tests.Keylime;

/// <summary>
/// A hostile agent that answers a quote request with more than <see cref="AgentConnector.MaxAnswerBytes"/> (streamed, no length
/// announced) gets no answer read, rather than the verifier buffering it; an answer of a legitimate size (a long IMA log) is read.
/// The agent stand-in is a real Kestrel on loopback.
/// </summary>
public sealed class AgentAnswerLimitTests : IAsyncLifetime
{
    private WebApplication _agent = null!;
    private int _port;

    public async Task InitializeAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
        _agent = builder.Build();
        // /v2.1: padding of 'size' bytes of JSON whitespace before a valid envelope, written in 1 MiB chunks.
        _agent.MapGet("/v2.1/quotes/integrity", async (HttpContext ctx) =>
        {
            long size = long.Parse(ctx.Request.Query["nonce"].ToString()[1..]);
            var chunk = Encoding.ASCII.GetBytes(new string(' ', 1024 * 1024));
            ctx.Response.ContentType = "application/json";
            for (long left = size; left > 0; left -= chunk.Length)
                await ctx.Response.Body.WriteAsync(chunk.AsMemory(0, (int)Math.Min(chunk.Length, left)), ctx.RequestAborted);
            await ctx.Response.WriteAsync("""{"code":200,"status":"Success","results":{"quote":"r"}}""", ctx.RequestAborted);
        });
        await _agent.StartAsync();
        _port = new Uri(_agent.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()).Port;
    }

    public async Task DisposeAsync()
    {
        await _agent.StopAsync();
        await _agent.DisposeAsync();
    }

    private async Task<AgentCallResult> AskAsync(long padding)
    {
        using var connector = new AgentConnector(null, TimeSpan.FromSeconds(60));
        var config = new VerifierAgentConfig { Ip = "127.0.0.1", Port = _port };
        return await connector.GetIntegrityQuoteAsync(config, "n" + padding, 1u << 16, partial: true, 0, default);
    }

    [Fact]
    public async Task AnAnswerOfALegitimateSizeIsRead()
    {
        var r = await AskAsync(8L * 1024 * 1024);
        Assert.True(r.Status == AgentCallStatus.Ok, r.Message);
        Assert.Equal("r", r.Results.GetProperty("quote").GetString());
    }

    [Fact]
    public async Task AnAnswerOverTheLimitIsNotBuffered()
    {
        var r = await AskAsync(AgentConnector.MaxAnswerBytes + 1024L * 1024);
        Assert.NotEqual(AgentCallStatus.Ok, r.Status);
        Assert.Equal(default, r.Results.ValueKind);
    }
}
