//! The `cria` binary: parses the command line, sets up logging, dispatches to a stage.

mod alloc;
mod cmd;
mod overrides;
mod progress;
mod ranks;
mod report;

use clap::Parser;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cria",
    version,
    about = "Raise your own aligned chat model from an open model and your own data."
)]
struct Cli {
    /// Log level for stderr (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: cmd::Command,
}

fn main() -> ExitCode {
    alloc::keep_freed_memory();
    let cli = Cli::parse();
    let joined = match ranks::join() {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = cria_core::device::requested() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    // Rank 0 speaks for the run; the others report only their errors.
    let level = if joined.rank == 0 {
        cli.log.as_str()
    } else {
        "error"
    };
    let filter = match joined.rank {
        0 => tracing_subscriber::EnvFilter::try_from_default_env().ok(),
        _ => None,
    }
    .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    match cmd::run(cli.command) {
        Ok(()) => {
            joined.leave();
            ExitCode::SUCCESS
        }
        Err(e) => {
            let who = match joined.size {
                1 => String::new(),
                _ => format!("rank {} of {}: ", joined.rank, joined.size),
            };
            eprintln!("{who}error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            if joined.size > 1 {
                // The other ranks may be waiting for this one in a collective: end them all.
                cria_train::collective::world().abort(1);
            }
            ExitCode::FAILURE
        }
    }
}
