using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Http;
using TpmProvisioning.Pki;

namespace TpmProvisioning.Server.Hosting;

/// <summary>
/// Endpoint filter for routes that require mutual TLS: the client must present a certificate issued by the server-components
/// CA, with the clientAuth extended key usage and one of the <paramref name="allowed"/> roles (<see cref="ClientRoles"/>);
/// or by a trusted client CA (<see cref="ComponentCa.TrustClientCa"/>: a site's Keylime <c>cv_ca</c>), which grants its
/// configured roles; otherwise 401 (no certificate) or 403 (not trusted, not a client certificate, or a role that may not call the route). A
/// server's or an agent's certificate from the same CA is therefore never taken for the tenant.
/// </summary>
internal sealed class ClientCertificateFilter(ComponentCa ca, ClientRole allowed = ClientRole.Tenant) : IEndpointFilter
{
    public async ValueTask<object?> InvokeAsync(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var http = context.HttpContext;
        if (http.GetEndpoint()?.Metadata.GetMetadata<AllowWithoutClientCertificateAttribute>() is not null)
            return await next(context);
        X509Certificate2? cert = http.Connection.ClientCertificate ?? await http.Connection.GetClientCertificateAsync(http.RequestAborted);
        if (cert is null)
            return Results.Json(new { code = 401, status = "Client certificate required", results = new { } }, statusCode: 401);
        ClientRole roles;
        if (ca.Validates(cert)) roles = ClientRoles.Of(cert);
        else if ((roles = ca.TrustedClientRoles(cert)) == ClientRole.None)
            return Results.Json(new { code = 403, status = "Client certificate not trusted", results = new { } }, statusCode: 403);
        if (roles == ClientRole.None)
            return Results.Json(new { code = 403, status = "Client certificate not accepted: it is not a client certificate with a role (clientAuth extended key usage and a TpmProvisioning role); issue one with New-ProvisioningClientCertificate", results = new { } }, statusCode: 403);
        if ((roles & allowed) == ClientRole.None)
            return Results.Json(new { code = 403, status = $"Client certificate not accepted: its role ({ClientRoles.Describe(roles)}) may not call this route (needs {ClientRoles.Describe(allowed)})", results = new { } }, statusCode: 403);
        http.Items[ClientIdentityKey] = cert.Subject;
        return await next(context);
    }

    public const string ClientIdentityKey = "tpmprov.client";
}

/// <summary>
/// Endpoint metadata: this route of a mutual-TLS role is open without a client certificate (Keylime serves agent
/// registration, activation and <c>/version</c> to callers that have none).
/// </summary>
[AttributeUsage(AttributeTargets.Method | AttributeTargets.Class)]
internal sealed class AllowWithoutClientCertificateAttribute : Attribute
{
    public static AllowWithoutClientCertificateAttribute Instance { get; } = new();
}

/// <summary>
/// Endpoint metadata: this route also answers on the registrar's plain-HTTP port (Keylime's 8890). Every other route refuses
/// requests that arrive there.
/// </summary>
[AttributeUsage(AttributeTargets.Method | AttributeTargets.Class)]
internal sealed class ServedOnPlainPortAttribute : Attribute
{
    public static ServedOnPlainPortAttribute Instance { get; } = new();
    /// <summary>Connection item that marks connections accepted on the plain port.</summary>
    public const string ConnectionKey = "tpmprov.plain-registrar";
}
