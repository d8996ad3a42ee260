//! What time it is, for what runbookd decides by the calendar: when a
//! drill's schedule comes due, and whether it falls on the days and hours
//! its `requires:` allows. A server reads the system clock; a test hands it
//! one set to the instant it needs (a Wednesday at 03:00 UTC), which then
//! runs at the system clock's pace, so a schedule still comes due while
//! the test watches, on any day the suite runs.
//!
//! What the store times (leases, escalations, approvals' deadlines) is on
//! the database's clock on PostgreSQL, shared by every replica, and is not
//! this: see docs/ha.md.

use chrono::{DateTime, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// A clock to share.
pub type SharedClock = std::sync::Arc<dyn Clock>;

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct System;

impl Clock for System {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock.
#[must_use]
pub fn system() -> SharedClock {
    std::sync::Arc::new(System)
}

/// A clock that read `at` when it was set, and runs on from there at the
/// system clock's pace; it can be set again.
#[derive(Debug)]
pub struct Set {
    /// Microseconds ahead of the system clock.
    by: std::sync::atomic::AtomicI64,
}

impl Set {
    #[must_use]
    pub fn at(at: DateTime<Utc>) -> Self {
        let c = Set {
            by: std::sync::atomic::AtomicI64::new(0),
        };
        c.set(at);
        c
    }

    /// Reads `at` from now on.
    pub fn set(&self, at: DateTime<Utc>) {
        let by = (at - Utc::now()).num_microseconds().unwrap_or(i64::MAX);
        self.by.store(by, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Clock for Set {
    fn now(&self) -> DateTime<Utc> {
        let by = self.by.load(std::sync::atomic::Ordering::Relaxed);
        Utc::now() + chrono::TimeDelta::microseconds(by)
    }
}

#[cfg(test)]
mod tests {
    use super::{Clock, Set};

    #[test]
    fn a_clock_set_to_an_instant_runs_on_from_it() {
        let at = "2026-12-02T02:59:58Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap();
        let c = Set::at(at);
        let first = c.now();
        assert!((first - at).num_milliseconds().abs() < 1_000, "{first}");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(c.now() > first);
        let later = at + chrono::TimeDelta::hours(1);
        c.set(later);
        assert!((c.now() - later).num_milliseconds().abs() < 1_000);
    }
}
