namespace TpmProvisioning.Tpm;

/// <summary>Which layout a TPM_RC uses (TPM 2.0 Part 2, 6.6).</summary>
public enum TpmRcFormat
{
    /// <summary>Success (TPM_RC_SUCCESS).</summary>
    Success,
    /// <summary>Format zero: a TPM 2.0 error or warning not tied to a handle, parameter or session.</summary>
    Format0,
    /// <summary>Format one: an error tied to a handle, parameter or session number.</summary>
    Format1,
    /// <summary>A TPM 1.2 code (bit 8 clear in format zero).</summary>
    Tpm12,
    /// <summary>A vendor-defined format-zero code.</summary>
    Vendor,
}

/// <summary>A decoded TPM_RC: its name, description, and the handle, parameter or session it points at.</summary>
public sealed record TpmResponseCode
{
    /// <summary>The raw code.</summary>
    public required uint Code { get; init; }
    /// <summary>Format of the code.</summary>
    public required TpmRcFormat Format { get; init; }
    /// <summary>The TCG name with the base removed from the number, e.g. <c>TPM_RC_VALUE</c> for 0x1C4.</summary>
    public required string Name { get; init; }
    /// <summary>A short description of what the code means.</summary>
    public required string Description { get; init; }
    /// <summary>True for warnings (format zero, severity bit set), e.g. TPM_RC_RETRY.</summary>
    public bool IsWarning { get; init; }
    /// <summary>1-based parameter number for a format-one parameter error.</summary>
    public int? Parameter { get; init; }
    /// <summary>1-based handle number for a format-one handle error.</summary>
    public int? Handle { get; init; }
    /// <summary>1-based session number for a format-one session error.</summary>
    public int? Session { get; init; }

    /// <summary>The base code with the handle/parameter/session number removed (e.g. 0x084 for any TPM_RC_VALUE).</summary>
    public uint BaseCode => Format == TpmRcFormat.Format1 ? 0x080u | (Code & 0x3F) : Code;

    /// <summary>Where the error points, e.g. "parameter 1", "handle 2", "session 1", or empty.</summary>
    public string Location => Parameter is int p ? $"parameter {p}" : Handle is int h ? $"handle {h}" : Session is int s ? $"session {s}" : "";

    /// <inheritdoc />
    public override string ToString()
    {
        string fmt = Format switch { TpmRcFormat.Format0 => "format 0", TpmRcFormat.Format1 => "format 1", TpmRcFormat.Tpm12 => "TPM 1.2", TpmRcFormat.Vendor => "vendor", _ => "success" };
        string loc = Location.Length > 0 ? $", {Location}" : "";
        return $"{Name} (0x{Code:X3}, {fmt}{loc}): {Description}";
    }

    /// <summary>Decodes <paramref name="rc"/>.</summary>
    public static TpmResponseCode Decode(uint rc)
    {
        if (rc == 0) return new TpmResponseCode { Code = 0, Format = TpmRcFormat.Success, Name = "TPM_RC_SUCCESS", Description = "success" };
        if ((rc & 0xFFFF0000) != 0)
        {
            uint layer = rc >> 16;
            return new TpmResponseCode { Code = rc, Format = TpmRcFormat.Vendor, Name = $"layer {layer} code 0x{rc & 0xFFFF:X}", Description = "an error from a software layer, not the TPM" };
        }
        if ((rc & 0x80) != 0)
        {
            uint e = rc & 0x3F;
            int n = (int)((rc >> 8) & 0xF);
            var (name, desc) = Fmt1.TryGetValue(e, out var v) ? v : ($"TPM_RC_FMT1+0x{e:X2}", "unknown format-one error");
            int? p = null, h = null, s = null;
            if ((rc & 0x40) != 0) p = n;
            else if ((n & 0x8) != 0) s = n & 0x7;
            else if (n != 0) h = n;
            return new TpmResponseCode { Code = rc, Format = TpmRcFormat.Format1, Name = name, Description = desc, Parameter = p, Handle = h, Session = s };
        }
        if ((rc & 0x100) == 0)
            return new TpmResponseCode { Code = rc, Format = TpmRcFormat.Tpm12, Name = $"TPM 1.2 code 0x{rc:X}", Description = "a TPM 1.2 response code" };
        if ((rc & 0x400) != 0)
            return new TpmResponseCode { Code = rc, Format = TpmRcFormat.Vendor, Name = $"TPM vendor code 0x{rc:X}", Description = "a vendor-specific response code" };
        uint e0 = rc & 0x7F;
        bool warn = (rc & 0x800) != 0;
        var table = warn ? Warn : Ver1;
        var (n0, d0) = table.TryGetValue(e0, out var v0) ? v0 : (warn ? $"TPM_RC_WARN+0x{e0:X2}" : $"TPM_RC_VER1+0x{e0:X2}", "unknown format-zero code");
        return new TpmResponseCode { Code = rc, Format = TpmRcFormat.Format0, Name = n0, Description = d0, IsWarning = warn };
    }

    private static readonly Dictionary<uint, (string, string)> Fmt1 = new()
    {
        [0x01] = ("TPM_RC_ASYMMETRIC", "asymmetric algorithm not supported or not correct"),
        [0x02] = ("TPM_RC_ATTRIBUTES", "inconsistent attributes"),
        [0x03] = ("TPM_RC_HASH", "hash algorithm not supported or not appropriate"),
        [0x04] = ("TPM_RC_VALUE", "value is out of range or is not correct for the context"),
        [0x05] = ("TPM_RC_HIERARCHY", "hierarchy is not enabled or is not correct for the use"),
        [0x07] = ("TPM_RC_KEY_SIZE", "key size is not supported"),
        [0x08] = ("TPM_RC_MGF", "mask generation function not supported"),
        [0x09] = ("TPM_RC_MODE", "mode of operation not supported"),
        [0x0A] = ("TPM_RC_TYPE", "the type of the value is not appropriate for the use"),
        [0x0B] = ("TPM_RC_HANDLE", "the handle is not correct for the use"),
        [0x0C] = ("TPM_RC_KDF", "unsupported key derivation function or function not appropriate for use"),
        [0x0D] = ("TPM_RC_RANGE", "value was out of allowed range"),
        [0x0E] = ("TPM_RC_AUTH_FAIL", "the authorization HMAC check failed and DA counter incremented"),
        [0x0F] = ("TPM_RC_NONCE", "invalid nonce size or nonce value mismatch"),
        [0x10] = ("TPM_RC_PP", "authorization requires assertion of physical presence"),
        [0x12] = ("TPM_RC_SCHEME", "unsupported or incompatible scheme"),
        [0x15] = ("TPM_RC_SIZE", "structure is the wrong size"),
        [0x16] = ("TPM_RC_SYMMETRIC", "unsupported symmetric algorithm or key size, or not appropriate for instance"),
        [0x17] = ("TPM_RC_TAG", "incorrect structure tag"),
        [0x18] = ("TPM_RC_SELECTOR", "union selector is incorrect"),
        [0x1A] = ("TPM_RC_INSUFFICIENT", "the TPM was unable to unmarshal a value because there were not enough octets in the input buffer"),
        [0x1B] = ("TPM_RC_SIGNATURE", "the signature is not valid"),
        [0x1C] = ("TPM_RC_KEY", "key fields are not compatible with the selected use"),
        [0x1D] = ("TPM_RC_POLICY_FAIL", "a policy check failed"),
        [0x1F] = ("TPM_RC_INTEGRITY", "integrity check failed"),
        [0x20] = ("TPM_RC_TICKET", "invalid ticket"),
        [0x21] = ("TPM_RC_RESERVED_BITS", "reserved bits not set to zero as required"),
        [0x22] = ("TPM_RC_BAD_AUTH", "authorization failure without DA implications"),
        [0x23] = ("TPM_RC_EXPIRED", "the policy has expired"),
        [0x24] = ("TPM_RC_POLICY_CC", "the commandCode in the policy is not the commandCode of the command or the command code in a policy command references a command that is not implemented"),
        [0x25] = ("TPM_RC_BINDING", "public and sensitive portions of an object are not cryptographically bound"),
        [0x26] = ("TPM_RC_CURVE", "curve not supported"),
        [0x27] = ("TPM_RC_ECC_POINT", "point is not on the required curve"),
    };

    private static readonly Dictionary<uint, (string, string)> Ver1 = new()
    {
        [0x00] = ("TPM_RC_INITIALIZE", "TPM not initialized by TPM2_Startup or already initialized"),
        [0x01] = ("TPM_RC_FAILURE", "commands not being accepted because of a TPM failure"),
        [0x03] = ("TPM_RC_SEQUENCE", "improper use of a sequence handle"),
        [0x0B] = ("TPM_RC_PRIVATE", "not currently used"),
        [0x19] = ("TPM_RC_HMAC", "not currently used"),
        [0x20] = ("TPM_RC_DISABLED", "the command is disabled"),
        [0x21] = ("TPM_RC_EXCLUSIVE", "command failed because audit sequence required exclusivity"),
        [0x24] = ("TPM_RC_AUTH_TYPE", "authorization handle is not correct for command"),
        [0x25] = ("TPM_RC_AUTH_MISSING", "command requires an authorization session for handle and it is not present"),
        [0x26] = ("TPM_RC_POLICY", "policy failure in math operation or an invalid authPolicy value"),
        [0x27] = ("TPM_RC_PCR", "PCR check fail"),
        [0x28] = ("TPM_RC_PCR_CHANGED", "PCR have changed since checked"),
        [0x2D] = ("TPM_RC_UPGRADE", "the TPM is in field upgrade mode"),
        [0x2E] = ("TPM_RC_TOO_MANY_CONTEXTS", "context ID counter is at maximum"),
        [0x2F] = ("TPM_RC_AUTH_UNAVAILABLE", "authValue or authPolicy is not available for selected entity"),
        [0x30] = ("TPM_RC_REBOOT", "a _TPM_Init and Startup(CLEAR) is required before the TPM can resume operation"),
        [0x31] = ("TPM_RC_UNBALANCED", "the protection algorithms (hash and symmetric) are not reasonably balanced"),
        [0x42] = ("TPM_RC_COMMAND_SIZE", "command commandSize value is inconsistent with contents of the command buffer"),
        [0x43] = ("TPM_RC_COMMAND_CODE", "command code not supported"),
        [0x44] = ("TPM_RC_AUTHSIZE", "the value of authorizationSize is out of range or the number of octets in the Authorization Area is greater than required"),
        [0x45] = ("TPM_RC_AUTH_CONTEXT", "use of an authorization session with a context command or another command that cannot have an authorization session"),
        [0x46] = ("TPM_RC_NV_RANGE", "NV offset+size is out of range"),
        [0x47] = ("TPM_RC_NV_SIZE", "requested allocation size is larger than allowed"),
        [0x48] = ("TPM_RC_NV_LOCKED", "NV access locked"),
        [0x49] = ("TPM_RC_NV_AUTHORIZATION", "NV access authorization fails in command actions"),
        [0x4A] = ("TPM_RC_NV_UNINITIALIZED", "an NV Index is used before being initialized or the state saved by TPM2_Shutdown(STATE) could not be restored"),
        [0x4B] = ("TPM_RC_NV_SPACE", "insufficient space for NV allocation"),
        [0x4C] = ("TPM_RC_NV_DEFINED", "NV Index or persistent object already defined"),
        [0x50] = ("TPM_RC_BAD_CONTEXT", "context in TPM2_ContextLoad is not valid"),
        [0x51] = ("TPM_RC_CPHASH", "cpHash value already set or not correct for use"),
        [0x52] = ("TPM_RC_PARENT", "handle for parent is not a valid parent"),
        [0x53] = ("TPM_RC_NEEDS_TEST", "some function needs testing"),
        [0x54] = ("TPM_RC_NO_RESULT", "returned when an internal function cannot process a request due to an unspecified problem"),
        [0x55] = ("TPM_RC_SENSITIVE", "the sensitive area did not unmarshal correctly after decryption"),
    };

    private static readonly Dictionary<uint, (string, string)> Warn = new()
    {
        [0x01] = ("TPM_RC_CONTEXT_GAP", "gap for context ID is too large"),
        [0x02] = ("TPM_RC_OBJECT_MEMORY", "out of memory for object contexts (flush transient objects)"),
        [0x03] = ("TPM_RC_SESSION_MEMORY", "out of memory for session contexts"),
        [0x04] = ("TPM_RC_MEMORY", "out of shared object/session memory or need space for internal operations"),
        [0x05] = ("TPM_RC_SESSION_HANDLES", "out of session handles"),
        [0x06] = ("TPM_RC_OBJECT_HANDLES", "out of object handles"),
        [0x07] = ("TPM_RC_LOCALITY", "bad locality"),
        [0x08] = ("TPM_RC_YIELDED", "the TPM has suspended operation on the command; retry"),
        [0x09] = ("TPM_RC_CANCELED", "the command was canceled"),
        [0x0A] = ("TPM_RC_TESTING", "TPM is performing self-tests"),
        [0x10] = ("TPM_RC_REFERENCE_H0", "the 1st handle in the handle area references a transient object or session that is not loaded"),
        [0x11] = ("TPM_RC_REFERENCE_H1", "the 2nd handle in the handle area references a transient object or session that is not loaded"),
        [0x12] = ("TPM_RC_REFERENCE_H2", "the 3rd handle in the handle area references a transient object or session that is not loaded"),
        [0x13] = ("TPM_RC_REFERENCE_H3", "the 4th handle in the handle area references a transient object or session that is not loaded"),
        [0x14] = ("TPM_RC_REFERENCE_H4", "the 5th handle in the handle area references a transient object or session that is not loaded"),
        [0x15] = ("TPM_RC_REFERENCE_H5", "the 6th handle in the handle area references a transient object or session that is not loaded"),
        [0x16] = ("TPM_RC_REFERENCE_H6", "the 7th handle in the handle area references a transient object or session that is not loaded"),
        [0x18] = ("TPM_RC_REFERENCE_S0", "the 1st authorization session handle references a session that is not loaded"),
        [0x19] = ("TPM_RC_REFERENCE_S1", "the 2nd authorization session handle references a session that is not loaded"),
        [0x1A] = ("TPM_RC_REFERENCE_S2", "the 3rd authorization session handle references a session that is not loaded"),
        [0x1B] = ("TPM_RC_REFERENCE_S3", "the 4th authorization session handle references a session that is not loaded"),
        [0x1C] = ("TPM_RC_REFERENCE_S4", "the 5th authorization session handle references a session that is not loaded"),
        [0x1D] = ("TPM_RC_REFERENCE_S5", "the 6th authorization session handle references a session that is not loaded"),
        [0x1E] = ("TPM_RC_REFERENCE_S6", "the 7th authorization session handle references a session that is not loaded"),
        [0x20] = ("TPM_RC_NV_RATE", "the TPM is rate-limiting accesses to prevent wearout of NV"),
        [0x21] = ("TPM_RC_LOCKOUT", "authorizations for objects subject to DA protection are not allowed at this time because the TPM is in DA lockout mode"),
        [0x22] = ("TPM_RC_RETRY", "the TPM was not able to start the command; retry"),
        [0x23] = ("TPM_RC_NV_UNAVAILABLE", "the command may require writing of NV and NV is not current accessible"),
    };
}

/// <summary>A TPM command failed: which command, the raw response code, and its decoding.</summary>
public sealed class TpmException : Exception
{
    /// <summary>The command that failed.</summary>
    public TpmCc Command { get; }

    /// <summary>The raw TPM_RC.</summary>
    public uint ResponseCode { get; }

    /// <summary>The decoded response code.</summary>
    public TpmResponseCode Decoded { get; }

    /// <summary>Creates the exception; the message names the command, the error and where it points.</summary>
    public TpmException(TpmCc command, uint responseCode, string? context = null)
        : base(BuildMessage(command, responseCode, context))
    {
        Command = command;
        ResponseCode = responseCode;
        Decoded = TpmResponseCode.Decode(responseCode);
    }

    private static string BuildMessage(TpmCc command, uint rc, string? context)
    {
        var d = TpmResponseCode.Decode(rc);
        string cc = Enum.IsDefined(command) ? $"TPM2_{command}" : $"TPM command 0x{(uint)command:X8}";
        return $"{cc} failed: {d}{(context is null ? "" : " — " + context)}";
    }
}
