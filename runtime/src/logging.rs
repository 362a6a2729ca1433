//! How every OWSU process logs: `tracing` events as human-readable lines or JSON, to standard
//! error or to a file, filtered by `RUST_LOG` when it is set. One set-up for all binaries, so a
//! log line of the producer and one of the aggregator read alike.

use std::path::Path;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event (default).
    Human,
    /// One JSON object per line, for a log collector.
    Json,
}

/// The logging flag every binary flattens into its command line.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log format: human (default) or json.
    #[arg(long, global = true, env = "OWSU_LOG_FORMAT", default_value = "human")]
    pub log_format: LogFormat,
}

/// The default filter: our own INFO events; libraries only when they warn. delta-rs and its
/// kernel log every commit and snapshot load (whole log listings) at INFO, and librdkafka's
/// connection chatter is noise unless something fails.
pub(crate) const DEFAULT_FILTER: &str =
    "info,rdkafka=warn,buoyant_kernel=warn,delta_kernel=warn,deltalake_core=warn";

/// Sends log events to standard error, in colour only when it is a terminal and `NO_COLOR` is
/// unset (a log redirected to a file has no colour codes). A second call does nothing (the
/// first set-up stays).
pub fn init(format: LogFormat) {
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    install(format, std::io::stderr, colour);
}

/// Appends log events to `file` (created with its directory), for commands whose terminal
/// output is for people (`owsu demo`), as plain text without colour codes. If logging is
/// already set up, the file is still opened but receives nothing.
pub fn init_to_file(format: LogFormat, file: &Path) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    let f = std::sync::Arc::new(f);
    install(format, move || FileWriter(f.clone()), false);
    Ok(())
}

/// A shared handle on the log file (`tracing-subscriber` wants a writer per event).
struct FileWriter(std::sync::Arc<std::fs::File>);

impl std::io::Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        (&*self.0).flush()
    }
}

fn install<W>(format: LogFormat, writer: W, colour: bool)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| DEFAULT_FILTER.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(colour);
    // `try_init` fails only when a subscriber is already set: then that one stays.
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
