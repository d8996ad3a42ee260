//! `runbookd`: arguments → telemetry → [`runbookd::cli::run`] → exit status.

use std::process::ExitCode;

use clap::Parser;
use runbookd::cli::{self, Args, LogFormat};

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNBOOKD_LOG")
        .unwrap_or_else(|_| "info".into());
    // Colours only for a person at a terminal, never into files or journals.
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => fmt.json().init(),
        LogFormat::Text => fmt.init(),
    }
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
