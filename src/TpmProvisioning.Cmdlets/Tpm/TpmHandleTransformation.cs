using System.Globalization;
using System.Management.Automation;

namespace TpmProvisioning.Cmdlets;

/// <summary>
/// Lets a TPM handle parameter take what admins type: <c>0x81000010</c> (which PowerShell parses as a negative Int32),
/// the string "0x81000010" or "81000010", or a plain number.
/// </summary>
public sealed class TpmHandleTransformationAttribute : ArgumentTransformationAttribute
{
    /// <inheritdoc />
    public override object? Transform(EngineIntrinsics engineIntrinsics, object? inputData)
    {
        var v = inputData is PSObject p ? p.BaseObject : inputData;
        return v switch
        {
            null => null,
            uint u => u,
            int i => unchecked((uint)i),
            long l when l >= int.MinValue && l <= uint.MaxValue => l < 0 ? unchecked((uint)(int)l) : (uint)l,
            string s => Parse(s),
            _ => v,
        };
    }

    private static object Parse(string s)
    {
        var t = s.Trim();
        if (t.StartsWith("0x", StringComparison.OrdinalIgnoreCase)) t = t[2..];
        else if (uint.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out var dec) && t.Length < 8) return dec;
        if (uint.TryParse(t, NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var hex)) return hex;
        // A handle exported as a number (2164260866) and read back as text from a CSV.
        if (!s.Trim().StartsWith("0x", StringComparison.OrdinalIgnoreCase) && uint.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out var big)) return big;
        throw new ArgumentTransformationMetadataException($"'{s}' is not a TPM handle; write it as 0x81000010.");
    }
}
