using System.Collections.Concurrent;
using System.Management.Automation;
using TpmProvisioning.Tpm.Simulator;

namespace TpmProvisioning.Cmdlets
{
    /// <summary>A software TPM (swtpm) started by Start-TpmSimulator in this process.</summary>
    public sealed class TpmSimulator
    {
        internal TpmSimulator(int id, string name, SwtpmInstance instance)
        {
            Id = id;
            Name = name;
            Instance = instance;
            StartTime = DateTimeOffset.Now;
        }

        internal SwtpmInstance Instance { get; }
        /// <summary>Session-unique id.</summary>
        public int Id { get; }
        /// <summary>Name given at start.</summary>
        public string Name { get; }
        /// <summary>Connection string for -Tpm and for tpm2-tools' TPM2TOOLS_TCTI.</summary>
        public string ConnectionString => Instance.ConnectionString;
        /// <summary>TPM command port on 127.0.0.1.</summary>
        public int Port => Instance.Port;
        /// <summary>swtpm control port (Port + 1).</summary>
        public int ControlPort => Instance.ControlPort;
        /// <summary>Process id of swtpm.</summary>
        public int Pid => Instance.Pid;
        /// <summary>The simulator's state directory (deleted when it stops).</summary>
        public string StateDirectory => Instance.StateDirectory;
        /// <summary>PEM of the local CA root that signed the simulator's EK certificates (the "manufacturer" root).</summary>
        public string ManufacturerRootPath => Instance.ManufacturerRootPath;
        /// <summary>PEM of the local CA's issuing certificate.</summary>
        public string ManufacturerIssuerPath => Instance.ManufacturerIssuerPath;
        /// <summary>When it started.</summary>
        public DateTimeOffset StartTime { get; }
        /// <summary>Running or Stopped.</summary>
        public string State { get; internal set; } = "Running";
        /// <inheritdoc />
        public override string ToString() => $"{Name} ({ConnectionString})";
    }
}

namespace TpmProvisioning.Cmdlets
{

    /// <summary>The simulators of this process; all are stopped when the process exits.</summary>
    internal static class SimulatorRegistry
    {
        private static readonly ConcurrentDictionary<int, TpmSimulator> Sims = new();
        private static int _nextId;
        private static int _hooked;

        public static IEnumerable<TpmSimulator> All => Sims.Values.OrderBy(s => s.Id);

        public static TpmSimulator Add(string? name, SwtpmInstance instance)
        {
            if (Interlocked.Exchange(ref _hooked, 1) == 0)
                AppDomain.CurrentDomain.ProcessExit += (_, _) => { foreach (var s in Sims.Values) Stop(s); };
            int id = Interlocked.Increment(ref _nextId);
            var sim = new TpmSimulator(id, string.IsNullOrWhiteSpace(name) ? $"swtpm{id}" : name, instance);
            Sims[id] = sim;
            return sim;
        }

        public static void Stop(TpmSimulator sim)
        {
            Sims.TryRemove(sim.Id, out _);
            try { sim.Instance.Dispose(); }
            finally { sim.State = "Stopped"; }
        }

        public static IEnumerable<TpmSimulator> Select(PSCmdlet cmdlet, string[]? names, int[]? ids) =>
            NamedLookup.Select(cmdlet, All.ToList(), s => s.Name, s => s.Id, names, ids, "TPM simulator", "TpmSimulatorNotFound");
    }

    /// <summary>Starts a software TPM (swtpm) on free loopback ports with fresh EK certificates.</summary>
    [Cmdlet(VerbsLifecycle.Start, "TpmSimulator", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
    [OutputType(typeof(TpmSimulator))]
    public sealed class StartTpmSimulatorCommand : PSCmdlet
    {
        /// <summary>A name for the simulator (default swtpmN).</summary>
        [Parameter(Position = 0)]
        public string? Name { get; set; }

        /// <summary>PCR banks to allocate, e.g. sha1,sha256 (default: sha256 only, swtpm_setup's default).</summary>
        [Parameter]
        [ValidateSet("sha1", "sha256", "sha384", "sha512")]
        public string[]? PcrBank { get; set; }

        /// <summary>Copy a state directory provisioned once per process instead of running swtpm_setup (faster; the EKs are shared by such copies).</summary>
        [Parameter]
        public SwitchParameter Fast { get; set; }

        protected override void ProcessRecord()
        {
            if (!ShouldProcess(Name ?? "new simulator", "Start swtpm on 127.0.0.1")) return;
            if (!SwtpmInstance.IsInstalled)
            {
                ThrowTerminatingError(new ErrorRecord(new SwtpmNotInstalledException("swtpm and swtpm_setup are not on PATH. Install the Debian packages swtpm and swtpm-tools (build.ps1 Bootstrap does)."),
                    "SwtpmNotInstalled", ErrorCategory.NotInstalled, null));
            }
            if (Name is not null && SimulatorRegistry.All.Any(s => string.Equals(s.Name, Name, StringComparison.OrdinalIgnoreCase)))
            {
                ThrowTerminatingError(new ErrorRecord(new InvalidOperationException($"A TPM simulator named '{Name}' already runs in this session."),
                    "TpmSimulatorNameInUse", ErrorCategory.ResourceExists, Name));
            }
            WriteVerbose("Provisioning swtpm state (swtpm_setup --tpm2 --create-ek-cert --create-platform-cert) and starting swtpm.");
            SwtpmInstance instance;
            try
            {
                instance = SwtpmInstance.Start(new SwtpmOptions
                {
                    StateMode = Fast ? SwtpmStateMode.FastCopy : SwtpmStateMode.Fresh,
                    PcrBanks = PcrBank is { Length: > 0 } ? string.Join(",", PcrBank.Distinct(StringComparer.OrdinalIgnoreCase)) : null,
                });
            }
            catch (Exception ex) when (ex is not PipelineStoppedException)
            {
                ThrowTerminatingError(new ErrorRecord(ex, "TpmSimulatorStartFailed", ErrorCategory.OpenError, Name));
                return;
            }
            var sim = SimulatorRegistry.Add(Name, instance);
            WriteVerbose($"{sim.Name}: swtpm pid {sim.Pid} at {sim.ConnectionString}.");
            WriteObject(sim);
        }
    }

    /// <summary>Lists the TPM simulators running in this session.</summary>
    [Cmdlet(VerbsCommon.Get, "TpmSimulator", DefaultParameterSetName = "Name")]
    [OutputType(typeof(TpmSimulator))]
    public sealed class GetTpmSimulatorCommand : PSCmdlet
    {
        /// <summary>Simulator names; wildcards allowed.</summary>
        [Parameter(ParameterSetName = "Name", Position = 0)]
        [SupportsWildcards]
        [ArgumentCompleter(typeof(SimulatorNameCompleter))]
        public string[]? Name { get; set; }

        /// <summary>Simulator ids.</summary>
        [Parameter(ParameterSetName = "Id", Mandatory = true)]
        public int[]? Id { get; set; }

        protected override void ProcessRecord()
        {
            foreach (var s in SimulatorRegistry.Select(this, Name, Id)) WriteObject(s);
        }
    }

    /// <summary>Stops TPM simulators and deletes their state.</summary>
    [Cmdlet(VerbsLifecycle.Stop, "TpmSimulator", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, DefaultParameterSetName = "InputObject")]
    [OutputType(typeof(TpmSimulator))]
    public sealed class StopTpmSimulatorCommand : PSCmdlet
    {
        /// <summary>Simulators from Start- or Get-TpmSimulator.</summary>
        [Parameter(ParameterSetName = "InputObject", Mandatory = true, ValueFromPipeline = true, Position = 0)]
        public TpmSimulator[]? InputObject { get; set; }

        /// <summary>Simulator names; wildcards allowed.</summary>
        [Parameter(ParameterSetName = "Name", Mandatory = true)]
        [SupportsWildcards]
        [ArgumentCompleter(typeof(SimulatorNameCompleter))]
        public string[]? Name { get; set; }

        /// <summary>Simulator ids.</summary>
        [Parameter(ParameterSetName = "Id", Mandatory = true)]
        public int[]? Id { get; set; }

        /// <summary>Write the stopped simulator to the pipeline.</summary>
        [Parameter]
        public SwitchParameter PassThru { get; set; }

        protected override void ProcessRecord()
        {
            var sims = ParameterSetName == "InputObject"
                ? InputObject!.Where(s => s.State == "Running").ToList()
                : SimulatorRegistry.Select(this, Name, Id).ToList();
            foreach (var s in sims)
            {
                if (!ShouldProcess($"{s.Name} (pid {s.Pid}, {s.ConnectionString})", "Stop TPM simulator and delete its state")) continue;
                try { SimulatorRegistry.Stop(s); }
                catch (Exception ex) when (ex is not PipelineStoppedException)
                {
                    WriteError(new ErrorRecord(ex, "TpmSimulatorStopFailed", ErrorCategory.CloseError, s));
                }
                if (PassThru) WriteObject(s);
            }
        }
    }

    /// <summary>Completes -Name with the names of running simulators.</summary>
    public sealed class SimulatorNameCompleter : IArgumentCompleter
    {
        /// <inheritdoc />
        public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, System.Management.Automation.Language.CommandAst commandAst, System.Collections.IDictionary fakeBoundParameters)
        {
            var pattern = new WildcardPattern((wordToComplete ?? "").Trim('\'', '"') + "*", WildcardOptions.IgnoreCase);
            foreach (var s in SimulatorRegistry.All.Where(s => pattern.IsMatch(s.Name)))
                yield return new CompletionResult(s.Name, s.Name, CompletionResultType.ParameterValue, s.ConnectionString);
        }
    }
}
