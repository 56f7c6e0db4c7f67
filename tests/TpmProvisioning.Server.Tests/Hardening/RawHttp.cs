using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace TpmProvisioning.Tests.Hardening;

/// <summary>Raw HTTP/1.1 over TLS (or plain TCP), for requests HttpClient will not send: malformed chunk sizes and such.</summary>
internal static class RawHttp
{
    /// <summary>A response as read off the wire: status code, headers (lower-case names) and body text.</summary>
    public sealed record Response(int Status, IReadOnlyDictionary<string, string> Headers, string Body);

    /// <summary>
    /// Sends <paramref name="request"/> (headers and body, as bytes) to <paramref name="url"/> and reads the answer until the
    /// server closes or the declared length is read. TLS when the URL is https, with <paramref name="clientCert"/> if given.
    /// </summary>
    public static async Task<Response> SendAsync(string url, string request, X509Certificate2? clientCert = null)
    {
        var uri = new Uri(url);
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, uri.Port);
        Stream stream = tcp.GetStream();
        SslStream? ssl = null;
        if (uri.Scheme == "https")
        {
            ssl = new SslStream(stream, false, (_, _, _, _) => true);
            await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
            {
                TargetHost = "localhost",
                ApplicationProtocols = [SslApplicationProtocol.Http11],
                ClientCertificates = clientCert is null ? null : new X509CertificateCollection { clientCert },
                LocalCertificateSelectionCallback = clientCert is null ? null : (_, _, _, _, _) => clientCert,
            });
            stream = ssl;
        }
        try
        {
            await stream.WriteAsync(Encoding.ASCII.GetBytes(request));
            await stream.FlushAsync();
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            var buf = new MemoryStream();
            var chunk = new byte[8192];
            while (true)
            {
                int n;
                try { n = await stream.ReadAsync(chunk, cts.Token); }
                catch (IOException) { break; }
                if (n == 0) break;
                buf.Write(chunk, 0, n);
                if (TryParse(buf.ToArray()) is { } done) return done;
            }
            return TryParse(buf.ToArray(), final: true) ?? throw new IOException("no HTTP response: " + Encoding.ASCII.GetString(buf.ToArray()));
        }
        finally
        {
            ssl?.Dispose();
        }
    }

    private static Response? TryParse(byte[] data, bool final = false)
    {
        var text = Encoding.UTF8.GetString(data);
        int end = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        if (end < 0) return null;
        var lines = text[..end].Split("\r\n");
        var status = int.Parse(lines[0].Split(' ')[1]);
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var l in lines.Skip(1))
        {
            int c = l.IndexOf(':');
            if (c > 0) headers[l[..c].Trim()] = l[(c + 1)..].Trim();
        }
        var body = text[(end + 4)..];
        if (headers.TryGetValue("content-length", out var len))
        {
            int want = int.Parse(len);
            if (Encoding.UTF8.GetByteCount(body) < want) return final ? new Response(status, headers, body) : null;
            return new Response(status, headers, body);
        }
        if (headers.TryGetValue("transfer-encoding", out var te) && te.Contains("chunked", StringComparison.OrdinalIgnoreCase))
        {
            if (!body.EndsWith("0\r\n\r\n", StringComparison.Ordinal) && !final) return null;
            return new Response(status, headers, Dechunk(body));
        }
        return final ? new Response(status, headers, body) : null;
    }

    private static string Dechunk(string body)
    {
        var sb = new StringBuilder();
        int i = 0;
        while (i < body.Length)
        {
            int nl = body.IndexOf("\r\n", i, StringComparison.Ordinal);
            if (nl < 0) break;
            int size = Convert.ToInt32(body[i..nl].Split(';')[0].Trim(), 16);
            if (size == 0) break;
            sb.Append(body, nl + 2, Math.Min(size, body.Length - nl - 2));
            i = nl + 2 + size + 2;
        }
        return sb.ToString();
    }

    /// <summary>A POST (or other method) whose chunked body starts with a chunk size that overflows any integer.</summary>
    public static string OverflowingChunk(string method, string path, string? extraHeaders = null) =>
        $"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{extraHeaders}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n{{}}\r\n0\r\n\r\n";
}
