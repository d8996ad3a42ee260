//! The runbook loader: any file content gives a runbook set or errors with positions, never a panic.
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

static FILE: OnceLock<PathBuf> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let file = FILE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("runbookd-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("r.yaml")
    });
    std::fs::write(file, data).unwrap();
    if let Err(errors) = runbookd::runbook::load_files(std::slice::from_ref(file)) {
        for e in &errors.0 {
            let _ = e.to_string();
        }
    }
});
