//! The webhook payload parser: any bytes give a payload or an error, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(n) = runbookd::alert::Notification::from_json(data) {
        assert!(!n.alerts.is_empty());
        let _ = serde_json::to_vec(&n).unwrap();
    }
});
