//! Property tests over hostile input: parsers never panic, and whatever a
//! label holds, it reaches a program as the same bytes.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use runbookd::alert::Notification;
use runbookd::matcher::{MatchOp, Matcher};
use runbookd::template::{Flavor, Template};
use serde_json::json;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_matcher_parser_never_panics(s in "(?s).{0,80}") {
        let _ = s.parse::<Matcher>();
    }

    #[test]
    fn matchers_round_trip_through_their_canonical_form(name in "[a-zA-Z_:][a-zA-Z0-9_:]{0,12}", value in "(?s)[^\u{0}]{0,24}", op in 0..4usize) {
        let (op, value) = match op {
            0 => (MatchOp::Equal, value),
            1 => (MatchOp::NotEqual, value),
            2 => (MatchOp::Regex, regex::escape(&value)),
            _ => (MatchOp::NotRegex, regex::escape(&value)),
        };
        let m = Matcher::new(&name, op, &value).unwrap();
        let again: Matcher = m.to_string().parse().unwrap();
        prop_assert_eq!(m, again);
    }

    #[test]
    fn the_payload_parser_never_panics_on_bytes(bytes in vec(any::<u8>(), 0..600)) {
        let _ = Notification::from_json(&bytes);
    }

    #[test]
    fn any_label_set_parses_and_gets_alertmanagers_fingerprint(labels in btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,10}", "(?s).{0,30}", 0..6)) {
        let body = serde_json::to_vec(&json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "r",
            "alerts": [{"status": "firing", "labels": labels, "startsAt": "2026-11-24T08:00:00Z"}]})).unwrap();
        let n = Notification::from_json(&body).unwrap();
        prop_assert_eq!(&n.alerts[0].labels, &labels);
        prop_assert_eq!(n.alerts[0].fingerprint.len(), 16);
    }

    #[test]
    fn the_runbook_loader_never_panics(text in "(?s).{0,400}") {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.yaml");
        std::fs::write(&f, &text).unwrap();
        let _ = runbookd::runbook::load_files(&[f]);
    }

    #[test]
    fn template_compilation_never_panics(src in "(?s).{0,80}") {
        let _ = Template::compile(&src, Flavor::Raw, &["a"]);
        let _ = Template::compile(&src, Flavor::Shell, &["a"]);
    }
}

#[test]
fn hostile_payload_encodings_are_refused_cleanly() {
    for (body, needle) in [
        (&b"{\"version\":\"4\",\"groupKey\":\"g\",\"status\":\"firing\",\"receiver\":\"\xff\xfe\"}"[..], "invalid"),
        (br#"{"version":"4","groupKey":"g","status":"firing","receiver":"r","alerts":[{"status":"firing","labels":{"a":"\ud800"},"startsAt":"2026-11-24T08:00:00Z"}]}"#, "escape"),
        (br#"{"version":"4","groupKey":"g","status":"firing","receiver":"r","alerts":[{"status":"firing","labels":{"a":"b"},"startsAt":"2026-11-24T08:00:00Z","endsAt":"9999-99-99"}]}"#, "endsat"),
    ] {
        let err = Notification::from_json(body).unwrap_err().to_string();
        assert!(err.to_lowercase().contains(needle), "{err}");
    }
    // A very long label value is data like any other.
    let long = "v".repeat(200_000);
    let body = serde_json::to_vec(&json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "r",
        "alerts": [{"status": "firing", "labels": {"long": long}, "startsAt": "2026-11-24T08:00:00Z"}]})).unwrap();
    assert_eq!(
        Notification::from_json(&body).unwrap().alerts[0].labels["long"].len(),
        200_000
    );
}
