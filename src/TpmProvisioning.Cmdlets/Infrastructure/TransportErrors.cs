using System.Management.Automation;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;

namespace TpmProvisioning.Cmdlets;

/// <summary>What a remote call was made with: enough to say, after a failure, which side of the connection refused what.</summary>
internal sealed record TransportTarget(Uri Server, X509Certificate2? CaCertificate, bool SkipCertificateCheck, X509Certificate2? ClientCertificate);

/// <summary>
/// Classifies the failures of a remote call the same way for every cmdlet that talks to a server (registrar, verifier, KMS,
/// station, provisioning): the server's certificate not trusted (with its subject and thumbprint and the CA expected), the
/// client certificate refused, the credentials refused, or the server unreachable. Never .NET's "see inner exception".
/// </summary>
internal static class TransportErrors
{
    public const string ServerCertificateNotTrusted = nameof(ServerCertificateNotTrusted);
    public const string ClientCertificateRefused = nameof(ClientCertificateRefused);
    public const string CredentialsRefused = nameof(CredentialsRefused);
    public const string ServerUnreachable = nameof(ServerUnreachable);

    /// <summary>
    /// The error record for a transport failure of a call to <paramref name="to"/>, or null when <paramref name="ex"/> is not one
    /// (an HTTP answer, a TPM failure...). A TLS failure is told apart by a second, plain handshake with the server.
    /// </summary>
    public static ErrorRecord? Classify(Exception ex, TransportTarget? to, object? target)
    {
        if (ex is not (HttpRequestException or AuthenticationException or SocketException or IOException)) return null;
        if (ex is IOException && !HasInner<SocketException>(ex) && !HasInner<AuthenticationException>(ex)) return null;
        var where = to?.Server is { } s ? s.GetLeftPart(UriPartial.Authority) : "the server";
        var http = ex as HttpRequestException;
        if (http?.HttpRequestError is HttpRequestError.NameResolutionError or HttpRequestError.ConnectionError || (HasInner<SocketException>(ex) && !HasInner<AuthenticationException>(ex)))
            return Unreachable(ex, where, target);
        if (to is null || to.Server.Scheme != Uri.UriSchemeHttps)
            return Unreachable(ex, where, target);

        var probe = Probe(to);
        if (probe.ConnectError is not null) return Unreachable(probe.ConnectError, where, target);
        if (probe.ServerCertificate is { } cert && !to.SkipCertificateCheck && Untrusted(cert, probe.Errors, to.CaCertificate) is { } why)
        {
            var expected = to.CaCertificate is { } ca
                ? $"the CA given by -CaCertificate, '{ca.Subject}' (thumbprint {ca.Thumbprint})"
                : "a CA this machine trusts (give the server's CA with -CaCertificate)";
            return new ErrorRecord(new TransportSecurityException(
                    $"The server certificate of {where} is not trusted: '{cert.Subject}' (thumbprint {cert.Thumbprint}, issued by '{cert.Issuer}') {why}; expected a certificate from {expected}."),
                ServerCertificateNotTrusted, ErrorCategory.SecurityError, target);
        }
        if (probe.ServerCertificate is not null && probe.AfterHandshake is not null)
        {
            var given = to.ClientCertificate is { } c
                ? $"the client certificate '{c.Subject}' (thumbprint {c.Thumbprint}, issued by '{c.Issuer}')"
                : "the connection without a client certificate";
            return new ErrorRecord(new TransportSecurityException(
                    $"{where} refused {given} during the TLS handshake: give a client certificate issued by the server's components CA (New-ProvisioningClientCertificate) or by a CA it trusts."),
                ClientCertificateRefused, ErrorCategory.AuthenticationError, target);
        }
        return Unreachable(ex, where, target);
    }

    /// <summary>
    /// A server address a client can call: absolute http or https. Otherwise a terminating InvalidServerUri (InvalidArgument),
    /// not the InvalidOperationException .NET throws for a relative address such as <c>station01</c>.
    /// </summary>
    public static Uri RequireServerUri(PSCmdlet cmdlet, Uri? uri, string parameter)
    {
        if (uri is { IsAbsoluteUri: true } && (uri.Scheme == Uri.UriSchemeHttps || uri.Scheme == Uri.UriSchemeHttp) && uri.Host.Length > 0) return uri;
        cmdlet.ThrowTerminatingError(new ErrorRecord(
            new ArgumentException($"-{parameter} '{uri}' is not a server address: give it as https://host:port (for example https://{(uri is null || uri.IsAbsoluteUri ? "server" : uri.OriginalString)}:8443)."),
            "InvalidServerUri", ErrorCategory.InvalidArgument, uri));
        throw new InvalidOperationException("unreachable");
    }

    /// <summary>An HTTP status that says who was refused: 401 credentials (or a missing client certificate), a 403 of the client-certificate check.</summary>
    public static ErrorRecord? FromStatus(int status, string? message, Exception ex, TransportTarget? to, object? target)
    {
        var where = to?.Server is { } s ? s.GetLeftPart(UriPartial.Authority) : "the server";
        bool aboutCertificate = message?.Contains("Client certificate", StringComparison.OrdinalIgnoreCase) == true;
        if (status == 401 && !aboutCertificate)
            return new ErrorRecord(new TransportSecurityException($"{where} refused the credentials (401{(string.IsNullOrWhiteSpace(message) ? "" : ", " + message)}): check the user name and password or token.", ex), CredentialsRefused, ErrorCategory.AuthenticationError, target);
        if (status is 401 or 403 && aboutCertificate)
        {
            var given = to?.ClientCertificate is { } c ? $"the client certificate '{c.Subject}' (thumbprint {c.Thumbprint})" : "the call without a client certificate";
            return new ErrorRecord(new TransportSecurityException($"{where} refused {given} ({status}): {message}", ex), ClientCertificateRefused, ErrorCategory.AuthenticationError, target);
        }
        return null;
    }

    private static ErrorRecord Unreachable(Exception ex, string where, object? target)
    {
        var socket = Inner<SocketException>(ex);
        var why = socket is not null ? socket.Message : Inner<TimeoutException>(ex)?.Message ?? Deepest(ex).Message;
        return new ErrorRecord(new WebException($"{where} is unreachable: {why}"), ServerUnreachable, ErrorCategory.ConnectionError, target);
    }

    private static string? Untrusted(X509Certificate2 cert, SslPolicyErrors errors, X509Certificate2? ca)
    {
        if ((errors & SslPolicyErrors.RemoteCertificateNameMismatch) != 0) return "does not name the host called";
        using var chain = new X509Chain();
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.DisableCertificateDownloads = true;
        if (ca is not null)
        {
            chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
            chain.ChainPolicy.CustomTrustStore.Add(ca);
        }
        if (chain.Build(cert)) return null;
        var status = string.Join("; ", chain.ChainStatus.Select(x => x.StatusInformation.Trim()).Where(x => x.Length > 0).Distinct());
        return ca is null ? $"does not chain to a trusted root ({status})" : $"does not chain to the expected CA ({status})";
    }

    private sealed record ProbeResult(X509Certificate2? ServerCertificate, SslPolicyErrors Errors, Exception? ConnectError, Exception? AfterHandshake);

    /// <summary>A handshake of our own with the server, accepting any server certificate, presenting the same client certificate, then one request.</summary>
    private static ProbeResult Probe(TransportTarget to)
    {
        X509Certificate2? seen = null;
        var errors = SslPolicyErrors.None;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        using var tcp = new TcpClient();
        try { tcp.ConnectAsync(to.Server.Host, to.Server.Port, cts.Token).AsTask().GetAwaiter().GetResult(); }
        catch (Exception e) when (e is SocketException or OperationCanceledException or IOException) { return new ProbeResult(null, errors, e, null); }
        try
        {
            using var ssl = new SslStream(tcp.GetStream(), false);
            var options = new SslClientAuthenticationOptions
            {
                TargetHost = to.Server.IdnHost,
                RemoteCertificateValidationCallback = (_, c, _, e) =>
                {
                    if (c is not null) seen = X509CertificateLoader.LoadCertificate(c.GetRawCertData());
                    errors = e;
                    return true;
                },
                ApplicationProtocols = [SslApplicationProtocol.Http11],
            };
            if (to.ClientCertificate is { } cc) options.ClientCertificates = [cc];
            ssl.AuthenticateAsClientAsync(options, cts.Token).GetAwaiter().GetResult();
            // TLS 1.3: the server judges the client certificate after the client's handshake ends; its alert arrives with the answer.
            var request = System.Text.Encoding.ASCII.GetBytes($"GET /healthz HTTP/1.1\r\nHost: {to.Server.Authority}\r\nConnection: close\r\n\r\n");
            ssl.WriteAsync(request, cts.Token).AsTask().GetAwaiter().GetResult();
            var buffer = new byte[256];
            int n = ssl.ReadAsync(buffer, cts.Token).AsTask().GetAwaiter().GetResult();
            return new ProbeResult(seen, errors, null, n == 0 ? new IOException("The server closed the connection without an answer.") : null);
        }
        catch (Exception e) when (e is AuthenticationException or IOException or OperationCanceledException or SocketException)
        {
            return new ProbeResult(seen, errors, null, e);
        }
    }

    private static bool HasInner<T>(Exception ex) where T : Exception => Inner<T>(ex) is not null;

    private static T? Inner<T>(Exception? ex) where T : Exception
    {
        for (; ex is not null; ex = ex.InnerException)
            if (ex is T t) return t;
        return null;
    }

    private static Exception Deepest(Exception ex)
    {
        while (ex.InnerException is not null) ex = ex.InnerException;
        return ex;
    }
}

/// <summary>A TLS trust failure (the server's certificate, or our client certificate refused).</summary>
public sealed class TransportSecurityException(string message, Exception? inner = null) : Exception(message, inner);
