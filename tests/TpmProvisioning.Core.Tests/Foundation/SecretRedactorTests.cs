namespace TpmProvisioning.Tests.Foundation;

public class SecretRedactorTests
{
    [Theory]
    [InlineData("api_key=abcdef123456", "abcdef123456")]
    [InlineData("{\"api_key\": \"k-123456789\"}", "k-123456789")]
    [InlineData("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9")]
    [InlineData("password: hunter22", "hunter22")]
    [InlineData("got key tpk_AbCdEf0123456789 from client", "AbCdEf0123456789")]
    [InlineData("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC")]
    [InlineData("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----", "MHcCAQEEIB")]
    public void SecretsAreMasked(string input, string secret)
    {
        var output = SecretRedactor.Redact(input);
        Assert.DoesNotContain(secret, output);
        Assert.Contains(SecretRedactor.Mask, output.Replace("REDACTED", SecretRedactor.Mask));
    }

    [Fact]
    public void OrdinaryTextIsUntouched()
    {
        const string s = "Server server1 started on https://127.0.0.1:8443 with roles Provisioning";
        Assert.Equal(s, SecretRedactor.Redact(s));
    }
}
