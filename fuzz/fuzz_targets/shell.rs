//! The shell substitution on any script text: never panics; an accepted
//! script's text is the input's text with each value replaced by a variable
//! reference (no alert data in it). With `RUNBOOKD_FUZZ_SHELLS=1`, every
//! accepted script is also run by dash and bash with values that would create
//! a canary file if either shell ever parsed them, and the canary must not
//! appear.
#![no_main]
use std::process::{Command, Stdio};

use runbookd::template::shell::substitute;

const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

const VALUES: &[&str] = &[
    "$(touch CANARY)",
    "`touch CANARY`",
    "'; touch CANARY; '",
    "\"; touch CANARY; \"",
    "\ntouch CANARY\n",
    "touch CANARY",
    "x[$(touch CANARY)]",
    "EOF\ntouch CANARY\nEOF",
];

libfuzzer_sys::fuzz_target!(|text: &str| {
    // `@` marks where a value goes.
    // (The canary's name in the script text itself would prove nothing.)
    if text.contains([OPEN, CLOSE, '\u{E002}', '\u{E003}']) || text.contains("CANARY") {
        return;
    }
    let run_shells = std::env::var_os("RUNBOOKD_FUZZ_SHELLS").is_some();
    let dir = if run_shells { Some(tempfile_dir()) } else { None };
    for value in VALUES {
        let canary = dir.as_ref().map_or("/nonexistent/CANARY".to_owned(), |d| format!("{d}/CANARY"));
        let value = value.replace("CANARY", &canary);
        let marked = text.replace('@', &format!("{OPEN}{value}{CLOSE}"));
        let Ok(sub) = substitute(&marked) else {
            return;
        };
        assert!(!sub.script.contains(&canary), "{text:?} → {:?}", sub.script);
        assert!(!sub.script.contains([OPEN, CLOSE]));
        let Some(dir) = &dir else { continue };
        for shell in ["/usr/bin/dash", "/usr/bin/bash"] {
            let _ = Command::new("timeout")
                .args(["-s", "KILL", "2", shell, "-c", &sub.script])
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .envs(sub.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            assert!(
                !std::path::Path::new(&canary).exists(),
                "{shell} ran a value: {text:?} → {:?}",
                sub.script
            );
        }
    }
    if let Some(d) = dir {
        let _ = std::fs::remove_dir_all(d);
    }
});

fn tempfile_dir() -> String {
    let d = std::env::temp_dir().join(format!(
        "runbookd-fuzz-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&d).unwrap();
    d.to_string_lossy().into_owned()
}
