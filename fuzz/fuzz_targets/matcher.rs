//! The matcher parser: never panics; a parsed matcher round-trips through its canonical form.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &str| {
    if let Ok(m) = data.parse::<runbookd::matcher::Matcher>() {
        let again: runbookd::matcher::Matcher = m.to_string().parse().expect("canonical form parses");
        assert_eq!(m, again);
    }
});
