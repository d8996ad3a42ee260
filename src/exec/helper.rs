//! The spawn helper: a small single-threaded process (this same program,
//! run as `runbookd __spawn-helper`) that starts every step, so the server
//! never forks itself.
//!
//! Forking a large multithreaded server copies its page tables, takes
//! copy-on-write faults on both sides and shoots down the TLBs of every one
//! of its threads (docs/benchmarks.md has the profile); forking a process
//! of a few hundred KiB with one thread costs a fraction of that. runbookd
//! starts the helper once and talks to it over a Unix socket pair: it sends
//! a [`SpawnRequest`] (the sandbox policy, decided in runbookd) with the
//! Landlock ruleset and cgroup descriptors, the helper forks, confines and
//! execs with [`spawn_here`] (the code the inline spawner runs), and sends
//! back the step's pid, a pidfd, its stdout and stderr and the pipe that
//! reports whether the exec happened (`SCM_RIGHTS`), right after the fork:
//! the child confines itself and execs while the helper serves the next
//! request, and runbookd reads the report.
//!
//! The helper keeps every step it started unreaped until runbookd asks
//! (after it has killed the step's process group: a reaped leader's group
//! id could belong to someone else). When runbookd goes away (its end of
//! the socket closes, kill -9 included), the helper kills the process groups
//! of the steps still running and exits: steps never outlive runbookd. When
//! the helper dies, runbookd stops the steps it had started (by pidfd and
//! cgroup, never by group id), fails them with the reason, and starts a new
//! helper for the next step.
#![allow(unsafe_code)] // the helper's socket on fd 3, signal dispositions: reasons inline

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::spawn::{pidfd_open, spawn_here, SpawnFailure, SpawnRequest, Stage};

/// The argument that makes `runbookd` the spawn helper.
pub const HELPER_ARG: &str = "__spawn-helper";

/// The descriptor the helper finds its socket on.
const SOCKET_FD: RawFd = 3;

/// The most descriptors one message carries.
const MAX_FDS: usize = 8;

/// The largest message accepted (a step's argv and environment).
const MAX_MESSAGE: usize = 16 << 20;

/// The most argument and environment bytes a step may have (Linux's
/// `ARG_MAX` with the default 8 MiB stack is 2 MiB).
const MAX_EXEC_BYTES: usize = 2 << 20;

#[derive(Debug, Serialize, Deserialize)]
enum ToHelper {
    /// Start a step; the message carries the request's descriptors.
    Spawn(SpawnRequest),
    /// Reap a step whose leader has exited (its group is already killed).
    Reap { pid: i32 },
    /// Kill and reap a step nobody in runbookd holds (its spawn was
    /// abandoned).
    Abandon { pid: i32 },
}

#[derive(Debug, Serialize, Deserialize)]
enum FromHelper {
    /// Set up (filtered, when asked) and serving.
    Ready,
    /// Forked; the message carries its pidfd, stdout, stderr and report pipe.
    Started {
        pid: i32,
    },
    Failed(SpawnFailure),
    /// The raw wait status.
    Reaped {
        status: i32,
    },
    /// Not a step the helper holds, or not exited yet.
    NotReapable {
        pid: i32,
    },
}

fn send(sock: RawFd, msg: &impl Serialize, fds: &[RawFd]) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let header = len.to_le_bytes();
    let iov = [IoSlice::new(&header), IoSlice::new(&body)];
    let cmsgs = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsgs };
    let sent = loop {
        match sendmsg::<()>(sock, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Err(nix::errno::Errno::EINTR) => {}
            r => break r.map_err(io::Error::from)?,
        }
    };
    // A stream socket may take a large message in parts; the descriptors
    // went with the first.
    let whole = header.len() + body.len();
    if sent < whole {
        let rest: Vec<u8> = header.iter().chain(&body).skip(sent).copied().collect();
        borrowed(sock).write_all(&rest)?;
    }
    Ok(())
}

/// A `File` view of a descriptor someone else owns (never closed here).
fn borrowed(fd: RawFd) -> std::mem::ManuallyDrop<std::fs::File> {
    // SAFETY: the File is never dropped, so the descriptor stays its owner's.
    std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// One message and its descriptors; `None` at the end of the stream.
fn recv<T: for<'de> Deserialize<'de>>(sock: RawFd) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut header = [0u8; 4];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut fds = Vec::new();
    let got = loop {
        let mut iov = [IoSliceMut::new(&mut header)];
        match recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
            Ok(m) => {
                for c in m.cmsgs().map_err(io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        // SAFETY: SCM_RIGHTS installed these descriptors in
                        // this process just now; nobody else owns them.
                        fds.extend(
                            raw.into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
                break m.bytes;
            }
        }
    };
    if got == 0 {
        return Ok(None);
    }
    let mut file = borrowed(sock);
    file.read_exact(&mut header[got..])?;
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_MESSAGE {
        return Err(io::Error::other(format!("a message of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    file.read_exact(&mut body)?;
    let msg = serde_json::from_slice(&body).map_err(io::Error::other)?;
    Ok(Some((msg, fds)))
}

/// The helper's `main`: serve runbookd until it goes away, then kill the
/// steps still running and exit.
#[must_use]
pub fn main() -> std::process::ExitCode {
    // runbookd stops steps itself and ends the helper by closing the
    // socket; a terminal's Ctrl-C or a service manager's SIGTERM aimed at
    // runbookd's whole group must not kill the helper first. (The child
    // restores the defaults before exec.)
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: setting a disposition to SIG_IGN installs no handler.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    let sock = SOCKET_FD;
    // With `--seccomp` the helper filters itself once with the steps' base
    // filter, and every step it forks inherits it: the kernel then need not
    // load and JIT it again for each step; each child adds only the last,
    // small filter after entering its own namespaces. (Nothing the helper
    // does is on the deny-list.)
    let mut seccomp = None;
    let mut inherited = false;
    if std::env::args().nth(2).as_deref() == Some("--seccomp") {
        let applied = super::sandbox::Filters::build().and_then(|filters| {
            // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(io::Error::last_os_error().to_string());
            }
            filters
                .base
                .iter()
                .try_for_each(|p| seccompiler::apply_filter(p).map_err(|e| e.to_string()))?;
            Ok(filters)
        });
        match applied {
            Ok(filters) => seccomp = Some(filters),
            Err(e) => {
                eprintln!("runbookd spawn helper: cannot apply the seccomp filter: {e}");
                return std::process::ExitCode::from(2);
            }
        }
        inherited = true;
    }
    if let Err(e) = send(sock, &FromHelper::Ready, &[]) {
        eprintln!("runbookd spawn helper: {e} (it is started by runbookd, not by hand)");
        return std::process::ExitCode::from(2);
    }
    // Steps started and not yet reaped, with their cgroup's `cgroup.kill`.
    let mut held: HashMap<i32, Option<OwnedFd>> = HashMap::new();
    let ended = loop {
        let (msg, fds) = match recv::<ToHelper>(sock) {
            Ok(Some(m)) => m,
            Ok(None) => break None,
            Err(e) => break Some(e),
        };
        let (reply, out) = match msg {
            ToHelper::Spawn(req) => {
                if req.confine.seccomp && seccomp.is_none() {
                    match super::sandbox::Filters::build() {
                        Ok(p) => seccomp = Some(p),
                        Err(e) => {
                            eprintln!(
                                "runbookd spawn helper: cannot build the seccomp filter: {e}"
                            );
                        }
                    }
                }
                let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
                let started = spawn_here(&req, &raw, seccomp.as_ref(), inherited).and_then(|s| {
                    match pidfd_open(s.pid) {
                        Ok(pidfd) => Ok((s, pidfd)),
                        Err(e) => {
                            kill_and_reap(s.pid);
                            Err(SpawnFailure {
                                stage: Stage::Prepare,
                                errno: e.raw_os_error().unwrap_or(libc::ENOSYS),
                            })
                        }
                    }
                });
                let mut fds = fds;
                let kill_file = if req.confine.kill_file {
                    fds.pop()
                } else {
                    None
                };
                drop(fds);
                match started {
                    Ok((s, pidfd)) => {
                        held.insert(s.pid, kill_file);
                        (
                            FromHelper::Started { pid: s.pid },
                            vec![pidfd, s.stdout, s.stderr, s.report],
                        )
                    }
                    Err(f) => (FromHelper::Failed(f), Vec::new()),
                }
            }
            ToHelper::Abandon { pid } => {
                if let Some(kill_file) = held.remove(&pid) {
                    kill_step(pid, kill_file.as_ref());
                }
                (FromHelper::NotReapable { pid }, Vec::new())
            }
            ToHelper::Reap { pid } => {
                let reply = if held.contains_key(&pid) {
                    let mut status = 0;
                    // SAFETY: waitpid on our own child, WNOHANG.
                    let rc = unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG) };
                    if rc == pid {
                        held.remove(&pid);
                        FromHelper::Reaped { status }
                    } else {
                        FromHelper::NotReapable { pid }
                    }
                } else {
                    FromHelper::NotReapable { pid }
                };
                (reply, Vec::new())
            }
        };
        let raw: Vec<RawFd> = out.iter().map(AsRawFd::as_raw_fd).collect();
        if let Err(e) = send(sock, &reply, &raw) {
            break Some(e);
        }
    };
    // runbookd is gone (or the socket broke): nothing may outlive it. The
    // leaders are unreaped, so their group ids are still theirs.
    for (&pid, kill_file) in &held {
        kill_step(pid, kill_file.as_ref());
    }
    match ended {
        None => std::process::ExitCode::SUCCESS,
        Some(e) => {
            if held.is_empty() {
                eprintln!("runbookd spawn helper: {e} (it is started by runbookd, not by hand)");
            } else {
                eprintln!("runbookd spawn helper: {e}: killed {} step(s)", held.len());
            }
            std::process::ExitCode::from(2)
        }
    }
}

/// Kills a held step, escapees (setsid, double fork) included through its
/// cgroup, and reaps its leader.
fn kill_step(pid: i32, kill_file: Option<&OwnedFd>) {
    if let Some(f) = kill_file {
        let _ = borrowed(f.as_raw_fd()).write_all(b"1");
    }
    kill_and_reap(pid);
}

fn kill_and_reap(pid: i32) {
    let p = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::killpg(p, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(p, None);
}

/// A step started by the helper, as runbookd holds it.
pub struct HelperStarted {
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub report: OwnedFd,
    /// Cancelled when the helper that holds the step dies.
    pub lost: CancellationToken,
    generation: u64,
}

enum Job {
    Spawn {
        req: SpawnRequest,
        fds: Vec<OwnedFd>,
        reply: tokio::sync::oneshot::Sender<Result<HelperStarted, String>>,
    },
    Reap {
        pid: i32,
        generation: u64,
        reply: tokio::sync::oneshot::Sender<Result<ExitStatus, String>>,
    },
}

/// runbookd's side: a thread that owns the socket and the helper process,
/// restarting the helper when it dies.
pub struct Helper {
    jobs: std::sync::Mutex<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The gone-helper message steps fail with.
pub const HELPER_DIED: &str = "the spawn helper died while the step ran";

struct Conn {
    sock: OwnedFd,
    child: Child,
    lost: CancellationToken,
    closing: Arc<AtomicBool>,
    generation: u64,
}

impl Conn {
    fn start(program: &Path, seccomp: bool, generation: u64) -> io::Result<Conn> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let fd = theirs.as_raw_fd();
        let mut cmd = std::process::Command::new(program);
        cmd.arg(HELPER_ARG);
        if seccomp {
            cmd.arg("--seccomp");
        }
        cmd.env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: dup2/fcntl are async-signal-safe raw syscalls on a
        // descriptor that is open in the child.
        unsafe {
            cmd.pre_exec(move || {
                if fd == SOCKET_FD {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, SOCKET_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start the spawn helper `{}`: {e}", program.display()),
            )
        })?;
        drop(theirs);
        match recv::<FromHelper>(ours.as_raw_fd()) {
            Ok(Some((FromHelper::Ready, _))) => {}
            other => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other(format!(
                    "the spawn helper `{}` did not start: {}",
                    program.display(),
                    match other {
                        Err(e) => e.to_string(),
                        Ok(None) => "it exited (its error is in the log above)".to_owned(),
                        Ok(Some((m, _))) => format!("unexpected answer {m:?}"),
                    }
                )));
            }
        }
        let lost = CancellationToken::new();
        let closing = Arc::new(AtomicBool::new(false));
        let pid = i32::try_from(child.id()).unwrap_or(0);
        let pidfd = pidfd_open(pid)?;
        let (watch_lost, watch_closing) = (lost.clone(), closing.clone());
        std::thread::Builder::new()
            .name("runbookd-helper-watch".to_owned())
            .spawn(move || {
                let mut pfd = libc::pollfd {
                    fd: pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: poll on one valid pollfd.
                while unsafe { libc::poll(&raw mut pfd, 1, -1) } < 0 {}
                if !watch_closing.load(Ordering::SeqCst) {
                    tracing::error!(
                        pid,
                        "the spawn helper exited: the steps it started are stopped and fail; a new helper starts with the next step"
                    );
                }
                watch_lost.cancel();
            })?;
        Ok(Conn {
            sock: ours,
            child,
            lost,
            closing,
            generation,
        })
    }

    fn end(mut self) {
        self.closing.store(true, Ordering::SeqCst);
        drop(self.sock);
        let _ = self.child.wait();
    }

    fn died(mut self) {
        self.lost.cancel();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn spawn(
        &self,
        req: &SpawnRequest,
        fds: &[OwnedFd],
    ) -> io::Result<Result<HelperStarted, String>> {
        // The kernel refuses an exec this large anyway; refusing it here
        // fails this step alone instead of the helper and every step in it.
        let size: usize = req.argv.iter().map(|a| a.len() + 1).sum::<usize>()
            + req
                .env
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>();
        if size > MAX_EXEC_BYTES {
            return Ok(Err(format!(
                "cannot run `{}`: its arguments and environment are {size} bytes, more than the {MAX_EXEC_BYTES} an exec takes",
                req.argv.first().map_or("", String::as_str)
            )));
        }
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        send(self.sock.as_raw_fd(), &ToHelper::Spawn(req.clone()), &raw)?;
        let Some((reply, mut fds)) = recv::<FromHelper>(self.sock.as_raw_fd())? else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        match reply {
            FromHelper::Started { pid } if fds.len() == 4 => {
                let report = fds.pop().expect("four descriptors");
                let stderr = fds.pop().expect("four descriptors");
                let stdout = fds.pop().expect("four descriptors");
                let pidfd = fds.pop().expect("four descriptors");
                Ok(Ok(HelperStarted {
                    pid,
                    pidfd,
                    stdout,
                    stderr,
                    report,
                    lost: self.lost.clone(),
                    generation: self.generation,
                }))
            }
            FromHelper::Failed(f) => Ok(Err(f.reason(&req.argv[0]))),
            other => Err(io::Error::other(format!(
                "unexpected answer from the spawn helper: {other:?} with {} descriptor(s)",
                fds.len()
            ))),
        }
    }

    fn abandon(&self, pid: i32) -> io::Result<()> {
        send(self.sock.as_raw_fd(), &ToHelper::Abandon { pid }, &[])?;
        match recv::<FromHelper>(self.sock.as_raw_fd())? {
            Some(_) => Ok(()),
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }

    fn reap(&self, pid: i32) -> io::Result<Result<ExitStatus, String>> {
        send(self.sock.as_raw_fd(), &ToHelper::Reap { pid }, &[])?;
        match recv::<FromHelper>(self.sock.as_raw_fd())? {
            Some((FromHelper::Reaped { status }, _)) => Ok(Ok(ExitStatus::from_raw(status))),
            Some((FromHelper::NotReapable { pid }, _)) => {
                Ok(Err(format!("the spawn helper cannot reap process {pid}")))
            }
            Some((other, _)) => Err(io::Error::other(format!(
                "unexpected answer from the spawn helper: {other:?}"
            ))),
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

impl Helper {
    /// Starts the helper (`program __spawn-helper`, filtered by seccomp
    /// when `seccomp`) and the thread that talks to it.
    ///
    /// # Errors
    /// When the helper cannot be started.
    pub fn start(program: PathBuf, seccomp: bool) -> io::Result<Helper> {
        let first = Conn::start(&program, seccomp, 0)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("runbookd-spawn".to_owned())
            .spawn(move || serve(&program, seccomp, first, &rx))?;
        Ok(Helper {
            jobs: std::sync::Mutex::new(tx),
            thread: Some(thread),
        })
    }

    fn submit(&self, job: Job) {
        let tx = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        // A send fails only when the thread is gone; the reply sender is
        // then dropped, which the caller reads as an error.
        let _ = tx.send(job);
    }

    /// Starts a step in the helper.
    ///
    /// # Errors
    /// The step's spawn failure, or the helper's.
    pub async fn spawn(
        &self,
        req: SpawnRequest,
        fds: Vec<OwnedFd>,
    ) -> Result<HelperStarted, String> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.submit(Job::Spawn { req, fds, reply });
        rx.await
            .unwrap_or_else(|_| Err("the spawn helper is not running".to_owned()))
    }

    /// Reaps a step whose leader has exited.
    ///
    /// # Errors
    /// When the helper that started it is gone.
    pub async fn reap(&self, started_pid: i32, generation: u64) -> Result<ExitStatus, String> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.submit(Job::Reap {
            pid: started_pid,
            generation,
            reply,
        });
        rx.await
            .unwrap_or_else(|_| Err("the spawn helper is not running".to_owned()))
    }
}

impl HelperStarted {
    /// Which helper holds the step.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Closing the channel ends the thread, which closes the socket: the
        // helper kills what it still holds and exits.
        let (dead, _) = mpsc::channel();
        drop(std::mem::replace(
            &mut *self
                .jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            dead,
        ));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(program: &Path, seccomp: bool, first: Conn, jobs: &mpsc::Receiver<Job>) {
    let mut conn = Some(first);
    let mut generation = 0;
    for job in jobs {
        if conn.as_ref().is_none_or(|c| c.lost.is_cancelled()) {
            if let Some(old) = conn.take() {
                old.died();
            }
            generation += 1;
            match Conn::start(program, seccomp, generation) {
                Ok(c) => {
                    tracing::info!(pid = c.child.id(), "spawn helper restarted");
                    conn = Some(c);
                }
                Err(e) => {
                    let why = e.to_string();
                    match job {
                        Job::Spawn { reply, .. } => drop(reply.send(Err(why))),
                        Job::Reap { reply, .. } => drop(reply.send(Err(HELPER_DIED.to_owned()))),
                    }
                    continue;
                }
            }
        }
        let c = conn.as_ref().expect("a helper is running");
        let broken = match job {
            Job::Spawn { req, fds, reply } => match c.spawn(&req, &fds) {
                Ok(r) => match reply.send(r) {
                    // Nobody waits for it any more (the step was dropped):
                    // the helper takes it back, or it would run unwatched.
                    Err(Ok(orphan)) => c.abandon(orphan.pid).err(),
                    _ => None,
                },
                Err(e) => {
                    let _ = reply.send(Err(format!(
                        "cannot run `{}`: the spawn helper failed: {e}",
                        req.argv.first().map_or("", String::as_str)
                    )));
                    Some(e)
                }
            },
            Job::Reap {
                pid,
                generation: g,
                reply,
            } => {
                if g == c.generation {
                    match c.reap(pid) {
                        Ok(r) => {
                            let _ = reply.send(r);
                            None
                        }
                        Err(e) => {
                            let _ = reply.send(Err(HELPER_DIED.to_owned()));
                            Some(e)
                        }
                    }
                } else {
                    let _ = reply.send(Err(HELPER_DIED.to_owned()));
                    None
                }
            }
        };
        if let Some(e) = broken {
            tracing::error!(error = %e, "lost the spawn helper");
            if let Some(old) = conn.take() {
                old.died();
            }
        }
    }
    if let Some(c) = conn {
        c.end();
    }
}
