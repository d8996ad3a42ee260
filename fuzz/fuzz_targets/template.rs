//! Template compilation and rendering never panic; a shell render either
//! refuses or yields a script whose text holds no alert data.
#![no_main]
use runbookd::template::{Data, Flavor, Template};

libfuzzer_sys::fuzz_target!(|input: (&str, &str)| {
    let (src, value) = input;
    let data = Data::new(serde_json::json!({"labels": {"v": value, "job": value}, "steps": {"a": {"status": "failed", "exit_code": 1, "stdout": value}}}));
    if let Ok(t) = Template::compile(src, Flavor::Raw, &["a"]) {
        let _ = t.render(&data);
    }
    if let Ok(t) = Template::compile(src, Flavor::Shell, &["a"]) {
        if let Ok(r) = t.render_shell(&data) {
            if value.len() >= 8 && !src.contains(value) {
                assert!(!r.script.contains(value), "{src:?} {value:?} → {:?}", r.script);
            }
        }
    }
});
