using System.Collections.Concurrent;
using System.Text;
using Microsoft.Extensions.Logging;
using TpmProvisioning.Hosting;

namespace TpmProvisioning.Server.Hosting;

/// <summary>
/// Writes log lines to a daily-rolling file under <c>&lt;DataPath&gt;/logs</c> (size-capped, old files pruned),
/// keeps the most recent entries in memory, and raises an event per entry so a foreground cmdlet can
/// relay them to the verbose stream. Every message passes through <see cref="SecretRedactor"/>.
/// </summary>
internal sealed class FileLoggerProvider : ILoggerProvider
{
    private const long MaxFileBytes = 10 * 1024 * 1024;
    private const int KeepFiles = 14;
    private const int RingSize = 2000;

    private readonly string _directory;
    private LogLevel _minLevel;

    /// <summary>The minimum level; set once more at start when a persisted setting (SERVER_LOG_LEVEL) says so.</summary>
    internal LogLevel MinLevel { get => _minLevel; set => _minLevel = value; }
    private readonly ConcurrentQueue<ServerLogEntry> _ring = new();
    private readonly object _fileLock = new();
    private StreamWriter? _writer;
    private string? _currentPath;
    private DateOnly _currentDay;
    private int _seq;

    public FileLoggerProvider(string directory, LogLevel minLevel)
    {
        _directory = directory;
        _minLevel = minLevel;
        Storage.PrivateFiles.CreateFolder(directory);
    }

    public event Action<ServerLogEntry>? Logged;

    public string CurrentPath
    {
        get { lock (_fileLock) { EnsureWriter(DateTimeOffset.UtcNow); return _currentPath!; } }
    }

    public ILogger CreateLogger(string categoryName) => new FileLogger(this, categoryName);

    public IReadOnlyList<ServerLogEntry> Recent(int max)
    {
        var all = _ring.ToArray();
        return max >= all.Length ? all : all[^max..];
    }

    internal bool IsEnabled(LogLevel level) => level != LogLevel.None && level >= _minLevel;

    internal void Write(LogLevel level, string category, string message, Exception? ex)
    {
        var entry = new ServerLogEntry(DateTimeOffset.UtcNow, (LogLevelName)(int)level, category,
            SecretRedactor.Redact(message), ex is null ? null : SecretRedactor.Redact(ex.GetType().FullName + ": " + ex.Message));
        _ring.Enqueue(entry);
        while (_ring.Count > RingSize && _ring.TryDequeue(out _)) { }
        var line = new StringBuilder(128)
            .Append(entry.Time.ToString("yyyy-MM-ddTHH:mm:ss.fffZ")).Append(' ')
            .Append(level.ToString().ToUpperInvariant()).Append(' ')
            .Append(category).Append(": ").Append(entry.Message);
        if (entry.Exception is not null) line.Append(" | ").Append(entry.Exception);
        lock (_fileLock)
        {
            try
            {
                EnsureWriter(entry.Time);
                _writer!.WriteLine(line.ToString());
                _writer.Flush();
            }
            catch (IOException)
            {
                // A full or vanished disk must not take the server down; the in-memory log still has it.
            }
        }
        try { Logged?.Invoke(entry); } catch { /* a listener's failure is not the server's */ }
    }

    private void EnsureWriter(DateTimeOffset now)
    {
        var day = DateOnly.FromDateTime(now.UtcDateTime);
        if (_writer is not null && day == _currentDay && _writer.BaseStream.Length < MaxFileBytes) return;
        _writer?.Dispose();
        if (day != _currentDay) _seq = 0; else _seq++;
        _currentDay = day;
        string path;
        do
        {
            path = Path.Combine(_directory, $"server-{day:yyyyMMdd}{(_seq > 0 ? "-" + _seq : "")}.log");
            if (!File.Exists(path) || new FileInfo(path).Length < MaxFileBytes) break;
            _seq++;
        } while (true);
        _currentPath = path;
        _writer = new StreamWriter(Storage.PrivateFiles.OpenWrite(path, FileMode.Append, FileShare.ReadWrite | FileShare.Delete), new UTF8Encoding(false));
        Prune();
    }

    private void Prune()
    {
        try
        {
            foreach (var old in new DirectoryInfo(_directory).GetFiles("server-*.log").OrderByDescending(f => f.Name, StringComparer.Ordinal).Skip(KeepFiles))
                old.Delete();
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    public void Dispose()
    {
        lock (_fileLock)
        {
            _writer?.Dispose();
            _writer = null;
        }
    }

    private sealed class FileLogger(FileLoggerProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => owner.IsEnabled(logLevel);
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel)) return;
            owner.Write(logLevel, category, formatter(state, exception), exception);
        }
    }
}
