//! Executing plans: one step in the sandbox ([`process`]), and a whole run of
//! a runbook ([`run`]) with retries, `when`, `continue_on_failure`,
//! `on_failure`, and the step and run timeouts of DESIGN §4.

pub mod capture;
pub mod cgroup;
pub mod guard;
pub mod helper;
pub mod instance;
pub mod process;
pub mod report;
pub mod run;
pub mod safeguard;
pub mod sandbox;
pub mod spawn;

pub use capture::{Capture, Stream};
pub use process::{ExecSettings, NoSink, OutputSink, ProcessResult, ProcessSpec};
pub use sandbox::{Probe, Sandbox, SandboxConfig, SpawnerConfig, StepOptions};
