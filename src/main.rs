//! `runbookd`: arguments → telemetry → [`runbookd::cli::run`] → exit status.

use std::process::ExitCode;

use clap::Parser;
use runbookd::cli::{self, Args, LogFormat};

fn main() -> ExitCode {
    // runbookd starts itself as its spawn helper (never a person).
    if std::env::args_os().nth(1).as_deref() == Some(runbookd::exec::helper::HELPER_ARG.as_ref()) {
        return runbookd::exec::helper::main();
    }
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
        // The reader of our output left (`runbookd incidents list | head`):
        // stop quietly, with the status a shell gives a process that SIGPIPE
        // ended, as other command-line tools do.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::from(141)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
