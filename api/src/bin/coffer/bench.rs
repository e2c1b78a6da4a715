//! `coffer bench`: the load generator. Its code lives in `coffer-benches`
//! (which depends on this crate's client, so this crate cannot depend on
//! it); it is built as the `coffer-bench` executable next to this one, and
//! `coffer bench ARGS...` replaces this process with `coffer-bench ARGS...`
//! (same process id, so signals, output and the exit status are its own).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The load generator's executable, a sibling of `coffer`.
const BENCH_EXECUTABLE: &str = "coffer-bench";

/// `coffer bench`'s arguments: all handed over as they are.
#[derive(Clone, Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct BenchArgs {
    /// The load generator's options (`coffer bench --help` lists them).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "OPTIONS")]
    pub args: Vec<OsString>,
}

/// The arguments after `bench` when it is the first argument (then clap,
/// whose global `--addresses` and `--json` would take the generator's own
/// flags, is not asked).
pub fn direct_args() -> Option<Vec<OsString>> {
    let mut args = std::env::args_os().skip(1);
    (args.next()? == "bench").then(|| args.collect())
}

/// Replaces this process with `coffer-bench args...`; returns only on failure.
pub fn exec(args: &[OsString]) -> String {
    let path = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(BENCH_EXECUTABLE),
        Err(error) => return format!("finding this executable's path: {error}"),
    };
    if !path.is_file() {
        return format!("{} does not exist: build it with `cargo build --workspace --bins`", path.display());
    }
    let error = Command::new(&path).arg0("coffer bench").args(args).exec();
    format!("running {}: {error}", path.display())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::{Cli, Command};

    #[test]
    fn bench_after_global_options_still_hands_over_every_argument() {
        let cli =
            Cli::try_parse_from(["coffer", "--log-level", "info", "bench", "--transfers", "5", "--help"]).unwrap();
        let Command::Bench(args) = cli.command else { panic!("not bench: {:?}", cli.command) };
        assert_eq!(args.args, ["--transfers", "5", "--help"]);
    }
}
