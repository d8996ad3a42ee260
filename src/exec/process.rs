//! One sandboxed process, start to finish: spawn, capture both streams,
//! enforce the timeout, and leave nothing behind.
//!
//! The leader's exit is watched through a pidfd *without reaping it*: while
//! the zombie leader exists its process-group id cannot be reused, so killing
//! the group afterwards can never hit an unrelated process. On timeout or
//! cancel: SIGTERM to the group, the grace period, SIGKILL to the group (and
//! `cgroup.kill` for escapees). After the leader exits: a short drain window
//! for output, then whatever is left of the group is killed, and reading stops
//! at a hard deadline, so a background grandchild can neither hold the step
//! open nor outlive it. Dropping the future kills the group too.
#![allow(unsafe_code)] // registering the pidfd with the reactor, reason inline

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use super::capture::{Capture, Stream};
use super::cgroup::StepCgroup;
use super::helper::HELPER_DIED;
use super::instance::Scratch;
use super::sandbox::{Prepared, Sandbox, StepOptions};
use crate::plan::millis;
use crate::record::SandboxRecord;
use crate::record::StepOutcome;

/// Timing knobs of the process runner.
#[derive(Debug, Clone)]
pub struct ExecSettings {
    /// Between SIGTERM and SIGKILL on timeout or cancel.
    pub kill_grace: Duration,
    /// After the leader exits, how long output may still arrive before what is
    /// left of the group is killed.
    pub drain: Duration,
    /// Bytes kept from the start and from the end of each stream.
    pub output_head: usize,
    pub output_tail: usize,
}

impl Default for ExecSettings {
    fn default() -> Self {
        ExecSettings {
            kill_grace: Duration::from_secs(5),
            drain: Duration::from_millis(250),
            output_head: 64 << 10,
            output_tail: 64 << 10,
        }
    }
}

/// Receives output as it arrives (live transcript, the incident store).
pub trait OutputSink: Send + Sync {
    fn output(&self, stream: Stream, bytes: &[u8]);
}

/// Discards output (it is still captured in the result).
pub struct NoSink;

impl OutputSink for NoSink {
    fn output(&self, _: Stream, _: &[u8]) {}
}

/// One finished process.
#[derive(Debug, Clone)]
pub struct ProcessResult {
    pub outcome: StepOutcome,
    pub started: DateTime<Utc>,
    pub ended: DateTime<Utc>,
    pub duration: Duration,
    pub stdout: Capture,
    pub stderr: Capture,
    pub sandbox: SandboxRecord,
    /// Processes of the step were still running after its main process ended
    /// (or at the timeout) and were killed.
    pub stragglers_killed: bool,
    /// Something outside the step's process group still held its output open
    /// at the hard deadline; reading was abandoned.
    pub output_abandoned: bool,
}

/// What to run: the rendered argv and environment, where, with which options.
#[derive(Clone, Copy)]
pub struct ProcessSpec<'a> {
    pub argv: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub scratch: &'a Scratch,
    pub opts: &'a StepOptions,
}

/// Runs `spec.argv` in the sandbox until it exits, times out or is cancelled.
pub async fn run(
    sandbox: &Sandbox,
    settings: &ExecSettings,
    spec: &ProcessSpec<'_>,
    sink: Arc<dyn OutputSink>,
    cancel: &CancellationToken,
) -> ProcessResult {
    let ProcessSpec {
        argv,
        env,
        scratch,
        opts,
    } = *spec;
    let started = Utc::now();
    let t0 = Instant::now();
    let stdout = Arc::new(Mutex::new(Capture::new(
        settings.output_head,
        settings.output_tail,
    )));
    let stderr = Arc::new(Mutex::new(Capture::new(
        settings.output_head,
        settings.output_tail,
    )));
    let finish = |outcome, sandbox, stragglers_killed, output_abandoned| ProcessResult {
        outcome,
        started,
        ended: Utc::now(),
        duration: t0.elapsed(),
        stdout: stdout
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
        stderr: stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
        sandbox,
        stragglers_killed,
        output_abandoned,
    };
    let prepared = match sandbox.prepare(argv, env, scratch, opts) {
        Ok(p) => p,
        Err(reason) => {
            return finish(
                StepOutcome::SpawnFailed { reason },
                SandboxRecord::default(),
                false,
                false,
            )
        }
    };
    let record = prepared.record.clone();
    // From here a process may exist: the scratch directory goes to a later
    // run only once the step's cgroup shows every process gone, never if
    // this future is dropped first.
    let mut settled = Settled(scratch, false);
    let started_step = sandbox.spawn(&prepared).await;
    let Prepared {
        cgroup, landlock, ..
    } = prepared;
    drop(landlock);
    let child = match started_step {
        Ok(s) => s,
        Err(reason) => {
            // A child may be forked and not yet in its cgroup: never shown gone.
            return finish(StepOutcome::SpawnFailed { reason }, record, false, false);
        }
    };
    let (pid, lost, reaper) = (child.pid, child.lost, child.reaper);
    let guard = GroupGuard {
        pgid: pid,
        lost: lost.clone(),
        leader: child.pidfd.try_clone().ok(),
    };
    // A pidfd is readable once the process has exited (reaped or not).
    // SAFETY: the descriptor is owned by the AsyncFd alone and is never
    // closed behind its back; registering it with the reactor is sound.
    let exited = match unsafe { AsyncFd::register(child.pidfd) } {
        Ok(fd) => fd,
        Err(e) => {
            drop(guard);
            if let Some(cg) = &cgroup {
                cg.kill();
            }
            let _ = sandbox.reap(pid, reaper).await;
            settled.end(sandbox, cgroup);
            return finish(
                StepOutcome::SpawnFailed {
                    reason: format!("cannot watch the step process: {e}"),
                },
                record,
                false,
                false,
            );
        }
    };
    // The child confines itself and execs while we wait here, not in the
    // spawner: the report pipe closes at exec or says what failed.
    if let Some(failure) = exec_report(child.report).await {
        let _ = exited.readable().await;
        drop(guard);
        let _ = sandbox.reap(pid, reaper).await;
        settled.end(sandbox, cgroup);
        let program = argv.first().map_or("", String::as_str);
        return finish(
            StepOutcome::SpawnFailed {
                reason: failure.reason(program),
            },
            record,
            false,
            false,
        );
    }
    let mut readers = Readers(vec![
        tokio::spawn(read_stream(
            pipe::Receiver::from_owned_fd(child.stdout).ok(),
            stdout.clone(),
            Stream::Stdout,
            sink.clone(),
        )),
        tokio::spawn(read_stream(
            pipe::Receiver::from_owned_fd(child.stderr).ok(),
            stderr.clone(),
            Stream::Stderr,
            sink,
        )),
    ]);
    // Signals the step's group; once the helper that holds the leader is
    // gone, the leader alone (by pidfd), and the cgroup does the rest.
    let signal = |sig: Signal| {
        if lost.is_cancelled() {
            super::spawn::pidfd_signal(exited.get_ref(), sig as i32);
        } else {
            signal_group(pid, sig);
        }
    };

    let deadline = t0 + opts.timeout;
    let stop = tokio::select! {
        _ = exited.readable() => None,
        () = tokio::time::sleep_until(deadline) => Some(StepOutcome::TimedOut { after_ms: millis(opts.timeout), cause: "step timeout".to_owned() }),
        () = cancel.cancelled() => Some(StepOutcome::Cancelled),
        () = lost.cancelled() => Some(StepOutcome::SpawnFailed { reason: format!("{HELPER_DIED}; its processes were killed") }),
    };
    let mut stragglers_killed = false;
    if stop.is_some() {
        // TERM the whole group, give it the grace period (leader exit and
        // output closed), then KILL whatever is left.
        signal(Signal::SIGTERM);
        let grace_end = Instant::now() + settings.kill_grace;
        let _ = timeout_at(grace_end, exited.readable()).await;
        let _ = timeout_at(grace_end, readers.done()).await;
        stragglers_killed = cgroup
            .as_ref()
            .is_some_and(super::cgroup::StepCgroup::populated);
        signal(Signal::SIGKILL);
        if let Some(cg) = &cgroup {
            cg.kill();
        }
        let _ = exited.readable().await;
    }
    // The leader has exited but is not reaped: drain, then kill what is left.
    let drained = tokio::time::timeout(settings.drain, readers.done())
        .await
        .is_ok();
    let populated = cgroup
        .as_ref()
        .is_some_and(super::cgroup::StepCgroup::populated);
    stragglers_killed |= populated || !drained;
    signal(Signal::SIGKILL);
    if let Some(cg) = cgroup.as_ref().filter(|_| populated || !drained) {
        cg.kill();
    }
    let mut output_abandoned = false;
    if !drained
        && tokio::time::timeout(settings.drain * 2, readers.done())
            .await
            .is_err()
    {
        readers.abort();
        output_abandoned = true;
    }
    // The group is killed before the leader is reaped, never after: once
    // reaped, its process-group id may belong to someone else.
    drop(guard);
    let status = sandbox.reap(pid, reaper).await;
    let oom = cgroup
        .as_ref()
        .is_some_and(super::cgroup::StepCgroup::oom_killed);
    settled.end(sandbox, cgroup);
    let outcome = stop.unwrap_or_else(|| match status {
        Ok(s) if s.code() == Some(0) => StepOutcome::Succeeded,
        Ok(s) if s.code().is_some() => StepOutcome::Failed {
            exit_code: s.code().unwrap_or(-1),
        },
        Ok(s) => {
            let signal = s.signal().unwrap_or(0);
            let cause = if oom {
                Some("memory limit exceeded (killed by the kernel's OOM killer)".to_owned())
            } else if signal == libc::SIGXCPU {
                Some("CPU time limit exceeded".to_owned())
            } else if signal == libc::SIGXFSZ {
                Some("file size limit exceeded".to_owned())
            } else {
                None
            };
            StepOutcome::Signalled { signal, cause }
        }
        Err(e) if lost.is_cancelled() => StepOutcome::SpawnFailed {
            reason: format!("{HELPER_DIED}: its exit status is unknown ({e})"),
        },
        Err(e) => StepOutcome::SpawnFailed {
            reason: format!("cannot wait for the process: {e}"),
        },
    });
    finish(outcome, record, stragglers_killed, output_abandoned)
}

/// Whether a step left its run's scratch directory fit for a later run:
/// only when its cgroup (v2) was seen empty after the step ended.
struct Settled<'a>(&'a Scratch, bool);

impl Settled<'_> {
    /// The step's end, its leader reaped: one read of `cgroup.events`
    /// decides both this and whether the cgroup serves another step.
    fn end(&mut self, sandbox: &Sandbox, cgroup: Option<StepCgroup>) {
        self.1 = cgroup.as_ref().is_some_and(StepCgroup::emptied);
        if let Some(cg) = cgroup {
            sandbox.recycle(cg, self.1);
        }
    }
}

impl Drop for Settled<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.keep_from_reuse();
        }
    }
}

/// Kills the process group on drop (a cancelled or dropped step).
struct GroupGuard {
    pgid: i32,
    /// Set when the leader may have been reaped by someone else (its group
    /// id is then not ours to signal; the cgroup takes the step).
    lost: CancellationToken,
    /// The leader itself: dropped before its `setsid`, it leads no group yet.
    leader: Option<std::os::fd::OwnedFd>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if !self.lost.is_cancelled() {
            signal_group(self.pgid, Signal::SIGKILL);
        }
        if let Some(fd) = &self.leader {
            super::spawn::pidfd_signal(fd, libc::SIGKILL);
        }
    }
}

/// Signals the step's process group. The caller keeps the group leader
/// unreaped, so the id cannot have been reused.
fn signal_group(pgid: i32, signal: Signal) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), signal);
}

/// What the report pipe of a forked step says: `None` once it closed empty
/// (the exec happened).
async fn exec_report(report: std::os::fd::OwnedFd) -> Option<super::spawn::SpawnFailure> {
    let mut pipe = pipe::Receiver::from_owned_fd(report).ok()?;
    let mut bytes = Vec::with_capacity(8);
    let _ = (&mut pipe).take(8).read_to_end(&mut bytes).await;
    super::spawn::decode_report(&bytes)
}

/// The two reader tasks; their buffers live outside them, so aborting one
/// keeps what it had read.
struct Readers(Vec<JoinHandle<()>>);

impl Readers {
    async fn done(&mut self) {
        for h in &mut self.0 {
            if !h.is_finished() {
                let _ = h.await;
            }
        }
    }

    fn abort(&self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

async fn read_stream(
    r: Option<impl AsyncRead + Unpin>,
    capture: Arc<Mutex<Capture>>,
    stream: Stream,
    sink: Arc<dyn OutputSink>,
) {
    let Some(mut r) = r else { return };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                capture
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(&buf[..n]);
                sink.output(stream, &buf[..n]);
            }
        }
    }
}
