#![allow(clippy::many_single_char_names, clippy::similar_names)] // scenarios read as transcripts: r[0] is a replica, c a claim
//! The store's conformance suite: the same scenarios, written against the
//! store interface only, on SQLite and on a real PostgreSQL. Where a
//! scenario needs several replicas, PostgreSQL gets separately opened
//! handles (separate pools, as separate processes would have) and SQLite,
//! which one process holds at a time, clones of one handle.

use std::collections::HashMap;
use std::time::Duration;

use runbookd::alert::Notification;
use runbookd::incident::{IncidentId, IncidentStatus, RunId, RunState};
use runbookd::runbook::Severity;
use runbookd::store::{
    ClaimRequest, Claimed, FinishOutcome, Finished, IncidentFilter, Ingest, Ingested, Reap,
    RunbookMatch, Store, StoreError, StoreUrl,
};
use serde_json::json;

use crate::pg::{self, Pg};

enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(Pg),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// A new, empty store.
    fn fresh(&self, scenario: &str) -> StoreUrl {
        match self {
            Backend::Sqlite(dir) => StoreUrl::Sqlite(dir.path().join(format!("{scenario}.db"))),
            Backend::Postgres(pg) => StoreUrl::Postgres(pg.database()),
        }
    }

    /// `n` replicas' handles on one new store.
    async fn replicas(&self, scenario: &str, n: usize) -> Vec<Store> {
        let url = self.fresh(scenario);
        let first = Store::open(&url).await.unwrap();
        let mut v = vec![first.clone()];
        for _ in 1..n {
            v.push(match self {
                Backend::Sqlite(_) => first.clone(),
                Backend::Postgres(_) => Store::open(&url).await.unwrap(),
            });
        }
        v
    }
}

const T0: &str = "2026-11-24T08:00:00Z";

fn notification(group: &str, status: &str, alerts: &[(&str, &str)]) -> (Notification, Vec<u8>) {
    let body = serde_json::to_vec(&json!({
        "receiver": "runbookd", "status": status, "version": "4", "groupKey": group,
        "alerts": alerts.iter().map(|(name, starts)| json!({
            "status": status,
            "labels": {"alertname": name, "instance": "web-1"},
            "annotations": {},
            "startsAt": starts,
            "endsAt": if status == "resolved" { "2026-11-24T08:05:00Z" } else { "0001-01-01T00:00:00Z" },
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    (Notification::from_json(&body).unwrap(), body)
}

fn runbook(name: &str) -> RunbookMatch {
    RunbookMatch {
        name: name.into(),
        title: format!("{name} title"),
        severity: Severity::Sev2,
        cooldown: Duration::ZERO,
        rate: None,
        has_on_resolved: false,
        cancel_on_resolved: false,
        idempotent: false,
        policy: runbookd::notify::Policy::default(),
    }
}

/// A runbook that tells `hook` about its incidents and runs, and escalates
/// to `pager` after `after` unless acknowledged or resolved.
fn talkative(name: &str, after: Duration) -> RunbookMatch {
    use runbookd::notify::{Communication, Escalation, Event, Policy, Unless};
    RunbookMatch {
        policy: Policy {
            communication: vec![Communication {
                on: vec![
                    Event::IncidentOpened,
                    Event::RunStarted,
                    Event::RunFailed,
                    Event::IncidentAcknowledged,
                    Event::IncidentResolved,
                ],
                notify: vec!["hook".into()],
                message: None,
            }],
            escalation: vec![Escalation {
                after,
                unless: vec![Unless::Acknowledged, Unless::Resolved],
                notify: vec!["pager".into()],
                message: None,
            }],
        },
        ..runbook(name)
    }
}

fn events(d: &runbookd::incident::IncidentDetail) -> Vec<(String, String, String)> {
    d.notifications
        .iter()
        .map(|m| {
            (
                m.notifier.clone(),
                m.event.as_str().to_owned(),
                m.state.as_str().to_owned(),
            )
        })
        .collect()
}

/// A notification is written with its event, taken by one replica per
/// attempt, fenced by its attempt, retried, given up and revived.
async fn notifications_are_written_with_their_event_and_taken_once(b: &Backend) {
    use runbookd::notify::{DeliveryState, Settle};
    let r = b.replicas("outbox", 2).await;
    let m = talkative("disk", LONG);
    let got = ingest(&r[0], notification("g-out", "firing", &[("Disk", T0)]), &m)
        .await
        .unwrap();
    let id = got.incident.unwrap();
    let d = r[0].incident(id).await.unwrap();
    assert_eq!(
        events(&d),
        [("hook".into(), "incident_opened".into(), "pending".into())]
    );
    assert_eq!(d.escalations.len(), 1, "the escalation timer is armed");
    assert!(r[0].outbox_due().await.unwrap());
    // Two replicas claim at once: the notification goes to one of them.
    let (a, c) = tokio::join!(
        r[0].outbox_claim("r0".into(), 10, LONG),
        r[1].outbox_claim("r1".into(), 10, LONG)
    );
    let mut items: Vec<_> = a.unwrap().into_iter().chain(c.unwrap()).collect();
    assert_eq!(items.len(), 1, "one replica per attempt: {items:?}");
    let item = items.pop().unwrap();
    assert_eq!(
        (item.attempt, item.incident),
        (1, runbookd::notify::About::Incident(id))
    );
    assert_eq!(item.notifier, "hook");
    assert!(
        item.body.is_some(),
        "the alert's notification comes along for the message context"
    );
    // A stale attempt records nothing; a failure waits for its next attempt.
    assert!(!r[1]
        .outbox_settle(item.id, 7, Settle::Delivered)
        .await
        .unwrap());
    let past = chrono::Utc::now() - chrono::Duration::seconds(1);
    assert!(r[0]
        .outbox_settle(
            item.id,
            1,
            Settle::Retry {
                at: past,
                error: "HTTP 503".into()
            }
        )
        .await
        .unwrap());
    let again = r[1].outbox_claim("r1".into(), 10, LONG).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    assert!(r[1]
        .outbox_settle(
            item.id,
            2,
            Settle::Dead {
                error: "HTTP 404".into()
            }
        )
        .await
        .unwrap());
    let dead = r[0]
        .messages(runbookd::notify::MessageFilter {
            state: Some(DeliveryState::Dead),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 404"));
    assert_eq!(dead[0].attempts, 2);
    r[0].outbox_retry(item.id).await.unwrap();
    let third = r[0].outbox_claim("r0".into(), 10, LONG).await.unwrap();
    assert_eq!(third[0].attempt, 1, "a retried notification counts afresh");
    assert!(r[0]
        .outbox_settle(item.id, 1, Settle::Delivered)
        .await
        .unwrap());
    assert!(matches!(
        r[0].outbox_retry(item.id).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(r[0]
        .outbox_claim("r0".into(), 10, LONG)
        .await
        .unwrap()
        .is_empty());
    // A run's start and end are told in the transactions that record them.
    let claimed = r[0]
        .claim(claim_req("r0", 1, LONG, &[("disk", 1)]))
        .await
        .unwrap();
    r[0].finish(finished(&claimed[0], RunState::Failed))
        .await
        .unwrap();
    let d = r[1].incident(id).await.unwrap();
    let evs: Vec<String> = events(&d).into_iter().map(|e| e.1).collect();
    assert_eq!(evs, ["incident_opened", "run_started", "run_failed"]);
    // One notifier hears about one incident in order: the newer waits
    // while the older is pending or in flight.
    let first = r[1].outbox_claim("r1".into(), 10, LONG).await.unwrap();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].event, runbookd::notify::Event::RunStarted);
    assert!(r[0]
        .outbox_claim("r0".into(), 10, LONG)
        .await
        .unwrap()
        .is_empty());
    r[1].outbox_settle(first[0].id, 1, Settle::Delivered)
        .await
        .unwrap();
    let next = r[0].outbox_claim("r0".into(), 10, LONG).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].event, runbookd::notify::Event::RunFailed);
    r[0].outbox_settle(next[0].id, 1, Settle::Delivered)
        .await
        .unwrap();
    // A resolution tells people and cancels the escalation.
    ingest(
        &r[1],
        notification("g-out", "resolved", &[("Disk", T0)]),
        &m,
    )
    .await
    .unwrap();
    let d = r[0].incident(id).await.unwrap();
    assert_eq!(events(&d).last().unwrap().1, "incident_resolved");
    assert_eq!(
        d.escalations[0].state,
        runbookd::notify::TimerState::Cancelled
    );
}

/// A drill's occurrence is claimed by one replica.
async fn a_drill_occurrence_is_claimed_once(b: &Backend) {
    let r = b.replicas("drills", 2).await;
    let at = chrono::Utc::now();
    let (x, y) = tokio::join!(
        r[0].claim_drill("gameday".into(), "gameday/a".into(), at, "r0".into()),
        r[1].claim_drill("gameday".into(), "gameday/a".into(), at, "r1".into())
    );
    assert!(x.unwrap() ^ y.unwrap(), "exactly one replica runs it");
    assert!(!r[0]
        .claim_drill("gameday".into(), "gameday/a".into(), at, "r0".into())
        .await
        .unwrap());
    let later = at + chrono::Duration::seconds(2);
    assert!(r[1]
        .claim_drill("gameday".into(), "gameday/a".into(), later, "r1".into())
        .await
        .unwrap());
    assert!(r[0]
        .claim_drill("gameday".into(), "gameday/b".into(), at, "r0".into())
        .await
        .unwrap());
}

/// Escalation timers fire once across replicas; an acknowledgement cancels
/// its incident's in the same transaction; shadow incidents record what
/// would be sent and send nothing.
async fn escalations_fire_once_and_acknowledgements_cancel_them(b: &Backend) {
    use runbookd::notify::TimerState;
    let r = b.replicas("escalate", 2).await;
    let m = talkative("disk", Duration::from_millis(200));
    let loud = ingest(&r[0], notification("g-loud", "firing", &[("Disk", T0)]), &m)
        .await
        .unwrap()
        .incident
        .unwrap();
    let acked = ingest(
        &r[0],
        notification("g-acked", "firing", &[("Disk", T0)]),
        &m,
    )
    .await
    .unwrap()
    .incident
    .unwrap();
    assert!(r[1].acknowledge(acked, "alice".into()).await.unwrap());
    assert!(
        !r[0].acknowledge(acked, "bob".into()).await.unwrap(),
        "the first acknowledgement wins"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (x, y) = tokio::join!(r[0].escalate(), r[1].escalate());
    assert_eq!(x.unwrap() + y.unwrap(), 1, "one escalation fired, once");
    assert_eq!(r[0].escalate().await.unwrap(), 0);
    let d = r[0].incident(loud).await.unwrap();
    assert!(d.summary.escalated);
    assert_eq!(d.escalations[0].state, TimerState::Fired);
    assert!(events(&d).contains(&("pager".into(), "escalated".into(), "pending".into())));
    assert!(d.timeline.iter().any(|t| t.kind == "escalation"));
    let d = r[0].incident(acked).await.unwrap();
    assert_eq!(d.escalations[0].state, TimerState::Cancelled);
    assert_eq!(d.summary.acknowledged_by.as_deref(), Some("alice"));
    assert!(events(&d).iter().all(|e| e.1 != "escalated"));
    assert!(events(&d).iter().any(|e| e.1 == "incident_acknowledged"));
    assert!(d
        .timeline
        .iter()
        .any(|t| t.author == "alice" && t.message.contains("acknowledged")));
    // Shadow mode: recorded as suppressed, never handed out.
    let matches = vec![vec![m.clone()]];
    let (n, body) = notification("g-shadow", "firing", &[("Disk", T0)]);
    let shadow = r[0]
        .ingest(Ingest {
            body,
            notification: n,
            matches,
            max_queued: 1000,
            shadow: true,
            run_rate: None,
            note: None,
        })
        .await
        .unwrap()
        .incident
        .unwrap();
    let d = r[0].incident(shadow).await.unwrap();
    assert_eq!(
        events(&d),
        [("hook".into(), "incident_opened".into(), "suppressed".into())]
    );
    let taken = r[0].outbox_claim("r0".into(), 100, LONG).await.unwrap();
    assert!(
        taken
            .iter()
            .all(|i| i.incident != runbookd::notify::About::Incident(shadow)),
        "{taken:?}"
    );
    assert!(r[0]
        .acknowledge(IncidentId(999_999), "x".into())
        .await
        .is_err());
}

fn ingest(
    store: &Store,
    n: (Notification, Vec<u8>),
    m: &RunbookMatch,
) -> runbookd::store::Pending<Ingested> {
    let matches = n.0.alerts.iter().map(|_| vec![m.clone()]).collect();
    store.ingest(Ingest {
        body: n.1,
        notification: n.0,
        matches,
        max_queued: 1000,
        shadow: false,
        run_rate: None,
        note: None,
    })
}

fn claim_req(owner: &str, free: u32, lease: Duration, concurrency: &[(&str, u32)]) -> ClaimRequest {
    ClaimRequest {
        owner: owner.into(),
        concurrency: concurrency
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect::<HashMap<_, _>>(),
        free,
        cluster_max: u32::MAX,
        lease,
    }
}

fn finished(c: &Claimed, state: RunState) -> Finished {
    Finished {
        lease: c.lease,
        state,
        summary: format!("{state} in a test"),
        result: None,
        awaiting: None,
    }
}

const LONG: Duration = Duration::from_secs(60);

async fn run_states(store: &Store, id: IncidentId) -> Vec<RunState> {
    store
        .incident(id)
        .await
        .unwrap()
        .runs
        .iter()
        .map(|r| r.state)
        .collect()
}

/// The same notification from two Alertmanager peers to two replicas at
/// once, a resend, and one whose startsAt drifted while the run is queued:
/// one incident, one run.
async fn peers_and_resends_queue_one_run(b: &Backend) {
    let r = b.replicas("peers", 2).await;
    let m = runbook("restart");
    let (first, second) = tokio::join!(
        ingest(&r[0], notification("g1", "firing", &[("Down", T0)]), &m),
        ingest(&r[1], notification("g1", "firing", &[("Down", T0)]), &m),
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(
        first.queued.len() + second.queued.len(),
        1,
        "{first:?} {second:?}"
    );
    assert_eq!(first.duplicates + second.duplicates, 1);
    assert_eq!(
        first.incident, second.incident,
        "one incident for one group"
    );
    let resent = ingest(&r[1], notification("g1", "firing", &[("Down", T0)]), &m)
        .await
        .unwrap();
    assert_eq!((resent.queued.len(), resent.duplicates), (0, 1));
    let drifted = ingest(
        &r[0],
        notification("g1", "firing", &[("Down", "2026-11-24T08:00:01Z")]),
        &m,
    )
    .await
    .unwrap();
    assert_eq!(
        (drifted.queued.len(), drifted.duplicates),
        (0, 1),
        "a drifted startsAt is absorbed while the run is in progress"
    );
    // The same alert, drifted, through two receivers' groups to two replicas at once.
    let drain = runbook("drain");
    let (x, y) = tokio::join!(
        ingest(
            &r[0],
            notification("g2", "firing", &[("Down", "2026-11-24T09:00:00Z")]),
            &drain
        ),
        ingest(
            &r[1],
            notification("g3", "firing", &[("Down", "2026-11-24T09:00:02Z")]),
            &drain
        ),
    );
    assert_eq!(
        x.unwrap().queued.len() + y.unwrap().queued.len(),
        1,
        "drifted copies ingested at once queue one run"
    );
    let only_restart = IncidentFilter {
        runbook: Some("restart".into()),
        ..IncidentFilter::default()
    };
    let (list, total) = r[0].incidents(only_restart).await.unwrap();
    assert_eq!(total, 1, "{list:?}");
    assert_eq!(run_states(&r[0], list[0].id).await, [RunState::Queued]);
}

/// Concurrency per runbook holds across replicas; a run is claimed once.
async fn claims_hold_concurrency_across_replicas(b: &Backend) {
    let r = b.replicas("claims", 2).await;
    let m = runbook("drain");
    for g in ["g1", "g2", "g3"] {
        ingest(&r[0], notification(g, "firing", &[(g, T0)]), &m)
            .await
            .unwrap();
    }
    let conc = [("drain", 2)];
    let (on_a, on_b) = tokio::join!(
        r[0].claim(claim_req("a", 10, LONG, &conc)),
        r[1].claim(claim_req("b", 10, LONG, &conc)),
    );
    let (on_a, on_b) = (on_a.unwrap(), on_b.unwrap());
    assert_eq!(on_a.len() + on_b.len(), 2, "concurrency 2 across replicas");
    let mut ids: Vec<i64> = on_a.iter().chain(&on_b).map(|c| c.lease.run_id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 2, "no run claimed twice");
    assert!(r[1]
        .claim(claim_req("b", 10, LONG, &conc))
        .await
        .unwrap()
        .is_empty());
    let one = on_a.first().or(on_b.first()).unwrap();
    assert_eq!(one.attempt, 1);
    assert_eq!(
        r[0].finish(finished(one, RunState::Succeeded))
            .await
            .unwrap(),
        FinishOutcome::Recorded
    );
    let next = r[1].claim(claim_req("b", 10, LONG, &conc)).await.unwrap();
    assert_eq!(next.len(), 1, "the freed slot is taken");
    // The cluster cap: one running at most.
    let mut capped = claim_req("c", 10, LONG, &[("drain", 10)]);
    capped.cluster_max = 1;
    assert!(
        r[0].claim(capped).await.unwrap().is_empty(),
        "two are running, the cluster cap is 1"
    );
}

/// A runbook at its concurrency with a long queue does not hide the runs
/// of other runbooks queued after it: the claim reads the queue page by page.
async fn a_long_queue_at_its_concurrency_hides_no_other_runbook(b: &Backend) {
    let r = b.replicas("pages", 1).await;
    let slow = runbook("slow");
    for i in 0..40 {
        let g = format!("g{i}");
        ingest(&r[0], notification(&g, "firing", &[(&g, T0)]), &slow)
            .await
            .unwrap();
    }
    ingest(
        &r[0],
        notification("other", "firing", &[("Other", T0)]),
        &runbook("quick"),
    )
    .await
    .unwrap();
    let conc = [("slow", 1), ("quick", 1)];
    let first = r[0].claim(claim_req("a", 4, LONG, &conc)).await.unwrap();
    let mut names: Vec<&str> = first.iter().map(|c| c.runbook.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["quick", "slow"],
        "one of `slow` (its concurrency) and the run of `quick` behind 39 more"
    );
    assert!(
        r[0].claim(claim_req("a", 4, LONG, &conc))
            .await
            .unwrap()
            .is_empty(),
        "both runbooks are at their concurrency"
    );
}

/// A run whose lease expired is taken over: it ends interrupted, and its
/// old owner can neither renew, append output nor record an end.
async fn a_stale_owner_writes_nothing(b: &Backend) {
    let r = b.replicas("stale", 2).await;
    let ing = ingest(
        &r[0],
        notification("g1", "firing", &[("Down", T0)]),
        &runbook("fix"),
    )
    .await
    .unwrap();
    let inc = ing.incident.unwrap();
    let c = r[0]
        .claim(claim_req("a", 1, Duration::from_millis(300), &[]))
        .await
        .unwrap()
        .remove(0);
    r[0].append_output(c.lease, vec![("s".into(), "stdout", b"before\n".to_vec())])
        .await
        .unwrap();
    assert_eq!(
        r[1].live(inc, 0).await.unwrap().0.len(),
        1,
        "live output is visible from any replica"
    );
    let early = r[1].reap(Reap::Expired).await.unwrap();
    assert_eq!(
        early.interrupted + early.requeued,
        0,
        "a live lease is not reaped"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let reaped = r[1].reap(Reap::Expired).await.unwrap();
    assert_eq!((reaped.interrupted, reaped.requeued), (1, 0));
    let beat = r[0]
        .heartbeat("a".into(), vec![c.lease], LONG)
        .await
        .unwrap();
    assert_eq!(
        beat.lost,
        [c.lease.run_id],
        "the old owner learns it lost the run"
    );
    r[0].append_output(c.lease, vec![("s".into(), "stdout", b"stale\n".to_vec())])
        .await
        .unwrap();
    assert_eq!(
        r[0].finish(finished(&c, RunState::Succeeded))
            .await
            .unwrap(),
        FinishOutcome::Fenced
    );
    let detail = r[1].incident(inc).await.unwrap();
    assert_eq!(detail.runs[0].state, RunState::Interrupted);
    assert!(
        detail.runs[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("stopped renewing its lease"),
        "{:?}",
        detail.runs[0].reason
    );
    assert!(
        r[1].live(inc, 0).await.unwrap().0.is_empty(),
        "nothing of the stale owner's output"
    );
    assert!(
        detail
            .timeline
            .iter()
            .any(|t| t.message.contains("interrupted") && t.message.contains("`a`")),
        "the timeline says what happened: {:?}",
        detail.timeline
    );
    assert!(!detail
        .timeline
        .iter()
        .any(|t| t.message.contains("succeeded")));
}

/// An idempotent run taken over is queued again; the next claim counts the
/// attempt and gets a new fence.
async fn idempotent_runs_are_queued_again(b: &Backend) {
    let r = b.replicas("idempotent", 2).await;
    let mut m = runbook("flush");
    m.idempotent = true;
    let ing = ingest(&r[0], notification("g1", "firing", &[("Full", T0)]), &m)
        .await
        .unwrap();
    let old = r[0]
        .claim(claim_req("a", 1, Duration::from_millis(200), &[]))
        .await
        .unwrap()
        .remove(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reaped = r[1].reap(Reap::Expired).await.unwrap();
    assert_eq!((reaped.interrupted, reaped.requeued), (0, 1));
    let new = r[1]
        .claim(claim_req("b", 1, LONG, &[]))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(new.lease.run_id, old.lease.run_id);
    assert_eq!(new.attempt, 2);
    assert!(new.lease.fence > old.lease.fence);
    assert_eq!(
        r[0].finish(finished(&old, RunState::Failed)).await.unwrap(),
        FinishOutcome::Fenced
    );
    assert_eq!(
        r[1].finish(finished(&new, RunState::Succeeded))
            .await
            .unwrap(),
        FinishOutcome::Recorded
    );
    let detail = r[0].incident(ing.incident.unwrap()).await.unwrap();
    assert_eq!(detail.runs[0].state, RunState::Succeeded);
    assert!(
        detail
            .timeline
            .iter()
            .any(|t| t.message.contains("re-queued (idempotent, attempt 2)")),
        "{:?}",
        detail.timeline
    );
}

/// Heartbeats keep a lease alive past its length.
async fn heartbeats_keep_a_lease(b: &Backend) {
    let r = b.replicas("heartbeat", 2).await;
    ingest(
        &r[0],
        notification("g1", "firing", &[("Down", T0)]),
        &runbook("fix"),
    )
    .await
    .unwrap();
    // Renewed every quarter of the lease, for twice its length (a loaded
    // machine can delay a renewal: a 400 ms lease lapsed once in the suite).
    let lease = Duration::from_secs(1);
    let c = r[0]
        .claim(claim_req("a", 1, lease, &[]))
        .await
        .unwrap()
        .remove(0);
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let beat = r[0]
            .heartbeat("a".into(), vec![c.lease], lease)
            .await
            .unwrap();
        assert!(beat.lost.is_empty() && beat.cancel.is_empty(), "{beat:?}");
        assert_eq!(r[1].reap(Reap::Expired).await.unwrap().interrupted, 0);
    }
    let other = r[1]
        .heartbeat("b".into(), vec![c.lease], lease)
        .await
        .unwrap();
    assert_eq!(other.lost, [c.lease.run_id], "only the owner renews");
    assert_eq!(
        r[0].finish(finished(&c, RunState::Succeeded))
            .await
            .unwrap(),
        FinishOutcome::Recorded
    );
}

/// A cancellation requested on one replica reaches the owner's heartbeat.
async fn cancellation_reaches_the_owner(b: &Backend) {
    let r = b.replicas("cancel", 2).await;
    let mut m = runbook("slow");
    m.cancel_on_resolved = true;
    ingest(&r[0], notification("g1", "firing", &[("Slow", T0)]), &m)
        .await
        .unwrap();
    let c = r[0]
        .claim(claim_req("a", 1, LONG, &[]))
        .await
        .unwrap()
        .remove(0);
    let resolved = ingest(&r[1], notification("g1", "resolved", &[("Slow", T0)]), &m)
        .await
        .unwrap();
    assert_eq!(resolved.cancel, [c.lease.run_id]);
    let beat = r[0]
        .heartbeat("a".into(), vec![c.lease], LONG)
        .await
        .unwrap();
    assert_eq!(beat.cancel, [c.lease.run_id]);
    assert!(beat.lost.is_empty());

    // An idempotent run whose cancellation was requested is not queued
    // again when its owner dies; a resolved notification whose startsAt
    // drifted still cancels it.
    let mut idem = runbook("flush");
    idem.cancel_on_resolved = true;
    idem.idempotent = true;
    let inc = ingest(&r[0], notification("g9", "firing", &[("Full", T0)]), &idem)
        .await
        .unwrap()
        .incident
        .unwrap();
    let c = r[0]
        .claim(claim_req("a", 1, Duration::from_millis(200), &[]))
        .await
        .unwrap()
        .remove(0);
    let resolved = ingest(
        &r[1],
        notification("g9", "resolved", &[("Full", "2026-11-24T08:00:03Z")]),
        &idem,
    )
    .await
    .unwrap();
    assert_eq!(
        resolved.cancel,
        [c.lease.run_id],
        "a drifted resolution cancels too"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let reaped = r[1].reap(Reap::Expired).await.unwrap();
    assert_eq!((reaped.interrupted, reaped.requeued), (1, 0));
    assert_eq!(run_states(&r[1], inc).await, [RunState::Cancelled]);
    assert!(
        r[1].claim(claim_req("b", 1, LONG, &[]))
            .await
            .unwrap()
            .is_empty(),
        "not run again"
    );
}

/// Alert data with NUL characters is stored and read back on every backend
/// (PostgreSQL's text refuses NUL: its display copy shows U+FFFD; the raw
/// body keeps every byte, so steps see what Alertmanager sent).
async fn nul_characters_are_stored_and_read(b: &Backend) {
    let r = b.replicas("nul", 1).await;
    let body = br#"{"receiver": "run\u0000bookd", "status": "firing", "version": "4", "groupKey": "g\u0000",
        "alerts": [{"status": "firing", "labels": {"alertname": "Nul\u0000", "instance": "a\u0000b", "k\u0000": "v"},
                    "annotations": {"summary": "\u0000"}, "startsAt": "2026-11-24T08:00:00Z", "generatorURL": "http://x/\u0000"}]}"#
        .to_vec();
    let n = Notification::from_json(&body).unwrap();
    let first = ingest(&r[0], (n.clone(), body.clone()), &runbook("fix"))
        .await
        .unwrap();
    let again = ingest(&r[0], (n, body), &runbook("fix")).await.unwrap();
    assert_eq!(
        again.incident, first.incident,
        "the same group, NUL and all"
    );
    // Decided: text holds U+FFFD for NUL on both backends (PostgreSQL's
    // text cannot hold NUL; SQLite kept it, and cut subjects at it).
    let d = r[0].incident(first.incident.unwrap()).await.unwrap();
    assert_eq!(d.alerts[0].labels["instance"], "a\u{FFFD}b", "{}", b.name());
    assert_eq!(d.summary.receiver, "run\u{FFFD}bookd", "{}", b.name());
    let (list, _) = r[0].incidents(IncidentFilter::default()).await.unwrap();
    assert_eq!(
        list[0].subject.as_deref(),
        Some("a\u{FFFD}b"),
        "{}",
        b.name()
    );
    let c = r[0]
        .claim(claim_req("a", 1, LONG, &[]))
        .await
        .unwrap()
        .remove(0);
    let raw = Notification::from_json(&c.body).unwrap();
    assert_eq!(
        raw.alerts[0].labels["instance"], "a\0b",
        "steps see the bytes Alertmanager sent"
    );
}

async fn the_lifecycle_is_recorded(b: &Backend) {
    let r = b.replicas("lifecycle", 1).await;
    let m = runbook("fix");
    let inc = ingest(&r[0], notification("g1", "firing", &[("Down", T0)]), &m)
        .await
        .unwrap()
        .incident
        .unwrap();
    let status_of = |d: &runbookd::incident::IncidentDetail| d.summary.status;
    assert_eq!(
        status_of(&r[0].incident(inc).await.unwrap()),
        IncidentStatus::Investigating
    );
    let c = r[0]
        .claim(claim_req("a", 1, LONG, &[]))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        status_of(&r[0].incident(inc).await.unwrap()),
        IncidentStatus::Investigating,
        "a claim leaves its start to be noted"
    );
    r[0].note_start(c.lease).await.unwrap();
    assert_eq!(
        status_of(&r[0].incident(inc).await.unwrap()),
        IncidentStatus::Identified
    );
    r[0].finish(finished(&c, RunState::Succeeded))
        .await
        .unwrap();
    assert_eq!(
        status_of(&r[0].incident(inc).await.unwrap()),
        IncidentStatus::Monitoring
    );
    ingest(&r[0], notification("g1", "resolved", &[("Down", T0)]), &m)
        .await
        .unwrap();
    let d = r[0].incident(inc).await.unwrap();
    assert_eq!(status_of(&d), IncidentStatus::Resolved);
    assert!(d.summary.alerts_ended_at.is_some() && d.summary.resolved_at.is_some());
    let stats = r[0].stats(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(
        (
            stats.incidents_opened,
            stats.incidents_resolved,
            stats.incidents_open
        ),
        (1, 1, 0)
    );
    assert!(stats.mttr_seconds.is_some());
    assert_eq!(stats.runs_by_state.get("succeeded"), Some(&1));
    let err = r[0].incident(IncidentId(999)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

/// The timeline entries of runbookd's runs saying a run started.
fn starts(d: &runbookd::incident::IncidentDetail) -> Vec<usize> {
    d.timeline
        .iter()
        .enumerate()
        .filter(|(_, t)| t.kind == "run" && t.message.contains("` started ("))
        .map(|(i, _)| i)
        .collect()
}

/// A run cancelled before its owner noted its start (a run's first
/// 200 ms), by hand or by its alert's resolution, has its start on the
/// timeline before the cancellation, and once: the cancellation notes it
/// first, and the run's end does not again.
async fn a_cancel_follows_the_start_it_cancels(b: &Backend) {
    let r = b.replicas("cancel-order", 2).await;
    let mut m = runbook("slow");
    m.cancel_on_resolved = true;
    let after_start = |d: &runbookd::incident::IncidentDetail, said: &str| {
        let at = d
            .timeline
            .iter()
            .position(|t| t.message.contains(said))
            .unwrap_or_else(|| panic!("no {said:?} on {:?}", d.timeline));
        assert_eq!(starts(d).len(), 1, "{:?}", d.timeline);
        assert!(
            starts(d)[0] < at,
            "the start before the cancellation: {:?}",
            d.timeline
        );
    };
    // By hand, on another replica.
    let (inc, c) = started(&r[0], "g1", "Slow", &m, "a").await;
    assert_eq!(
        r[1].cancel_run(c.lease.run_id, "erin".into())
            .await
            .unwrap(),
        RunState::Running
    );
    after_start(
        &r[0].incident(inc).await.unwrap(),
        "erin asked to cancel it",
    );
    r[0].finish(finished(&c, RunState::Cancelled))
        .await
        .unwrap();
    after_start(
        &r[0].incident(inc).await.unwrap(),
        "erin asked to cancel it",
    );
    // By its alert's resolution.
    let (inc, c) = started(&r[0], "g2", "Slower", &m, "a").await;
    let resolved = ingest(&r[1], notification("g2", "resolved", &[("Slower", T0)]), &m)
        .await
        .unwrap();
    assert_eq!(resolved.cancel, [c.lease.run_id]);
    after_start(&r[0].incident(inc).await.unwrap(), "(cancel_on_resolved)");
    r[0].finish(finished(&c, RunState::Cancelled))
        .await
        .unwrap();
    after_start(&r[0].incident(inc).await.unwrap(), "(cancel_on_resolved)");
}

/// A run's start is noted once, by whoever comes first: its owner, its
/// end (a short run: the start first, then the end, in one transaction),
/// or the takeover of a run whose owner died before noting it. An owner
/// that lost its run notes nothing.
async fn a_start_is_noted_once_whoever_notes_it(b: &Backend) {
    let r = b.replicas("starts", 2).await;
    let m = runbook("fix");
    // Noted by its end.
    let (inc, c) = started(&r[0], "g1", "Down", &m, "a").await;
    r[0].finish(finished(&c, RunState::Succeeded))
        .await
        .unwrap();
    let d = r[0].incident(inc).await.unwrap();
    let ended = d
        .timeline
        .iter()
        .position(|t| t.message.contains("` succeeded"))
        .unwrap();
    assert_eq!(starts(&d).len(), 1, "{:?}", d.timeline);
    assert!(
        starts(&d)[0] < ended,
        "the start before the end: {:?}",
        d.timeline
    );
    assert_eq!(
        d.summary.status,
        IncidentStatus::Monitoring,
        "the end moves on from where the start left the incident"
    );
    // Each entry followed by the status change it made, in order; the
    // start names the owner the end clears.
    let tail: Vec<(&str, Option<IncidentStatus>)> = d.timeline[starts(&d)[0]..]
        .iter()
        .map(|t| (t.kind.as_str(), t.status))
        .collect();
    assert_eq!(
        tail,
        [
            ("run", None),
            ("status", Some(IncidentStatus::Identified)),
            ("run", None),
            ("status", Some(IncidentStatus::Monitoring)),
        ],
        "{:?}",
        d.timeline
    );
    assert!(
        d.timeline[starts(&d)[0]].message.ends_with(" on a"),
        "{:?}",
        d.timeline
    );
    // A late note of the ended run.
    r[0].note_start(c.lease).await.unwrap();
    assert_eq!(starts(&r[0].incident(inc).await.unwrap()).len(), 1);
    // Noted by two at once (two replicas, say): once.
    let (inc, c) = started(&r[0], "g2", "Slow", &m, "a").await;
    let (x, y) = tokio::join!(r[0].note_start(c.lease), r[1].note_start(c.lease));
    x.unwrap();
    y.unwrap();
    assert_eq!(
        starts(&r[0].incident(inc).await.unwrap()).len(),
        1,
        "noted before the end"
    );
    r[0].finish(finished(&c, RunState::Succeeded))
        .await
        .unwrap();
    assert_eq!(starts(&r[0].incident(inc).await.unwrap()).len(), 1);
    // Its owner died before noting it: the takeover notes it (an
    // idempotent run, queued again). The old owner's late note is fenced:
    // it notes nothing of the next attempt, which its new owner notes.
    let mut flush = runbook("flush");
    flush.idempotent = true;
    let ing = ingest(&r[0], notification("g3", "firing", &[("Full", T0)]), &flush)
        .await
        .unwrap();
    let inc = ing.incident.unwrap();
    let old = r[0]
        .claim(claim_req("a", 1, Duration::from_millis(200), &[]))
        .await
        .unwrap()
        .remove(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(r[1].reap(Reap::Expired).await.unwrap().requeued, 1);
    let d = r[1].incident(inc).await.unwrap();
    let requeued = d
        .timeline
        .iter()
        .position(|t| t.message.contains("re-queued"))
        .unwrap();
    assert_eq!(starts(&d).len(), 1, "{:?}", d.timeline);
    assert!(starts(&d)[0] < requeued, "{:?}", d.timeline);
    let new = r[1]
        .claim(claim_req("b", 1, LONG, &[]))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(new.lease.run_id, old.lease.run_id);
    r[0].note_start(old.lease).await.unwrap();
    assert_eq!(
        starts(&r[1].incident(inc).await.unwrap()).len(),
        1,
        "the old owner's note is fenced"
    );
    r[1].note_start(new.lease).await.unwrap();
    let d = r[1].incident(inc).await.unwrap();
    assert_eq!(starts(&d).len(), 2, "{:?}", d.timeline);
    assert!(
        d.timeline[starts(&d)[1]]
            .message
            .contains("on b, attempt 2"),
        "{:?}",
        d.timeline
    );
}

/// Two runs of one incident ending at once on two replicas: the second
/// end sees the first, so the incident moves to `monitoring` once both
/// remediation runs succeeded (each end computes the next status from the
/// incident as it reads it: two ends reading it at once would each see the
/// other run still running, and leave it `identified`).
async fn ends_of_one_incident_at_once_lose_no_status_change(b: &Backend) {
    let r = b.replicas("ends-at-once", 2).await;
    let m = runbook("fix");
    let mut incidents = Vec::new();
    for g in 0..12 {
        let ing = ingest(
            &r[0],
            notification(
                &format!("g{g}"),
                "firing",
                &[(&format!("A{g}"), T0), (&format!("B{g}"), T0)],
            ),
            &m,
        )
        .await
        .unwrap();
        incidents.push(ing.incident.unwrap());
    }
    let claimed = r[0]
        .claim(claim_req("a", 64, LONG, &[("fix", 64)]))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 24);
    for c in &claimed {
        r[0].note_start(c.lease).await.unwrap();
    }
    let ends = incidents.iter().map(|inc| {
        let mut pair = claimed.iter().filter(|c| c.incident == *inc);
        let (x, y) = (pair.next().unwrap(), pair.next().unwrap());
        let (a, b) = (r[0].clone(), r[1].clone());
        async move {
            let (one, two) = tokio::join!(
                a.finish(finished(x, RunState::Succeeded)),
                b.finish(finished(y, RunState::Succeeded)),
            );
            assert_eq!(
                (one.unwrap(), two.unwrap()),
                (FinishOutcome::Recorded, FinishOutcome::Recorded)
            );
        }
    });
    futures_util::future::join_all(ends).await;
    let mut stuck = Vec::new();
    for inc in &incidents {
        let d = r[0].incident(*inc).await.unwrap();
        if d.summary.status != IncidentStatus::Monitoring {
            stuck.push((inc.to_string(), d.summary.status));
        }
    }
    assert!(
        stuck.is_empty(),
        "{}: incidents whose both runs succeeded but not monitoring: {stuck:?}",
        b.name()
    );
    // A run's end and its alert's resolution at once: resolved, whichever
    // comes first (an end reading the incident before the resolution was
    // in would write `monitoring` over it).
    let mut incidents = Vec::new();
    for g in 0..20 {
        let ing = ingest(
            &r[0],
            notification(&format!("h{g}"), "firing", &[(&format!("C{g}"), T0)]),
            &m,
        )
        .await
        .unwrap();
        incidents.push((g, ing.incident.unwrap()));
    }
    let claimed = r[0]
        .claim(claim_req("a", 64, LONG, &[("fix", 64)]))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 20);
    for c in &claimed {
        r[0].note_start(c.lease).await.unwrap();
    }
    let races = incidents.iter().map(|(g, inc)| {
        let c = claimed.iter().find(|c| c.incident == *inc).unwrap();
        let (a, b, m) = (r[0].clone(), r[1].clone(), m.clone());
        async move {
            let (end, resolved) = tokio::join!(
                a.finish(finished(c, RunState::Succeeded)),
                ingest(
                    &b,
                    notification(&format!("h{g}"), "resolved", &[(&format!("C{g}"), T0)]),
                    &m
                ),
            );
            assert_eq!(end.unwrap(), FinishOutcome::Recorded);
            resolved.unwrap();
        }
    });
    futures_util::future::join_all(races).await;
    let mut reopened = Vec::new();
    for (_, inc) in &incidents {
        let d = r[0].incident(*inc).await.unwrap();
        if d.summary.status != IncidentStatus::Resolved {
            reopened.push((inc.to_string(), d.summary.status));
        }
    }
    assert!(
        reopened.is_empty(),
        "{}: incidents whose alert resolved but not resolved: {reopened:?}",
        b.name()
    );
}

/// One replica holds the leader lease at a time, until it lapses.
async fn one_leader_at_a_time(b: &Backend) {
    let r = b.replicas("leader", 2).await;
    let lease = Duration::from_millis(300);
    assert!(r[0].lead("a".into(), lease).await.unwrap());
    if let Backend::Sqlite(_) = b {
        // One process holds a SQLite store: it always leads.
        return;
    }
    assert!(!r[1].lead("b".into(), lease).await.unwrap());
    assert!(
        r[0].lead("a".into(), lease).await.unwrap(),
        "the leader renews"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        r[1].lead("b".into(), lease).await.unwrap(),
        "a lapsed lease passes on"
    );
    assert!(!r[0].lead("a".into(), lease).await.unwrap());
}

/// Live output is read after a cursor, whichever replica wrote it.
async fn live_output_resumes_after_a_cursor(b: &Backend) {
    let r = b.replicas("live", 2).await;
    let inc = ingest(
        &r[0],
        notification("g1", "firing", &[("Down", T0)]),
        &runbook("fix"),
    )
    .await
    .unwrap()
    .incident
    .unwrap();
    let c = r[0]
        .claim(claim_req("a", 1, LONG, &[]))
        .await
        .unwrap()
        .remove(0);
    r[0].append_output(
        c.lease,
        vec![
            ("one".into(), "stdout", b"1\n".to_vec()),
            ("one".into(), "stderr", b"2\n".to_vec()),
        ],
    )
    .await
    .unwrap();
    let (all, active) = r[1].live(inc, 0).await.unwrap();
    assert!(active);
    assert_eq!(
        all.iter().map(|c| c.text.as_str()).collect::<Vec<_>>(),
        ["1\n", "2\n"]
    );
    let (rest, _) = r[1].live(inc, all[0].cursor).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].stream, "stderr");
    r[0].finish(finished(&c, RunState::Succeeded))
        .await
        .unwrap();
    // A stream that had read the first chunk still gets the tail, and
    // learns that nothing runs any more.
    let (tail, active) = r[1].live(inc, all[0].cursor).await.unwrap();
    assert!(!active);
    assert_eq!(
        tail.iter().map(|c| c.text.as_str()).collect::<Vec<_>>(),
        ["2\n"],
        "a finished run's last output is still readable"
    );
    let (after, _) = r[1].live(inc, all[1].cursor).await.unwrap();
    assert!(after.is_empty());
}

/// After a crash of the only process, everything running is its leftover.
async fn reaping_all_interrupts_what_ran(b: &Backend) {
    let r = b.replicas("reap-all", 1).await;
    let inc = ingest(
        &r[0],
        notification("g1", "firing", &[("Down", T0)]),
        &runbook("fix"),
    )
    .await
    .unwrap()
    .incident
    .unwrap();
    r[0].claim(claim_req("a", 1, LONG, &[])).await.unwrap();
    let reaped = r[0]
        .reap(Reap::All {
            why: "runbookd stopped".into(),
        })
        .await
        .unwrap();
    assert_eq!(reaped.interrupted, 1);
    let d = r[0].incident(inc).await.unwrap();
    assert_eq!(d.runs[0].state, RunState::Interrupted);
    assert_eq!(d.runs[0].reason.as_deref(), Some("runbookd stopped"));
}

/// A full queue refuses the notification whole.
async fn a_full_queue_records_nothing(b: &Backend) {
    let r = b.replicas("full", 1).await;
    let (n, body) = notification("g1", "firing", &[("A", T0), ("B", T0)]);
    let matches = n.alerts.iter().map(|_| vec![runbook("fix")]).collect();
    let err = r[0]
        .ingest(Ingest {
            body,
            notification: n,
            matches,
            max_queued: 1,
            shadow: false,
            run_rate: None,
            note: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::QueueFull), "{err:?}");
    assert_eq!(
        r[0].incidents(IncidentFilter::default()).await.unwrap().1,
        0,
        "rolled back whole"
    );
}

/// A manual run's note (who asked, why) is part of the run's transaction:
/// recorded with it on the incident's timeline, and refused with it when
/// the queue is full.
async fn a_manual_runs_note_is_recorded_with_it(b: &Backend) {
    let r = b.replicas("note", 1).await;
    let note = |m: &str| runbookd::incident::Update {
        author: "alice".into(),
        message: m.into(),
        status: None,
        root_cause: None,
    };
    let (n, body) = notification("g1", "firing", &[("A", T0)]);
    let ing = r[0]
        .ingest(Ingest {
            body,
            notification: n,
            matches: vec![vec![runbook("fix")]],
            max_queued: 10,
            shadow: false,
            run_rate: None,
            note: Some(note("manual run: checking the disk")),
        })
        .await
        .unwrap();
    let d = r[0].incident(ing.incident.unwrap()).await.unwrap();
    let update = d
        .timeline
        .iter()
        .find(|t| t.kind == "update")
        .expect("the note is on the timeline");
    assert_eq!(
        (update.author.as_str(), update.message.as_str()),
        ("alice", "manual run: checking the disk")
    );
    let (n, body) = notification("g2", "firing", &[("B", T0), ("C", T0)]);
    let err = r[0]
        .ingest(Ingest {
            body,
            notification: n,
            matches: vec![vec![runbook("fix")], vec![runbook("fix")]],
            max_queued: 1,
            shadow: false,
            run_rate: None,
            note: Some(note("never recorded")),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::QueueFull), "{err:?}");
    assert_eq!(
        r[0].incidents(IncidentFilter::default()).await.unwrap().1,
        1,
        "the refused run and its note are rolled back together"
    );
}

/// A run of `alert` queued in its own incident and claimed by `owner`.
async fn started(
    store: &Store,
    group: &str,
    alert: &str,
    m: &RunbookMatch,
    owner: &str,
) -> (IncidentId, Claimed) {
    let ing = ingest(store, notification(group, "firing", &[(alert, T0)]), m)
        .await
        .unwrap();
    (ing.incident.unwrap(), claim_soon(store, owner).await)
}

/// The first run `owner` can claim within 5 s.
async fn claim_soon(store: &Store, owner: &str) -> Claimed {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(c) = store
            .claim(claim_req(owner, 1, LONG, &[]))
            .await
            .unwrap()
            .pop()
        {
            return c;
        }
        assert!(std::time::Instant::now() < deadline, "nothing to claim");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A paused run: one approval step recorded, waiting.
fn paused(c: &Claimed, timeout_ms: u64) -> Finished {
    let at = "2026-11-25T08:00:00Z";
    let plan = json!({"name": "go", "kind": "approve", "vars": {}, "env": {}, "deferred": false, "timeout_ms": 0,
        "retries": 0, "retry_delay_ms": 0, "continue_on_failure": false,
        "approval": {"prompt": "Go?", "timeout_ms": timeout_ms, "on_timeout": "deny"}});
    let result: runbookd::record::RunResult = serde_json::from_value(json!({
        "runbook": c.runbook, "fingerprint": c.fingerprint, "phase": "remediation", "outcome": "awaiting_approval",
        "steps": [{"name": "go", "phase": "steps", "plan": plan, "outcome": {"status": "awaiting_approval"},
                   "attempts": [], "started": at, "ended": at, "duration_ms": 0}],
        "checklist": [], "started": at, "ended": at, "duration_ms": 5,
    }))
    .unwrap();
    Finished {
        lease: c.lease,
        state: RunState::AwaitingApproval,
        summary: "waiting".into(),
        result: Some(runbookd::incident::RunDetail::Executed(Box::new(result))),
        awaiting: Some(runbookd::approval::Request {
            step: "go".into(),
            index: 0,
            plan: runbookd::approval::ApprovalPlan {
                prompt: "Go?".into(),
                timeout_ms,
                on_timeout: runbookd::approval::OnTimeout::Deny,
            },
        }),
    }
}

/// A run that succeeded and left one manual step (a checklist item).
fn with_checklist(c: &Claimed, step: &str) -> Finished {
    let at = "2026-11-25T08:00:00Z";
    let plan = json!({"name": step, "kind": "manual", "vars": {}, "env": {}, "deferred": false, "timeout_ms": 0,
        "retries": 0, "retry_delay_ms": 0, "continue_on_failure": false, "text": format!("{step} by hand")});
    let result: runbookd::record::RunResult = serde_json::from_value(json!({
        "runbook": c.runbook, "fingerprint": c.fingerprint, "phase": "remediation", "outcome": "succeeded",
        "steps": [{"name": step, "phase": "steps", "plan": plan, "outcome": null,
                   "attempts": [], "started": at, "ended": at, "duration_ms": 0}],
        "checklist": [format!("{step} by hand")], "started": at, "ended": at, "duration_ms": 5,
    }))
    .unwrap();
    Finished {
        lease: c.lease,
        state: RunState::Succeeded,
        summary: "left a checklist item".into(),
        result: Some(runbookd::incident::RunDetail::Executed(Box::new(result))),
        awaiting: None,
    }
}

/// People on an incident: the first to acknowledge commands it until they
/// hand it over; checklist items are ticked once, by someone, and the last
/// one moves the incident to monitoring; a re-run belongs to its incident,
/// takes the failed run's place, and is queued once for two requests.
async fn people_lead_tick_and_rerun(b: &Backend) {
    use runbookd::store::Tick;
    let r = b.replicas("people", 2).await;
    let (inc, c) = started(&r[0], "g1", "Down", &runbook("fix"), "a").await;
    r[0].finish(with_checklist(&c, "watch")).await.unwrap();
    let d = r[0].incident(inc).await.unwrap();
    assert_eq!(
        d.summary.status,
        IncidentStatus::Identified,
        "an item is open"
    );
    assert_eq!(d.checklist.len(), 1);
    assert!(d.checklist[0].is_open());

    // Commander: nobody, then the first to acknowledge, then a hand-over.
    assert_eq!(d.summary.commander, None);
    assert!(r[0].acknowledge(inc, "alice".into()).await.unwrap());
    assert_eq!(
        r[1].incident(inc)
            .await
            .unwrap()
            .summary
            .commander
            .as_deref(),
        Some("alice")
    );
    let h = r[1]
        .hand_over(inc, "bob".into(), "alice".into())
        .await
        .unwrap();
    assert_eq!(
        (h.commander.as_str(), h.previous.as_deref(), h.changed),
        ("bob", Some("alice"), true)
    );
    let again = r[0]
        .hand_over(inc, "bob".into(), "carol".into())
        .await
        .unwrap();
    assert!(!again.changed, "bob already leads it");
    let d = r[0].incident(inc).await.unwrap();
    assert_eq!(d.summary.commander.as_deref(), Some("bob"));
    assert!(
        d.timeline.iter().any(|t| t.author == "alice"
            && t.message == "alice handed command of the incident from alice to bob"),
        "{:?}",
        d.timeline
    );
    let err = r[0]
        .hand_over(IncidentId(999), "x".into(), "y".into())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");

    // Ticks: an unknown item is named as such; the item is ticked once.
    let tick = |step: &str, done: bool, who: &str| Tick {
        run_id: None,
        step: step.into(),
        done,
        who: who.into(),
    };
    let err = r[0].tick(inc, tick("nope", true, "bob")).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound(m) if m.contains("`watch` of run #")),
        "{err:?}"
    );
    let (a, b2) = tokio::join!(
        r[0].tick(inc, tick("watch", true, "bob")),
        r[1].tick(inc, tick("watch", true, "carol"))
    );
    let (a, b2) = (a.unwrap(), b2.unwrap());
    assert_eq!(
        a.done_by, b2.done_by,
        "one tick wins; the other finds it done"
    );
    let d = r[0].incident(inc).await.unwrap();
    assert_eq!(
        d.summary.status,
        IncidentStatus::Monitoring,
        "the last item is done"
    );
    assert!(!d.checklist[0].is_open() && d.checklist[0].done_at.is_some());
    let ticked: Vec<_> = d
        .timeline
        .iter()
        .filter(|t| t.message.contains("ticked checklist item `watch`"))
        .collect();
    assert_eq!(ticked.len(), 1, "{:?}", d.timeline);
    // Reopened: back to identified.
    let open = r[0].tick(inc, tick("watch", false, "bob")).await.unwrap();
    assert!(open.is_open());
    assert_eq!(
        r[0].incident(inc).await.unwrap().summary.status,
        IncidentStatus::Identified
    );

    // A re-run: refused while its original runs, on the same incident once
    // it ended; a failed run's re-run that succeeds clears `run_failed`.
    let (inc2, c2) = started(&r[0], "g2", "Full", &runbook("clean"), "a").await;
    let err = r[0].rerun(c2.lease.run_id, "bob".into()).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("running")),
        "{err:?}"
    );
    r[0].finish(finished(&c2, RunState::Failed)).await.unwrap();
    let d = r[0].incident(inc2).await.unwrap();
    assert!(d.summary.run_failed);
    assert_eq!(d.summary.status, IncidentStatus::Investigating);
    let (x, y) = tokio::join!(
        r[0].rerun(c2.lease.run_id, "bob".into()),
        r[1].rerun(c2.lease.run_id, "bob".into())
    );
    let (won, lost) = match (x, y) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
        other => panic!("two re-run requests at once queue one: {other:?}"),
    };
    assert!(matches!(lost, StoreError::Conflict(_)), "{lost:?}");
    assert_eq!((won.incident, won.rerun_of), (inc2, c2.lease.run_id));
    let c3 = claim_soon(&r[1], "b").await;
    assert_eq!(
        (c3.lease.run_id, c3.rerun_of),
        (won.run, Some(c2.lease.run_id))
    );
    assert_eq!(
        (c3.fingerprint.as_str(), c3.starts_at.as_str()),
        (c2.fingerprint.as_str(), c2.starts_at.as_str()),
        "the same alert"
    );
    r[1].note_start(c3.lease).await.unwrap();
    let d = r[0].incident(inc2).await.unwrap();
    assert_eq!(
        d.summary.status,
        IncidentStatus::Identified,
        "the re-run is running"
    );
    assert!(!d.summary.run_failed, "the failed run was re-run");
    r[1].finish(finished(&c3, RunState::Succeeded))
        .await
        .unwrap();
    let d = r[0].incident(inc2).await.unwrap();
    assert_eq!(d.summary.status, IncidentStatus::Monitoring);
    assert_eq!(d.runs.len(), 2);
    assert_eq!(d.runs[1].rerun_of, Some(RunId(c2.lease.run_id)));
    // A re-run of the re-run keeps the first run as its original.
    let again = r[0].rerun(c3.lease.run_id, "bob".into()).await.unwrap();
    assert_eq!(again.rerun_of, c2.lease.run_id);
    // Resolved: re-runs are refused with what to do instead.
    let c4 = claim_soon(&r[0], "a").await;
    r[0].finish(finished(&c4, RunState::Succeeded))
        .await
        .unwrap();
    ingest(
        &r[0],
        notification("g2", "resolved", &[("Full", T0)]),
        &runbook("clean"),
    )
    .await
    .unwrap();
    let err = r[0].rerun(c4.lease.run_id, "bob".into()).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("is resolved")),
        "{err:?}"
    );
}

/// A run paused on an approval holds no slot; two decisions at once on two
/// replicas: one wins; the run resumes with it; a deadline fires once.
async fn approvals_are_decided_once_and_resume(b: &Backend) {
    use runbookd::approval::{ApprovalState, Decision};
    let r = b.replicas("approvals", 2).await;
    let m = runbook("risky");
    let ing = ingest(&r[0], notification("g1", "firing", &[("Risky", T0)]), &m)
        .await
        .unwrap();
    let id = ing.incident.unwrap();
    let c = r[0]
        .claim(claim_req("a", 1, LONG, &[]))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        r[0].finish(paused(&c, 600_000)).await.unwrap(),
        FinishOutcome::Recorded
    );
    let d = r[1].incident(id).await.unwrap();
    assert_eq!(d.runs[0].state, RunState::AwaitingApproval);
    assert_eq!(d.approvals.len(), 1);
    assert_eq!(d.approvals[0].state, ApprovalState::Pending);
    assert!(d
        .timeline
        .iter()
        .any(|t| t.message.contains("waits for approval of step `go`")));
    assert!(
        r[1].claim(claim_req("b", 1, LONG, &[]))
            .await
            .unwrap()
            .is_empty(),
        "a waiting run is not claimed"
    );
    let asked = d.approvals[0].id;
    let (x, y) = tokio::join!(
        r[0].decide(
            c.lease.run_id,
            asked,
            Decision::Approve,
            "alice".into(),
            Some("ok".into())
        ),
        r[1].decide(c.lease.run_id, asked, Decision::Deny, "bob".into(), None),
    );
    let winner = match (x, y) {
        (Ok(a), Err(StoreError::Conflict(why))) | (Err(StoreError::Conflict(why)), Ok(a)) => {
            assert!(why.contains("already decided"), "{why}");
            a
        }
        other => panic!("one decision wins, the other conflicts: {other:?}"),
    };
    // A claim skips rows another transaction holds at that moment: a
    // claim that finds nothing is asked again, as the claim loop does.
    let again = claim_soon(&r[1], "b").await;
    assert_eq!(again.lease.run_id, c.lease.run_id);
    assert_eq!(again.attempt, c.attempt, "a resume is not a new attempt");
    let resume = again.resume.as_ref().expect("the claim resumes the run");
    assert_eq!(resume.approval.state, winner.state);
    assert_eq!(resume.prior.steps.len(), 1);
    assert_eq!(
        r[0].finish(paused(&c, 1)).await.unwrap(),
        FinishOutcome::Fenced,
        "the old claim writes nothing"
    );
    // The resumed run pauses again, on a second prompt: a decision that
    // names the first (a stale page, a stale CLI) is refused, never
    // applied to the second.
    assert_eq!(
        r[1].finish(paused(&again, 600_000)).await.unwrap(),
        FinishOutcome::Recorded
    );
    let d = r[0].incident(id).await.unwrap();
    let second = d.approvals.iter().map(|a| a.id).max().unwrap();
    assert_ne!(second, asked);
    match r[0]
        .decide(
            c.lease.run_id,
            asked,
            Decision::Approve,
            "carl".into(),
            None,
        )
        .await
    {
        Err(StoreError::Conflict(why)) => {
            assert!(why.contains("not the one it waits on"), "{why}");
            assert!(why.contains(&format!("approval {second}")), "{why}");
        }
        other => panic!("a stale decision is refused: {other:?}"),
    }
    let d = r[0].incident(id).await.unwrap();
    let pending = d.approvals.iter().find(|a| a.id == second).unwrap();
    assert_eq!(
        pending.state,
        ApprovalState::Pending,
        "the second prompt still waits"
    );
    assert_eq!(d.runs[0].state, RunState::AwaitingApproval);
    r[1].decide(
        c.lease.run_id,
        second,
        Decision::Approve,
        "dora".into(),
        None,
    )
    .await
    .unwrap();
    let again = claim_soon(&r[1], "b").await;
    r[1].finish(finished(&again, RunState::Succeeded))
        .await
        .unwrap();
    assert!(matches!(
        r[0].decide(
            c.lease.run_id,
            second,
            Decision::Approve,
            "carl".into(),
            None
        )
        .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        r[0].decide(999_999, 1, Decision::Approve, "carl".into(), None)
            .await,
        Err(StoreError::NotFound(_))
    ));

    // A deadline: two replicas expire at once, one decides.
    let (id, c) = started(&r[0], "g2", "Other", &m, "a").await;
    r[0].finish(paused(&c, 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(r[1].approvals_due().await.unwrap());
    let (x, y) = tokio::join!(r[0].expire_approvals(), r[1].expire_approvals());
    assert_eq!(x.unwrap() + y.unwrap(), 1, "the deadline decides once");
    let d = r[0].incident(id).await.unwrap();
    assert_eq!(d.approvals[0].state, ApprovalState::TimedOut);
    assert_eq!(d.runs[0].state, RunState::Queued);
    assert!(!r[1].approvals_due().await.unwrap());
    // Cancelled while waiting: withdrawn, never resumed.
    let again = claim_soon(&r[1], "b").await;
    assert_eq!(
        r[1].finish(paused(&again, 600_000)).await.unwrap(),
        FinishOutcome::Recorded
    );
    let before = r[0]
        .cancel_run(again.lease.run_id, "dana".into())
        .await
        .unwrap();
    assert_eq!(before, RunState::AwaitingApproval);
    let d = r[0].incident(id).await.unwrap();
    assert_eq!(d.runs[0].state, RunState::Cancelled);
    assert_eq!(d.approvals.last().unwrap().state, ApprovalState::Cancelled);
    assert!(r[1]
        .claim(claim_req("b", 1, LONG, &[]))
        .await
        .unwrap()
        .is_empty());

    // A decision after the deadline is refused: the deadline decides.
    let (id, c) = started(&r[0], "g3", "Late", &m, "a").await;
    r[0].finish(paused(&c, 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let late = r[0].incident(id).await.unwrap().approvals[0].id;
    match r[1]
        .decide(c.lease.run_id, late, Decision::Approve, "late".into(), None)
        .await
    {
        Err(StoreError::Conflict(why)) => assert!(why.contains("deadline"), "{why}"),
        other => panic!("a late decision is refused: {other:?}"),
    }
    let d = r[0].incident(id).await.unwrap();
    assert_eq!(d.approvals[0].state, ApprovalState::Pending);
    assert_eq!(d.runs[0].state, RunState::AwaitingApproval);

    // Cancelled while it executed: reaching the approval ends it, asking nobody.
    let (id, c) = started(&r[1], "g4", "Cancelled", &m, "b").await;
    assert_eq!(
        r[0].cancel_run(c.lease.run_id, "erin".into())
            .await
            .unwrap(),
        RunState::Running
    );
    assert_eq!(
        r[1].finish(paused(&c, 600_000)).await.unwrap(),
        FinishOutcome::Recorded
    );
    let d = r[0].incident(id).await.unwrap();
    assert_eq!(d.runs[0].state, RunState::Cancelled);
    assert!(d.approvals.is_empty(), "{:?}", d.approvals);
    let Some(runbookd::incident::RunDetail::Executed(res)) = &d.runs[0].result else {
        panic!("the steps so far are recorded: {:?}", d.runs[0].result);
    };
    assert_eq!(
        res.steps[0].outcome,
        Some(runbookd::record::StepOutcome::Cancelled),
        "the step it stopped at shows cancelled, not waiting"
    );
}

/// #22, finding 8: a run's silences are recorded when made; a `run_end`
/// one is due once its run ended, however; a `resolved` one once its alert
/// (or incident) resolved; an ended one never again.
async fn silences_end_when_their_run_or_alert_does(b: &Backend) {
    use runbookd::silence::{RunSilence, Until};
    let r = b.replicas("silences", 2).await;
    let m = runbook("a");
    let firing = notification("g-s", "firing", &[("A", T0)]);
    let alert = firing.0.alerts[0].clone();
    let ing = ingest(&r[0], firing, &m).await.unwrap();
    let incident = ing.incident.unwrap();
    let c = claim_soon(&r[0], "a").await;
    let silence = |id: &str, until| RunSilence {
        id: id.into(),
        run_id: c.lease.run_id,
        incident,
        receiver: "runbookd".into(),
        group_key: "g-s".into(),
        alert: alert.clone(),
        until,
        watched: true,
        alertmanager: "http://127.0.0.1:9093/".into(),
    };
    r[0].record_silence(silence("s-run", Until::RunEnd))
        .await
        .unwrap();
    r[0].record_silence(silence("s-res", Until::Resolved))
        .await
        .unwrap();
    // One Alertmanager never held (the alert was posted to the webhook
    // directly): its alert's absence there says nothing.
    r[0].record_silence(RunSilence {
        watched: false,
        ..silence("s-unwatched", Until::Resolved)
    })
    .await
    .unwrap();
    r[1].record_silence(silence("s-run", Until::RunEnd))
        .await
        .unwrap();
    let ids = |v: Vec<RunSilence>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert!(
        r[1].silences_due().await.unwrap().is_empty(),
        "the run runs"
    );
    let held = r[1].silences_held().await.unwrap();
    assert_eq!(ids(held.clone()), ["s-res"]);
    assert_eq!(held[0].alert, alert, "the alert is kept whole");
    assert_eq!(held[0].until, Until::Resolved);
    r[0].finish(finished(&c, RunState::Succeeded))
        .await
        .unwrap();
    assert_eq!(ids(r[1].silences_due().await.unwrap()), ["s-run"]);
    r[1].silence_ended("s-run".into()).await.unwrap();
    assert!(r[0].silences_due().await.unwrap().is_empty());
    ingest(&r[0], notification("g-s", "resolved", &[("A", T0)]), &m)
        .await
        .unwrap();
    assert!(r[1].silences_held().await.unwrap().is_empty());
    let mut due = ids(r[1].silences_due().await.unwrap());
    due.sort();
    assert_eq!(due, ["s-res", "s-unwatched"], "both end with their alert");
    for id in ["s-res", "s-res", "s-unwatched"] {
        r[0].silence_ended(id.into()).await.unwrap();
    }
    assert!(r[1].silences_due().await.unwrap().is_empty());
}

/// Each scenario runs as a test of its own per backend, so that the first
/// failure does not hide the rest (PostgreSQL: a throwaway cluster each).
macro_rules! on_both_stores {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario(&super::Backend::Sqlite(tempfile::tempdir().unwrap())).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if !crate::pg::available() {
                    return;
                }
                super::$scenario(&super::Backend::Postgres(crate::pg::Pg::start())).await;
            }
        }
    };
}

// The conformance suite: every scenario on both stores, each a test of
// its own per backend (see `on_both_stores!`).
on_both_stores!(people_lead_tick_and_rerun);
on_both_stores!(silences_end_when_their_run_or_alert_does);
on_both_stores!(approvals_are_decided_once_and_resume);
on_both_stores!(a_drill_occurrence_is_claimed_once);
on_both_stores!(notifications_are_written_with_their_event_and_taken_once);
on_both_stores!(escalations_fire_once_and_acknowledgements_cancel_them);
on_both_stores!(an_escalation_beyond_year_9999_never_fires);

/// An escalation the store is handed far beyond any incident (20,000
/// years; a runbook's durations stop at ten years, `duration::parse`)
/// stays pending, and its incident stays readable. SQLite's store wrote
/// its due time as `+2xxxx-…`, which sorts before every due time as text:
/// it fired at once, and could not be read back as a time.
async fn an_escalation_beyond_year_9999_never_fires(b: &Backend) {
    use runbookd::notify::TimerState;
    let r = b.replicas("escalate-never", 1).await;
    let m = talkative("disk", Duration::from_secs(20_000 * 365 * 86_400));
    let id = ingest(
        &r[0],
        notification("g-never", "firing", &[("Disk", T0)]),
        &m,
    )
    .await
    .unwrap()
    .incident
    .unwrap();
    assert_eq!(r[0].escalate().await.unwrap(), 0, "{}", b.name());
    let d = r[0].incident(id).await.unwrap();
    assert_eq!(d.escalations[0].state, TimerState::Pending, "{}", b.name());
    assert!(
        chrono::Datelike::year(&d.escalations[0].due_at.instant()) >= 9999,
        "{}: {}",
        b.name(),
        d.escalations[0].due_at
    );
}
on_both_stores!(nul_characters_are_stored_and_read);
on_both_stores!(peers_and_resends_queue_one_run);
on_both_stores!(claims_hold_concurrency_across_replicas);
on_both_stores!(a_long_queue_at_its_concurrency_hides_no_other_runbook);
on_both_stores!(a_stale_owner_writes_nothing);
on_both_stores!(idempotent_runs_are_queued_again);
on_both_stores!(heartbeats_keep_a_lease);
on_both_stores!(cancellation_reaches_the_owner);
on_both_stores!(the_lifecycle_is_recorded);
on_both_stores!(a_start_is_noted_once_whoever_notes_it);
on_both_stores!(a_cancel_follows_the_start_it_cancels);
on_both_stores!(ends_of_one_incident_at_once_lose_no_status_change);
on_both_stores!(one_leader_at_a_time);
on_both_stores!(live_output_resumes_after_a_cursor);
on_both_stores!(reaping_all_interrupts_what_ran);
on_both_stores!(a_full_queue_records_nothing);
on_both_stores!(a_manual_runs_note_is_recorded_with_it);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_recovers_from_a_restart_and_says_why_while_down() {
    if !pg::available() {
        return;
    }
    let mut pg = Pg::start();
    let url = StoreUrl::Postgres(pg.database());
    let store = Store::open(&url).await.unwrap();
    let m = runbook("fix");
    ingest(&store, notification("g1", "firing", &[("A", T0)]), &m)
        .await
        .unwrap();
    pg.stop();
    let err = ingest(&store, notification("g2", "firing", &[("B", T0)]), &m)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert!(
        store.write_error().is_some(),
        "not ready while PostgreSQL is down"
    );
    assert!(store.ping().await.is_err());
    pg.restart();
    let mut tries = 0;
    let ok = loop {
        tries += 1;
        match ingest(&store, notification("g2", "firing", &[("B", T0)]), &m).await {
            Ok(i) => break i,
            Err(e) if tries < 50 => {
                eprintln!("after restart: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the store did not recover: {e}"),
        }
    };
    assert_eq!(ok.queued.len(), 1);
    assert!(store.write_error().is_none(), "ready again after a write");
    assert_eq!(
        store.incidents(IncidentFilter::default()).await.unwrap().1,
        2,
        "nothing acknowledged was lost"
    );
}

/// The PostgreSQL URL's password never shows in errors.
#[test]
fn a_store_url_is_parsed_at_the_edge() {
    let out =
        crate::helpers::runbookd(&["incidents", "--store", "mysql://root:hunter2@db/x", "list"]);
    assert!(!out.status.success());
    let err = crate::helpers::stderr(&out);
    assert!(err.contains("expected sqlite:PATH or postgres://"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// Each stored state of a run is checked by one constraint on PostgreSQL,
/// its `<table>_<column>_known`: the one a newer runbookd's migration
/// replaces to add a state (schema_v9.sql). Version 6's `runs_state` and
/// `runs_phase` checked them a second time, on every write of a run, and
/// kept refusing a state after its `_known` constraint was widened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_state_is_checked_once_and_widened_by_replacing_that_check() {
    if !pg::available() {
        return;
    }
    let pg = pg::Pg::start();
    let url = pg.database();
    let store = Store::open(&StoreUrl::Postgres(url.clone())).await.unwrap();
    ingest(
        &store,
        notification("g1", "firing", &[("A", T0)]),
        &runbook("fix"),
    )
    .await
    .unwrap();
    assert_eq!(
        pg.psql(
            &url,
            "SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint WHERE conrelid = 'runs'::regclass AND contype = 'c'"
        ),
        "runs_phase_known,runs_state_known"
    );
    pg.psql(
        &url,
        "ALTER TABLE runs DROP CONSTRAINT runs_state_known, ADD CONSTRAINT runs_state_known CHECK (state IN ('queued', 'running', 'paused'))",
    );
    let widened = pg.try_psql(&url, "UPDATE runs SET state = 'paused'");
    assert!(
        widened.is_ok(),
        "the widened check is the only one: {widened:?}"
    );
    assert!(pg
        .try_psql(&url, "UPDATE runs SET state = 'on_fire'")
        .unwrap_err()
        .contains("runs_state_known"));
}

/// Replicas starting together migrate once: one takes the migration lock,
/// the others wait and find nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once() {
    if !pg::available() {
        return;
    }
    let pg = Pg::start();
    let url = pg.database();
    let store = StoreUrl::Postgres(url.clone());
    let (a, b, c) = tokio::join!(
        Store::open(&store),
        Store::open(&store),
        Store::open(&store)
    );
    for s in [a, b, c] {
        s.unwrap().ping().await.unwrap();
    }
    assert_eq!(
        pg.psql(
            &url,
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_version"
        ),
        "1,2,3,4,5,6,7,8,9,10,11,12"
    );
}

/// A SQLite store named by hand must sit in a directory of runbookd's own:
/// its directory is hidden from steps and never tightened behind a user's
/// back.
#[test]
fn a_hand_named_sqlite_store_needs_a_private_directory() {
    use std::os::unix::fs::PermissionsExt;
    let shared = crate::helpers::open_tempdir();
    let runbooks = crate::helpers::runbook_dir(&[(
        "r.yaml",
        "name: r\nmatchers: [alertname=R]\nsteps:\n  - name: a\n    run: ['true']\n",
    )]);
    let store = format!("sqlite:{}", shared.path().join("runbookd.db").display());
    let out = crate::helpers::runbookd(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--runbooks",
        runbooks.path().to_str().unwrap(),
        "--store",
        &store,
    ]);
    assert!(!out.status.success());
    let err = crate::helpers::stderr(&out);
    assert!(
        err.contains("must belong to runbookd's user with no access for others"),
        "{err}"
    );
    let mode = std::fs::metadata(shared.path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o755, "a directory others use is left as it was");
    assert!(
        !shared.path().join("runbookd.db").exists(),
        "nothing was created"
    );
}

/// Leases matter only to a shared store: a lease too short for the kill
/// grace refuses a PostgreSQL replica (before connecting), while a SQLite
/// server with a long kill grace starts as it always did.
#[test]
fn the_lease_is_checked_only_for_a_shared_store() {
    let runbooks = crate::helpers::runbook_dir(&[(
        "r.yaml",
        "name: r\nmatchers: [alertname=R]\nsteps:\n  - name: a\n    run: ['true']\n",
    )]);
    let rb = runbooks.path().to_str().unwrap();
    let out = crate::helpers::runbookd(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--runbooks",
        rb,
        "--store",
        "postgres://runbookd@127.0.0.1:1/none",
        "--lease",
        "3s",
        "--kill-grace",
        "5s",
    ]);
    assert!(!out.status.success());
    let err = crate::helpers::stderr(&out);
    assert!(
        err.contains("cluster.lease (3s) is too short for sandbox.kill_grace (5s)"),
        "{err}"
    );
    let data = tempfile::tempdir().unwrap();
    let mut cmd = crate::helpers::serve_command(
        std::path::Path::new(env!("CARGO_BIN_EXE_runbookd")),
        runbooks.path(),
        data.path(),
    );
    cmd.args(["--kill-grace", "30s"]);
    let served = crate::helpers::Served::start(cmd);
    assert!(
        served.url.starts_with("http://127.0.0.1:"),
        "{}",
        served.first_line
    );
}

fn ingest_capped(
    store: &Store,
    n: (Notification, Vec<u8>),
    m: Option<&RunbookMatch>,
    max_queued: u64,
) -> runbookd::store::Pending<Ingested> {
    let matches =
        n.0.alerts
            .iter()
            .map(|_| m.into_iter().cloned().collect())
            .collect();
    store.ingest(Ingest {
        body: n.1,
        notification: n.0,
        matches,
        max_queued,
        shadow: false,
        run_rate: None,
        note: None,
    })
}

/// Decided: a full queue refuses only what would queue a run. A
/// notification that queues none (a resolution, above all) is always
/// recorded: refusing it would hold the incident open and its silences
/// and escalations with it.
async fn a_full_queue_still_takes_a_resolution(b: &Backend) {
    let r = b.replicas("full-resolution", 1).await;
    let fix = runbook("fix");
    ingest_capped(
        &r[0],
        notification("g1", "firing", &[("A", T0)]),
        Some(&fix),
        1,
    )
    .await
    .unwrap();
    // The queue holds 1 run; the cap is 0 now.
    // (Its runbook matches, as it did when the alert fired; a resolution
    // queues no remediation.)
    let got = ingest_capped(
        &r[0],
        notification("g1", "resolved", &[("A", T0)]),
        Some(&fix),
        0,
    )
    .await
    .unwrap_or_else(|e| panic!("{} refused a resolution: {e:?}", b.name()));
    let detail = r[0].incident(got.incident.unwrap()).await.unwrap();
    assert_eq!(
        detail.alerts[0].status,
        runbookd::alert::Status::Resolved,
        "{}",
        b.name()
    );
    // What would queue a run is refused whole.
    let err = ingest_capped(
        &r[0],
        notification("g2", "firing", &[("B", T0)]),
        Some(&fix),
        1,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, StoreError::QueueFull),
        "{}: {err:?}",
        b.name()
    );
}
on_both_stores!(a_full_queue_still_takes_a_resolution);

/// Decided: `resolved_at` is when the incident was first resolved; a
/// second resolution (a person after the alerts, or the alerts after a
/// person) changes nothing.
async fn a_repeated_resolve_keeps_the_first_resolved_at(b: &Backend) {
    let r = b.replicas("resolve-twice", 1).await;
    let got = ingest(
        &r[0],
        notification("g1", "firing", &[("A", T0)]),
        &runbook("fix"),
    )
    .await
    .unwrap();
    let resolve = || runbookd::incident::Update {
        author: "olga".into(),
        message: "fixed".into(),
        status: Some(IncidentStatus::Resolved),
        root_cause: None,
    };
    r[0].add_update(got.incident.unwrap(), resolve())
        .await
        .unwrap();
    let first = r[0]
        .incident(got.incident.unwrap())
        .await
        .unwrap()
        .summary
        .resolved_at;
    assert!(first.is_some(), "{}", b.name());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    r[0].add_update(got.incident.unwrap(), resolve())
        .await
        .unwrap();
    ingest(
        &r[0],
        notification("g1", "resolved", &[("A", T0)]),
        &runbook("fix"),
    )
    .await
    .unwrap();
    let again = r[0]
        .incident(got.incident.unwrap())
        .await
        .unwrap()
        .summary
        .resolved_at;
    assert_eq!(again, first, "{}: resolved_at moved", b.name());
}
on_both_stores!(a_repeated_resolve_keeps_the_first_resolved_at);

/// Writes into a store behind its back (a damaged or newer database).
fn corrupt(b: &Backend, url: &StoreUrl, sql: &str) {
    try_sql(b, url, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// `sql` on the store's database, behind runbookd's back: the database's
/// error when it refuses it.
fn try_sql(b: &Backend, url: &StoreUrl, sql: &str) -> Result<(), String> {
    match (b, url) {
        (Backend::Sqlite(_), StoreUrl::Sqlite(path)) => {
            let c = rusqlite::Connection::open(path).unwrap();
            c.busy_timeout(Duration::from_secs(5)).unwrap();
            c.execute_batch(sql).map_err(|e| e.to_string())
        }
        (Backend::Postgres(pg), StoreUrl::Postgres(url)) => pg.try_psql(url, sql).map(|_| ()),
        _ => unreachable!("a store of another backend"),
    }
}

/// Decided: the schema of both stores refuses a state runbookd does not
/// know; one a newer runbookd wrote is an error naming it, on both
/// backends, never shown as `investigating`.
async fn an_unknown_stored_status_is_an_error_naming_it(b: &Backend) {
    let url = b.fresh("unknown-status");
    let store = Store::open(&url).await.unwrap();
    let got = ingest(
        &store,
        notification("g1", "firing", &[("A", T0)]),
        &runbook("fix"),
    )
    .await
    .unwrap();
    // The schema refuses a state runbookd does not know (its own bug)…
    let refused = try_sql(b, &url, "UPDATE incidents SET status = 'on_fire'").unwrap_err();
    assert!(refused.contains("incidents"), "{}: {refused}", b.name());
    // …so only a newer runbookd, whose migration widened the list, writes one.
    let widen = match b {
        Backend::Sqlite(_) => "DROP TRIGGER incidents_status_known_update",
        Backend::Postgres(_) => "ALTER TABLE incidents DROP CONSTRAINT incidents_status_known",
    };
    corrupt(b, &url, widen);
    corrupt(b, &url, "UPDATE incidents SET status = 'on_fire'");
    let err = store
        .incidents(IncidentFilter::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("on_fire"), "{}: {err}", b.name());
    let err = store.incident(got.incident.unwrap()).await.unwrap_err();
    assert!(err.to_string().contains("on_fire"), "{}: {err}", b.name());
}
on_both_stores!(an_unknown_stored_status_is_an_error_naming_it);

/// Decided: a stored time that is not one (a damaged SQLite file) is an
/// error naming it, as an unknown status is. SQLite's reads showed the time
/// of reading instead, before the read models held typed timestamps;
/// PostgreSQL's `timestamptz` columns hold nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_stored_time_is_an_error_naming_it() {
    let b = Backend::Sqlite(tempfile::tempdir().unwrap());
    let url = b.fresh("unreadable-time");
    let store = Store::open(&url).await.unwrap();
    let got = ingest(
        &store,
        notification("g1", "firing", &[("A", T0)]),
        &runbook("fix"),
    )
    .await
    .unwrap();
    let id = got.incident.unwrap();
    corrupt(&b, &url, "UPDATE incidents SET created_at = 'last tuesday'");
    let err = store.incident(id).await.unwrap_err();
    assert!(err.to_string().contains("`last tuesday`"), "{err}");
    let err = store
        .incidents(IncidentFilter::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`last tuesday`"), "{err}");
}

/// Decided: when an incident's alerts ended is computed once, in Rust, for
/// both backends: the latest `endsAt`, clamped to [opened, now], kept in
/// UTC (SQLite kept Alertmanager's text, offset and all, and compared in
/// SQL).
async fn when_alerts_ended_is_the_same_instant_in_utc_on_both(b: &Backend) {
    let r = b.replicas("ended-utc", 1).await;
    let opened = ingest(
        &r[0],
        notification("g1", "firing", &[("A", T0)]),
        &runbook("fix"),
    )
    .await
    .unwrap();
    let id = opened.incident.unwrap();
    let created = r[0]
        .incident(id)
        .await
        .unwrap()
        .summary
        .created_at
        .instant();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Ended one second after the incident opened, written in +01:00.
    let ended = (created + chrono::Duration::seconds(1))
        .with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap());
    let body = serde_json::to_vec(&json!({
        "receiver": "runbookd", "status": "resolved", "version": "4", "groupKey": "g1",
        "alerts": [{
            "status": "resolved",
            "labels": {"alertname": "A", "instance": "web-1"},
            "annotations": {},
            "startsAt": T0,
            "endsAt": ended.to_rfc3339(),
        }],
    }))
    .unwrap();
    let n = Notification::from_json(&body).unwrap();
    ingest(&r[0], (n, body), &runbook("fix")).await.unwrap();
    let s = r[0].incident(id).await.unwrap().summary;
    let at = s.alerts_ended_at.expect("the alerts ended");
    assert!(at.to_string().ends_with('Z'), "{}: {at}", b.name());
    assert_eq!(at.instant(), ended, "{}", b.name());
    assert_eq!(s.recovered_seconds, Some(1), "{}", b.name());
}
on_both_stores!(when_alerts_ended_is_the_same_instant_in_utc_on_both);

/// The reads the suite never called: unmatched alerts, the gauges, a run's
/// origin and a runbook's recent runs answer alike on both backends.
async fn the_small_reads_answer_alike(b: &Backend) {
    let r = b.replicas("small-reads", 1).await;
    let fix = runbook("fix");
    // Two notifications of an alert no runbook matches: one row, seen twice.
    for _ in 0..2 {
        ingest_capped(
            &r[0],
            notification("g-none", "firing", &[("Nobody", T0)]),
            None,
            100,
        )
        .await
        .unwrap();
    }
    let unmatched = r[0].unmatched(10).await.unwrap();
    assert_eq!(unmatched.len(), 1, "{}: {unmatched:?}", b.name());
    assert_eq!(
        (unmatched[0].alertname.as_str(), unmatched[0].seen),
        ("Nobody", 2),
        "{}",
        b.name()
    );
    let got = ingest(
        &r[0],
        notification("g1", "firing", &[("A", T0), ("B", T0)]),
        &fix,
    )
    .await
    .unwrap();
    let g = r[0].gauges().await.unwrap();
    assert_eq!((g.queued, g.open, g.awaiting), (2, 1, 0), "{}", b.name());
    let run = got.queued[0];
    let (incident, runbook_name, fingerprint) = r[0].run_origin(run).await.unwrap().unwrap();
    assert_eq!(
        (incident, runbook_name.as_str()),
        (got.incident.unwrap(), "fix"),
        "{}",
        b.name()
    );
    assert!(!fingerprint.is_empty(), "{}", b.name());
    assert_eq!(
        r[0].run_origin(999_999).await.unwrap(),
        None,
        "{}",
        b.name()
    );
    let recent = r[0].recent_runs("fix".into(), 10).await.unwrap();
    assert_eq!(
        recent.iter().map(|(id, ..)| *id).collect::<Vec<_>>(),
        got.queued.iter().rev().copied().collect::<Vec<_>>(),
        "{}: newest first",
        b.name()
    );
    assert!(
        recent.iter().all(|(_, _, s)| *s == RunState::Queued),
        "{}",
        b.name()
    );
    assert!(r[0]
        .recent_runs("other".into(), 10)
        .await
        .unwrap()
        .is_empty());
}
on_both_stores!(the_small_reads_answer_alike);

/// What an incident cost its SLOs is recorded once (the second replica to
/// try is told so), with one timeline note; SLO-affecting is that record,
/// or the severity while there is none (sev1, sev2).
async fn an_incidents_slo_budget_is_recorded_once(b: &Backend) {
    let r = b.replicas("slo-budget", 2).await;
    let mut sev3 = runbook("fix");
    sev3.severity = Severity::Sev3;
    let quiet = ingest(&r[0], notification("g1", "firing", &[("A", T0)]), &sev3)
        .await
        .unwrap()
        .incident
        .unwrap();
    let loud = ingest(
        &r[0],
        notification("g2", "firing", &[("B", T0)]),
        &runbook("fix"),
    )
    .await
    .unwrap()
    .incident
    .unwrap();
    let filtered = |v: Option<bool>| {
        let store = r[0].clone();
        async move {
            let (list, _) = store
                .incidents(IncidentFilter {
                    slo_affecting: v,
                    ..IncidentFilter::default()
                })
                .await
                .unwrap();
            let mut ids: Vec<IncidentId> = list.iter().map(|i| i.id).collect();
            ids.sort();
            ids
        }
    };
    // Unknown yet: the severity decides (sev2 is, sev3 is not).
    assert_eq!(filtered(Some(true)).await, [loud], "{}", b.name());
    assert_eq!(filtered(Some(false)).await, [quiet], "{}", b.name());
    assert!(r[0]
        .slo_budget_due(chrono::Utc::now() - chrono::Duration::days(1), 10)
        .await
        .unwrap()
        .is_empty());
    let resolve = runbookd::incident::Update {
        author: "olga".into(),
        message: "fixed".into(),
        status: Some(IncidentStatus::Resolved),
        root_cause: None,
    };
    r[0].add_update(quiet, resolve).await.unwrap();
    let due = r[0]
        .slo_budget_due(chrono::Utc::now() - chrono::Duration::days(1), 10)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|i| i.id).collect::<Vec<_>>(),
        [quiet],
        "{}",
        b.name()
    );
    let note = || Some("SLO budget spent: web/availability: 3.2 min".to_owned());
    // A policy over its cost requires a postmortem, and tells `ops`.
    let required = || {
        Some(runbookd::store::PostmortemRequired {
            reason:
                "policy `p` (incident_budget_consumed > 0.2): web/availability: 23.0% of its budget"
                    .into(),
            notify: vec!["ops".into()],
            services: vec!["web".into()],
        })
    };
    let (first, second) = tokio::join!(
        r[0].record_slo_budget(quiet, "[{}]".into(), Some(true), note(), required()),
        r[1].record_slo_budget(quiet, "[{}]".into(), Some(true), note(), required()),
    );
    assert!(
        first.unwrap() ^ second.unwrap(),
        "{}: recorded exactly once",
        b.name()
    );
    let d = r[0].incident(quiet).await.unwrap();
    assert_eq!(
        d.timeline.iter().filter(|t| t.kind == "slo").count(),
        1,
        "{}",
        b.name()
    );
    assert!(d.summary.slo_affecting, "{}", b.name());
    // Marked, on the timeline and told once, in the same transaction.
    assert_eq!(
        d.summary.postmortem_required.as_deref(),
        Some("policy `p` (incident_budget_consumed > 0.2): web/availability: 23.0% of its budget"),
        "{}",
        b.name()
    );
    assert_eq!(
        d.timeline.iter().filter(|t| t.kind == "postmortem").count(),
        1,
        "{}",
        b.name()
    );
    let on_web = r[1].service_timeline("web".into(), 10).await.unwrap();
    assert_eq!(on_web.len(), 1, "{}: {on_web:?}", b.name());
    assert_eq!(on_web[0].kind, "postmortem_required");
    assert!(
        on_web[0]
            .message
            .starts_with(&format!("{quiet} requires a postmortem: policy `p`")),
        "{}: {on_web:?}",
        b.name()
    );
    let told: Vec<_> = d
        .notifications
        .iter()
        .map(|m| (m.notifier.as_str(), m.event))
        .collect();
    assert_eq!(
        told,
        [("ops", runbookd::notify::Event::PostmortemRequired)],
        "{}",
        b.name()
    );
    assert_eq!(filtered(Some(true)).await.len(), 2, "{}", b.name());
    assert!(r[0]
        .slo_budget_due(chrono::Utc::now() - chrono::Duration::days(1), 10)
        .await
        .unwrap()
        .is_empty());
}
on_both_stores!(an_incidents_slo_budget_is_recorded_once);

/// An operator's gate override, written by one replica, is in force for
/// every replica; a new one replaces it, ending it early is recorded once,
/// and one whose time is up is not in force.
async fn gate_overrides_are_shared_replaced_and_ended_once(b: &Backend) {
    use runbookd::store::GateOverride;
    let r = b.replicas("overrides", 2).await;
    let now = chrono::Utc::now();
    let hours = chrono::Duration::hours;
    let o = |service: &str, by: &str, since, until| GateOverride {
        service: service.into(),
        by: by.into(),
        reason: format!("{by} says the fix must ship\0"),
        since,
        until,
    };
    assert!(
        r[1].gate_overrides().await.unwrap().is_empty(),
        "{}",
        b.name()
    );
    r[0].override_gate(o("web", "ann", now, now + hours(2)))
        .await
        .unwrap();
    // Over already: never in force.
    r[0].override_gate(o("db", "bob", now - hours(3), now - hours(1)))
        .await
        .unwrap();
    let open = r[1].gate_overrides().await.unwrap();
    assert_eq!(open.len(), 1, "{}: {open:?}", b.name());
    assert_eq!(
        (open[0].service.as_str(), open[0].by.as_str()),
        ("web", "ann")
    );
    assert_eq!(
        open[0].reason,
        "ann says the fix must ship\u{fffd}",
        "{}",
        b.name()
    );
    // Written with microseconds; read back the same on both stores.
    assert_eq!(
        open[0].until.timestamp_micros(),
        (now + hours(2)).timestamp_micros(),
        "{}",
        b.name()
    );
    // Another operator's override replaces it.
    r[1].override_gate(o("web", "cat", chrono::Utc::now(), now + hours(1)))
        .await
        .unwrap();
    let open = r[0].gate_overrides().await.unwrap();
    assert_eq!(
        open.iter().map(|o| o.by.as_str()).collect::<Vec<_>>(),
        ["cat"],
        "{}",
        b.name()
    );
    // Ended once, by whichever replica asks first.
    let (first, second) = tokio::join!(
        r[0].end_override("web".into(), "dan".into()),
        r[1].end_override("web".into(), "eve".into()),
    );
    assert!(
        first.unwrap() ^ second.unwrap(),
        "{}: ended exactly once",
        b.name()
    );
    assert!(
        r[0].gate_overrides().await.unwrap().is_empty(),
        "{}",
        b.name()
    );
    assert!(!r[0].end_override("db".into(), "dan".into()).await.unwrap());
}
on_both_stores!(gate_overrides_are_shared_replaced_and_ended_once);

/// A service's freeze is written once per change, whichever replica
/// decides it: the state, the service's timeline, and a notification about
/// the service (no incident) to each notifier its policies name.
async fn budget_freezes_are_written_once_per_change(b: &Backend) {
    use runbookd::store::Freeze;
    let r = b.replicas("freezes", 2).await;
    let f = |frozen: bool| Freeze {
        service: "web".into(),
        frozen,
        reasons: if frozen {
            "policy `halt`: budget_remaining of web/latency is -1 (budget_remaining < 0)".into()
        } else {
            String::new()
        },
        // Unfrozen after a reload took the policy away: those told of the
        // freeze are told of its end all the same.
        notify: if frozen {
            vec!["ops".into(), "pd".into()]
        } else {
            Vec::new()
        },
    };
    // First seen unfrozen: nothing to tell.
    assert!(!r[0].decide_freeze(f(false)).await.unwrap(), "{}", b.name());
    // Frozen, decided by both replicas at once: once.
    let (a, c) = tokio::join!(r[0].decide_freeze(f(true)), r[1].decide_freeze(f(true)));
    assert!(
        a.unwrap() ^ c.unwrap(),
        "{}: changed exactly once",
        b.name()
    );
    assert!(!r[1].decide_freeze(f(true)).await.unwrap());
    assert!(r[1].decide_freeze(f(false)).await.unwrap(), "{}", b.name());
    let timeline = r[0].service_timeline("web".into(), 10).await.unwrap();
    let kinds: Vec<&str> = timeline.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["unfrozen", "frozen"], "{}", b.name());
    assert!(
        timeline[1]
            .message
            .starts_with("`web` frozen by its error-budget policies: policy `halt`"),
        "{}: {timeline:?}",
        b.name()
    );
    // Told about the service, once per notifier and change, in order per
    // notifier: the end of a freeze waits for its start to be delivered.
    let claim = || async {
        let taken = r[1].outbox_claim("w".into(), 50, LONG).await.unwrap();
        let mut told: Vec<(String, String, String)> = taken
            .iter()
            .map(|i| {
                (
                    i.incident.to_string(),
                    i.notifier.clone(),
                    i.event.to_string(),
                )
            })
            .collect();
        told.sort();
        (taken, told)
    };
    let pair = |event: &str| -> Vec<(String, String, String)> {
        ["ops", "pd"]
            .iter()
            .map(|n| ("budget:web".to_owned(), (*n).to_owned(), event.to_owned()))
            .collect()
    };
    let (taken, told) = claim().await;
    assert_eq!(told, pair("budget_frozen"), "{}", b.name());
    for i in &taken {
        assert!(r[1]
            .outbox_settle(i.id, i.attempt, runbookd::notify::Settle::Delivered)
            .await
            .unwrap());
    }
    let (_, told) = claim().await;
    assert_eq!(told, pair("budget_unfrozen"), "{}", b.name());
    let frozen = taken
        .iter()
        .find(|i| i.event == runbookd::notify::Event::BudgetFrozen)
        .unwrap();
    assert_eq!(frozen.title, "Error budget of web");
    assert_eq!(frozen.services, ["web"]);
    let listed = r[0]
        .messages(runbookd::notify::MessageFilter::default())
        .await
        .unwrap();
    assert_eq!(listed.len(), 4, "{}: {listed:?}", b.name());
    assert!(listed
        .iter()
        .all(|m| m.incident.to_string() == "budget:web"));
}
on_both_stores!(budget_freezes_are_written_once_per_change);

/// Runs `op` (on a run of incident `inc`) while a session holds the
/// incident's lock, as a run's end or a resolution does before it writes
/// the run; once `op` waits for a lock, the session writes run `run` and
/// commits. Its answer, after asserting that the session's write went
/// through and that PostgreSQL found no deadlock on the way: `op` must
/// lock the incident before the run, or the two deadlock.
async fn while_incident_held<T: Send + 'static>(
    pg: &Pg,
    url: &str,
    (inc, run): (IncidentId, i64),
    op: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    use std::io::{BufRead, Write};
    let deadlocks = || {
        pg.psql(
            url,
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
        )
    };
    let before = deadlocks();
    let mut held = pg.session(url);
    let mut stdin = held.stdin.take().unwrap();
    let mut rows = std::io::BufReader::new(held.stdout.take().unwrap());
    writeln!(
        stdin,
        "BEGIN; SELECT id FROM incidents WHERE id = {} FOR NO KEY UPDATE;",
        inc.0
    )
    .unwrap();
    let mut line = String::new();
    rows.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), inc.0.to_string());
    let op = tokio::spawn(op);
    let waiting = "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'runbookd' AND wait_event_type = 'Lock'";
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while pg.psql(url, waiting) != "1" {
        assert!(
            std::time::Instant::now() < until,
            "the operation never waited for a lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writeln!(
        stdin,
        "UPDATE runs SET reason = 'written meanwhile' WHERE id = {run} RETURNING id; COMMIT;"
    )
    .unwrap();
    drop(stdin);
    line.clear();
    rows.read_line(&mut line).unwrap();
    let _ = held.wait();
    assert_eq!(
        line.trim(),
        run.to_string(),
        "the session's write of the run went through"
    );
    let answer = op.await.unwrap();
    assert_eq!(deadlocks(), before, "no deadlock on the way");
    answer
}

/// A throwaway PostgreSQL, a new database's URL on it and a store on
/// that database; `None` when PostgreSQL is not installed (a failure
/// under CI, see [`pg::available`]).
async fn on_postgres() -> Option<(Pg, String, Store)> {
    if !pg::available() {
        return None;
    }
    let pg = Pg::start();
    let url = pg.database();
    let store = Store::open(&StoreUrl::Postgres(url.clone())).await.unwrap();
    Some((pg, url, store))
}

/// A run of a new incident waiting for an approval due in `timeout_ms`.
async fn waiting(store: &Store, timeout_ms: u64) -> (IncidentId, Claimed) {
    let (inc, c) = started(store, "g1", "Gate", &runbook("gate"), "a").await;
    store.finish(paused(&c, timeout_ms)).await.unwrap();
    (inc, c)
}

/// A decision and a resolution of the same waiting run at once: the
/// resolution holds the incident and then ends the run; the decision
/// locks the incident before the run, as every writer of both does, so it
/// waits its turn instead of holding the run. (Before, it locked the run
/// first: PostgreSQL found a deadlock after `deadlock_timeout` and ran one
/// of them again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_waits_for_the_incident_before_locking_its_run() {
    let Some((pg, url, store)) = on_postgres().await else {
        return;
    };
    let (inc, c) = waiting(&store, 600_000).await;
    let approval = store.incident(inc).await.unwrap().approvals[0].id;
    let run = c.lease.run_id;
    let decide = store.decide(
        run,
        approval,
        runbookd::approval::Decision::Approve,
        "dana".into(),
        None,
    );
    let decided = while_incident_held(&pg, &url, (inc, run), decide)
        .await
        .unwrap();
    assert_eq!(decided.state, runbookd::approval::ApprovalState::Approved);
}

/// The reaper and a run's late end at once: the end holds the incident
/// and then writes the run; the reaper locks the incident before the run
/// (and reads the run again under both), so it waits its turn. (Before,
/// it locked every expired run first, then each incident in turn.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_waits_for_the_incident_before_locking_its_run() {
    let Some((pg, url, store)) = on_postgres().await else {
        return;
    };
    ingest(
        &store,
        notification("g1", "firing", &[("Lost", T0)]),
        &runbook("lost"),
    )
    .await
    .unwrap();
    let c = store
        .claim(claim_req("a", 1, Duration::from_millis(1), &[]))
        .await
        .unwrap()
        .remove(0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let reap = store.reap(Reap::Expired);
    let reaped = while_incident_held(&pg, &url, (c.incident, c.lease.run_id), reap)
        .await
        .unwrap();
    assert_eq!(reaped.interrupted, 1, "{reaped:?}");
    assert_eq!(
        run_states(&store, c.incident).await,
        [RunState::Interrupted]
    );
}

/// An approval's deadline and a resolution of its run at once: the
/// expiry locks the run's incident before the run, so it waits its turn.
/// (Before, it locked every due run and approval first, then each
/// incident.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_s_expiry_waits_for_the_incident_before_locking_its_run() {
    let Some((pg, url, store)) = on_postgres().await else {
        return;
    };
    let (inc, c) = waiting(&store, 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let expire = store.expire_approvals();
    let expired = while_incident_held(&pg, &url, (inc, c.lease.run_id), expire)
        .await
        .unwrap();
    assert_eq!(expired, 1);
    let d = store.incident(inc).await.unwrap();
    assert_eq!(
        d.approvals[0].state,
        runbookd::approval::ApprovalState::TimedOut
    );
}
