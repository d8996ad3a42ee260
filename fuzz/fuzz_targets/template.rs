//! Template compilation and rendering: never panics; a shell render either
//! refuses or yields values that are single-quoted words.
#![no_main]
use runbookd::template::{Data, Flavor, Template};

libfuzzer_sys::fuzz_target!(|input: (&str, &str)| {
    let (src, value) = input;
    let data = Data::new(serde_json::json!({"labels": {"v": value, "job": value}, "steps": {"a": {"status": "failed", "exit_code": 1, "stdout": value}}}));
    for flavor in [Flavor::Raw, Flavor::Shell] {
        if let Ok(t) = Template::compile(src, flavor, &["a"]) {
            let _ = t.render(&data);
        }
    }
    let probe = Template::compile("echo {{labels.v}}", Flavor::Shell, &[]).unwrap();
    if let Ok(script) = probe.render(&data) {
        assert!(script.starts_with("echo '") && script.ends_with('\''), "{script:?}");
    }
});
