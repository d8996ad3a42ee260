//! Telling people (DESIGN §9): what a runbook's `communication:` and
//! `escalation:` say, the notifiers of the server config, and the outbox
//! worker that delivers what the store queued.
//!
//! The store writes each notification in the same transaction as the event
//! that caused it (an incident opened, a run failed, an escalation timer
//! fired), from the rules snapshotted on the incident when its runbooks
//! matched. [`deliver`] then delivers at-least-once: retries with backoff and
//! jitter, `Retry-After`, a rate per notifier, a maximum age, then `dead`
//! with the last error.

pub mod config;
pub mod deliver;
mod send;

pub use crate::incident::notices::{queue, say};
pub use crate::incident::notices::{
    About, DeliveryState, EscalationRecord, Happened, MessageFilter, MessageRecord, OutboxItem,
    Queue, Settle, TimerState,
};
pub use crate::runbook::notify::{Communication, Escalation, Event, Policies, Policy, Unless};

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(on: &[Event], notify: &[&str], message: Option<&str>) -> Policy {
        Policy {
            communication: vec![Communication {
                on: on.to_vec(),
                notify: notify.iter().map(|s| (*s).to_owned()).collect(),
                message: message.map(str::to_owned),
            }],
            escalation: Vec::new(),
        }
    }

    #[test]
    fn an_incident_event_notifies_each_target_once_across_runbooks() {
        let mut p = Policies::new();
        p.insert(
            "a".into(),
            policy(&[Event::IncidentOpened], &["slack"], None),
        );
        p.insert(
            "b".into(),
            policy(&[Event::IncidentOpened], &["slack", "pd"], None),
        );
        p.insert("c".into(), policy(&[Event::RunFailed], &["mail"], None));
        let q = queue(
            &p,
            &Happened {
                event: Event::IncidentOpened,
                runbook: None,
                run_id: None,
                step: None,
                detail: "opened".into(),
            },
        );
        let targets: Vec<&str> = q.iter().map(|q| q.notifier.as_str()).collect();
        assert_eq!(targets, ["slack", "pd"]);
    }

    #[test]
    fn a_run_event_follows_only_its_runbooks_rules() {
        let mut p = Policies::new();
        p.insert(
            "a".into(),
            policy(&[Event::RunFailed], &["slack"], Some("{{event}}")),
        );
        p.insert("b".into(), policy(&[Event::RunFailed], &["pd"], None));
        let q = queue(
            &p,
            &Happened {
                event: Event::RunFailed,
                runbook: Some("b"),
                run_id: Some(7),
                step: None,
                detail: "failed".into(),
            },
        );
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].notifier, "pd");
        assert_eq!(q[0].run_id, Some(7));
    }

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_known() {
        for e in Event::ALL {
            assert_eq!(e.as_str().parse::<Event>(), Ok(*e));
        }
        let err = "opened".parse::<Event>().unwrap_err();
        assert!(err.contains("incident_opened"), "{err}");
        let json = serde_json::to_string(&Policy {
            communication: Vec::new(),
            escalation: vec![Escalation {
                after: Duration::from_secs(90),
                unless: vec![Unless::Acknowledged],
                notify: vec!["pd".into()],
                message: None,
            }],
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"escalation":[{"after":90000,"unless":["acknowledged"],"notify":["pd"]}]}"#
        );
    }
}
