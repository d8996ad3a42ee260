//! Every captured Alertmanager payload parses; bad ones are refused with the field named.

use runbookd::alert::{fingerprint, Notification, Status};

use crate::helpers::{fixture, fixtures};

#[test]
fn every_captured_payload_parses_exactly_as_sent() {
    for path in fixtures() {
        let pretty = std::fs::read(&path).unwrap();
        let n =
            Notification::from_json(&pretty).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // The raw bytes Alertmanager put on the wire parse to the same thing.
        let raw = path
            .parent()
            .unwrap()
            .join("raw")
            .join(path.file_stem().unwrap())
            .with_extension("body");
        assert_eq!(
            Notification::from_json(&std::fs::read(&raw).unwrap()).unwrap(),
            n,
            "{}",
            raw.display()
        );
        // Time stamps come back in the exact form Alertmanager sent them.
        let v: serde_json::Value = serde_json::from_slice(&pretty).unwrap();
        for (a, raw_a) in n.alerts.iter().zip(v["alerts"].as_array().unwrap()) {
            assert_eq!(
                a.starts_at.to_string(),
                raw_a["startsAt"],
                "{}",
                path.display()
            );
            assert_eq!(a.ends_at.to_string(), raw_a["endsAt"], "{}", path.display());
            assert_eq!(
                a.ends_at.is_zero(),
                a.status == Status::Firing,
                "{}: zero endsAt iff firing",
                path.display()
            );
        }
    }
}

#[test]
fn computed_fingerprints_equal_alertmanagers() {
    let mut checked = 0;
    for path in fixtures() {
        let n = Notification::from_json(&std::fs::read(&path).unwrap()).unwrap();
        for a in &n.alerts {
            assert_eq!(
                fingerprint(&a.labels),
                a.fingerprint,
                "{}: {:?}",
                path.display(),
                a.labels
            );
            checked += 1;
        }
    }
    assert!(checked >= 20);
    // A hand-written payload without fingerprints gets Alertmanager's.
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("firing-single.json")).unwrap()).unwrap();
    v["alerts"][0]
        .as_object_mut()
        .unwrap()
        .remove("fingerprint");
    let n = Notification::from_json(&serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(n.alerts[0].fingerprint, "58a4d9157c1ffbd9");
}

#[test]
fn bad_payloads_name_the_problem() {
    let good: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("firing-single.json")).unwrap()).unwrap();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "key must be a string"),
        (b"".to_vec(), "the body is empty"),
        (b"[]".to_vec(), "the payload must be a JSON object"),
        (b"{\"version\": \"4\"".to_vec(), "EOF while parsing"),
        (
            with(&|v| v["version"] = "5".into()),
            "version: unsupported webhook version `5`, expected `4`",
        ),
        (
            with(&|v| v["version"] = 4.into()),
            "version: invalid type: integer `4`, expected a string",
        ),
        (
            with(&|v| v["alerts"] = serde_json::json!([])),
            "alerts: the notification carries no alerts",
        ),
        (with(&|v| v["alerts"] = "x".into()), "alerts: invalid type"),
        (
            with(&|v| v["status"] = "burning".into()),
            "status: unknown variant `burning`",
        ),
        (
            with(&|v| {
                v.as_object_mut().unwrap().remove("groupKey");
            }),
            "missing field `groupKey`",
        ),
        (
            with(&|v| {
                v.as_object_mut().unwrap().remove("receiver");
            }),
            "missing field `receiver`",
        ),
        (
            with(&|v| {
                v["alerts"][0].as_object_mut().unwrap().remove("startsAt");
            }),
            "alerts[0]: missing field `startsAt`",
        ),
        (
            with(&|v| {
                v["alerts"][0].as_object_mut().unwrap().remove("labels");
            }),
            "alerts[0]: missing field `labels`",
        ),
        (
            with(&|v| v["alerts"][0]["startsAt"] = "yesterday".into()),
            "alerts[0].startsAt: `yesterday` is not an RFC 3339 time stamp",
        ),
        (
            with(&|v| v["alerts"][0]["labels"]["job"] = 3.into()),
            "alerts[0].labels.job: invalid type: integer `3`, expected a string",
        ),
    ];
    for (body, expected) in cases {
        let err = Notification::from_json(&body)
            .expect_err(expected)
            .to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
    // Unknown fields are ignored: Alertmanager keeps adding them.
    let n = Notification::from_json(&with(&|v| v["someNewField"] = serde_json::json!({"x": 1})))
        .unwrap();
    assert_eq!(n.alerts.len(), 1);
}
