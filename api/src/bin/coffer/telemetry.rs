//! Logs: `tracing` to stderr, one line per event, filtered by the first of
//! `--log-level`, `COFFER_LOG`, `RUST_LOG`, the config file's `log_level`,
//! or the command's default.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The environment variable of Coffer's log filter.
pub const LOG_ENV: &str = "COFFER_LOG";
/// The conventional environment variable, read when `COFFER_LOG` is unset.
const RUST_LOG_ENV: &str = "RUST_LOG";

/// A log filter that does not parse, and where it came from.
#[derive(Debug, thiserror::Error)]
#[error("invalid log filter {directives:?} (from {source_name}): {reason}")]
pub struct LogFilterError {
    /// The filter.
    pub directives: String,
    /// Where it came from: `--log-level`, an environment variable, the config file.
    pub source_name: &'static str,
    /// Why it does not parse.
    pub reason: String,
}

/// Installs the log subscriber. `flag` is `--log-level`, `configured` the
/// config file's `log_level`, `default` the command's own level.
pub fn init_logging(flag: Option<&str>, configured: Option<&str>, default: &str) -> Result<(), LogFilterError> {
    let from_env = |name: &'static str| std::env::var(name).ok().filter(|value| !value.is_empty()).map(|v| (v, name));
    let (directives, source_name) = flag
        .map(|flag| (flag.to_owned(), "--log-level"))
        .or_else(|| from_env(LOG_ENV))
        .or_else(|| from_env(RUST_LOG_ENV))
        .or_else(|| configured.map(|level| (level.to_owned(), "the config file's log_level")))
        .unwrap_or_else(|| (default.to_owned(), "the default"));
    let filter = EnvFilter::try_new(&directives).map_err(|error| LogFilterError {
        directives: directives.clone(),
        source_name,
        reason: error.to_string(),
    })?;
    // A second install (tests) keeps the first: nothing to report.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    Ok(())
}
