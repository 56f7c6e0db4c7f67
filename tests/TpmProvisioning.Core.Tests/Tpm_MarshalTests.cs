using TpmProvisioning.Tpm;

namespace TpmProvisioning.Tests;

public class MarshalTests
{
    [Fact]
    public void WriterIsBigEndianAndSizesAreBackfilled()
    {
        var w = new TpmWriter();
        w.U16(0x0102).U32(0x03040506).Sized16(x => x.U8(7).U8(8));
        Assert.Equal(new byte[] { 1, 2, 3, 4, 5, 6, 0, 2, 7, 8 }, w.ToArray());
    }

    [Fact]
    public void ReaderRejectsOverrunWithFormatError()
    {
        var data = new byte[] { 0x00, 0x05, 1, 2 };
        var ex = Assert.Throws<TpmFormatException>(() => { var r = new TpmReader(data, "TPM2B_DIGEST"); r.B2(); });
        Assert.Contains("TPM2B_DIGEST", ex.Message);
    }
}
