//! The one integration test binary: runs the real `runbookd` binary and the
//! library against the captured Alertmanager payloads and example runbooks.

mod alertmanager;
mod app;
mod approvals;
mod attacks;
mod browser;
mod capacity;
mod chart;
mod check;
mod container;
mod crash;
mod exec;
mod faults;
mod gates;
mod ha;
mod helpers;
mod layers;
mod notify;
mod operable;
mod operators;
mod payload;
mod people;
#[allow(dead_code)] // start_durable is for the benchmarks
mod pg;
mod plan;
mod prom;
mod properties;
mod reload;
mod sandbox_report;
mod server;
mod shell;
mod slo;
mod steps_vs_runbookd;
mod store;
mod verify;
