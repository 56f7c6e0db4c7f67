using System.Management.Automation;
using TpmProvisioning.Cmdlets;
using Xunit;

namespace TpmProvisioning.Cmdlets.Tests;

public class TpmCmdletHelperTests
{
    [Theory]
    [InlineData("0x408000", new[] { 15, 22 })]
    [InlineData("408001", new[] { 0, 15, 22 })]
    [InlineData("0XFFFFFF", new[] { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23 })]
    [InlineData("0x80000000", new[] { 31 })]
    public void PcrMaskParsesKeylimeStyleMasks(string mask, int[] expected) =>
        Assert.Equal(expected, TpmCmdletBase.ParsePcrMask(mask));

    [Theory]
    [InlineData("")]
    [InlineData("0x")]
    [InlineData("0x0")]
    [InlineData("zz")]
    [InlineData("0x100000000")]
    [InlineData("-1")]
    public void PcrMaskRejectsNonsense(string mask) =>
        Assert.Throws<ArgumentException>(() => TpmCmdletBase.ParsePcrMask(mask));

    [Theory]
    [InlineData(unchecked((int)0x81000010), 0x81000010u)]
    [InlineData("0x81000010", 0x81000010u)]
    [InlineData("81000010", 0x81000010u)]
    [InlineData(0x10, 0x10u)]
    [InlineData("16", 16u)]
    [InlineData("2164260866", 0x81000002u)] // a handle exported as a number and read back from a CSV
    [InlineData("0x81000002", 0x81000002u)] // as output objects write it
    public void HandleTransformationTakesWhatAdminsType(object input, uint expected) =>
        Assert.Equal(expected, new TpmHandleTransformationAttribute().Transform(null!, input));

    [Fact]
    public void HandleTransformationRejectsText() =>
        Assert.Throws<ArgumentTransformationMetadataException>(() => new TpmHandleTransformationAttribute().Transform(null!, "not-a-handle"));

    [Fact]
    public void AkReaderTakesTpm2bSpkiAndPem()
    {
        using var ak = TpmProvisioning.Tpm.SoftwareAttestationKey.CreateRsa();
        var pub = ak.Public;
        var fromTpm2b = AkPublicReader.FromBytes(pub.ToTpm2B());
        Assert.Equal(pub.ComputeName(), fromTpm2b.ComputeName());
        var fromSpki = AkPublicReader.FromBytes(pub.ToSubjectPublicKeyInfo());
        Assert.Equal(pub.Modulus, fromSpki.Modulus);
        var pem = System.Security.Cryptography.PemEncoding.WriteString("PUBLIC KEY", pub.ToSubjectPublicKeyInfo());
        Assert.Equal(pub.Modulus, AkPublicReader.Read(pem, null).Modulus);
        Assert.Throws<ArgumentException>(() => AkPublicReader.Read("%%%", null));
    }
}
