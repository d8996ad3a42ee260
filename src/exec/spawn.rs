//! Starting one confined step process, shared by both spawners: runbookd
//! itself (`sandbox.spawner: inline`) and the spawn helper (the default, see
//! [`super::helper`]).
//!
//! The sandbox's policy (which layers, which limits, whom to run as) is
//! decided in runbookd and written down as a [`SpawnRequest`]: plain,
//! serializable values. The descriptors that go with it (the Landlock
//! ruleset, the cgroups to join) travel beside it. [`spawn_here`] is the
//! other half, the same in both places: it forks, applies the confinement in
//! the child between fork and exec, and reports whether the exec happened.
//! The child only makes raw syscalls on values prepared before the fork: it
//! allocates nothing and takes no locks.
#![allow(unsafe_code)] // fork, the child's set-up before exec, pidfd_open: raw syscalls, reasons inline

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::sandbox::Filters;
use serde::{Deserialize, Serialize};

/// Per-process limits always applied.
const NOFILE: u64 = 1024;
const FSIZE: u64 = 256 << 20;

/// How the child is confined, beside the descriptors that go with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::struct_excessive_bools)] // independent layers
pub struct Confinement {
    /// Enter a new network namespace with only `lo` up.
    pub network_none: bool,
    /// Enter a new IPC namespace: System V objects and POSIX message queues
    /// the step makes are its own and go with its last process.
    pub ipc_namespace: bool,
    /// Soft `RLIMIT_CPU` in seconds (the hard limit is 5 s above).
    pub cpu_soft: u64,
    /// (uid, gid) to switch to, last of the privileged steps.
    pub drop_to: Option<(u32, u32)>,
    /// The first passed descriptor is a Landlock ruleset to restrict to.
    pub landlock: bool,
    /// How many passed descriptors (after the ruleset) are `cgroup.procs`
    /// files to write the child into.
    pub cgroups: usize,
    /// Apply the seccomp filters (compiled once by whoever spawns).
    pub seccomp: bool,
    /// The last passed descriptor is the step cgroup's `cgroup.kill`: not
    /// for the child, but for the spawn helper to take the step with it
    /// should runbookd die.
    pub kill_file: bool,
}

/// Everything but the descriptors needed to start one step: what the
/// sandbox policy decided, as plain values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnRequest {
    pub argv: Vec<String>,
    /// The whole environment of the step.
    pub env: Vec<(String, String)>,
    /// The working directory (the run's scratch directory).
    pub cwd: PathBuf,
    /// Where a program named without a `/` is looked for.
    pub path: String,
    pub confine: Confinement,
}

/// Which part of starting the step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Before the fork: pipes, arguments, the fork itself.
    Prepare,
    /// In the child, applying the sandbox.
    Confine,
    /// In the child, entering the working directory (as the step's user).
    Enter,
    /// The exec of the program.
    Exec,
}

/// Why a step did not start: the stage and the OS error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnFailure {
    pub stage: Stage,
    pub errno: i32,
}

impl SpawnFailure {
    fn prepare(e: &io::Error) -> Self {
        SpawnFailure {
            stage: Stage::Prepare,
            errno: e.raw_os_error().unwrap_or(libc::EINVAL),
        }
    }

    /// What the step record says.
    #[must_use]
    pub fn reason(&self, program: &str) -> String {
        let e = io::Error::from_raw_os_error(self.errno);
        match (self.stage, self.errno) {
            (Stage::Exec, libc::ENOENT | libc::ENOTDIR) => {
                format!("cannot run `{program}`: not found (is it installed and on PATH?)")
            }
            (Stage::Exec, libc::EACCES) => {
                format!("cannot run `{program}`: permission denied for the step's user")
            }
            (Stage::Confine, _) => {
                format!("cannot run `{program}`: applying the sandbox failed: {e}")
            }
            (Stage::Enter, _) => format!(
                "cannot run `{program}`: the step's user cannot enter its scratch directory: {e}"
            ),
            (Stage::Exec | Stage::Prepare, _) => format!("cannot run `{program}`: {e}"),
        }
    }
}

/// A forked step: its pid (which leads its own session and process group),
/// the read ends of its stdout and stderr, and the report pipe: it closes
/// when the exec happened, or carries 8 bytes (see [`decode_report`]) when
/// the sandbox or the exec failed (the child then exits 127, unreaped).
#[derive(Debug)]
pub struct Started {
    pub pid: i32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub report: OwnedFd,
}

fn cstring(s: impl Into<Vec<u8>>) -> Result<CString, SpawnFailure> {
    CString::new(s).map_err(|_| SpawnFailure {
        stage: Stage::Prepare,
        errno: libc::EINVAL,
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnFailure> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| SpawnFailure::prepare(&io::Error::from(e)))
}

/// The programs to try, in order: `argv[0]` itself when it names a path,
/// otherwise it beneath each directory of `path` (as `execvp` does, but
/// over the step's PATH, never the spawner's).
fn candidates(program: &str, path: &str) -> Result<Vec<CString>, SpawnFailure> {
    if program.contains('/') {
        return Ok(vec![cstring(program)?]);
    }
    path.split(':')
        .map(|dir| if dir.is_empty() { "." } else { dir })
        .map(|dir| cstring(format!("{dir}/{program}")))
        .collect()
}

/// Starts `req` here: fork, confine, exec. Returns right after the fork
/// (the child confines itself and execs meanwhile: whoever forks need not
/// wait for it); the caller owns the unreaped child and reads the report.
///
/// `fds` are the descriptors the request's confinement names, in order: the
/// Landlock ruleset (when `landlock`), then the `cgroup.procs` files.
/// `seccomp`: the filters; `base_inherited` when this process is already
/// filtered by their base (the spawn helper), so the child adds only the last.
///
/// # Errors
/// What stopped the fork (no child was made).
pub fn spawn_here(
    req: &SpawnRequest,
    fds: &[RawFd],
    seccomp: Option<&Filters>,
    base_inherited: bool,
) -> Result<Started, SpawnFailure> {
    let c = req.confine;
    let wanted = usize::from(c.landlock) + c.cgroups + usize::from(c.kill_file);
    if fds.len() != wanted || req.argv.is_empty() {
        return Err(SpawnFailure {
            stage: Stage::Prepare,
            errno: libc::EINVAL,
        });
    }
    let (landlock_fd, rest) = if c.landlock {
        (Some(fds[0]), &fds[1..])
    } else {
        (None, fds)
    };
    let cgroup_fds = &rest[..c.cgroups];
    // Everything the child touches is made here, before the fork.
    let programs = candidates(&req.argv[0], &req.path)?;
    let argv: Vec<CString> = req
        .argv
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = req
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}")))
        .collect::<Result<_, _>>()?;
    let argv_ptrs = null_terminated(&argv);
    let envp_ptrs = null_terminated(&envp);
    let cwd = cstring(req.cwd.as_os_str().as_bytes())?;
    let null = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| SpawnFailure::prepare(&io::Error::from(e)))?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (report_r, report_w) = pipe()?;
    let child = ChildSetup {
        confine: c,
        cgroup_fds,
        landlock_fd,
        seccomp,
        base_inherited,
    };
    // SAFETY: the child runs `child_main` only, which makes raw,
    // async-signal-safe syscalls on the values prepared above and never
    // returns (exec or `_exit`).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SpawnFailure::prepare(&io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: see above; this is the child.
        unsafe {
            child_main(
                &child,
                [null.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
                report_w.as_raw_fd(),
                &cwd,
                &programs,
                &argv_ptrs,
                &envp_ptrs,
            )
        }
    }
    drop((null, out_w, err_w, report_w));
    Ok(Started {
        pid,
        stdout: out_r,
        stderr: err_r,
        report: report_r,
    })
}

/// Decodes what the report pipe carried: nothing (it closed at exec) or a
/// failure's stage and errno.
#[must_use]
pub fn decode_report(bytes: &[u8]) -> Option<SpawnFailure> {
    if bytes.is_empty() {
        return None;
    }
    // A cut-short report is still a failure, never a start.
    let Ok(b) = <[u8; 8]>::try_from(bytes) else {
        return Some(SpawnFailure {
            stage: Stage::Confine,
            errno: libc::EIO,
        });
    };
    let stage = match u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) {
        REPORT_CONFINE => Stage::Confine,
        REPORT_ENTER => Stage::Enter,
        _ => Stage::Exec,
    };
    let errno = i32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
    Some(SpawnFailure { stage, errno })
}

fn null_terminated(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The stages a child reports on its report pipe.
const REPORT_CONFINE: u32 = 0;
const REPORT_EXEC: u32 = 1;
const REPORT_ENTER: u32 = 2;

/// The child between fork and exec. Never returns.
///
/// # Safety
/// Only in a freshly forked child; every pointer is valid for the call.
unsafe fn child_main(
    setup: &ChildSetup<'_>,
    stdio: [RawFd; 3],
    report: RawFd,
    cwd: &CString,
    programs: &[CString],
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    // SAFETY (whole block): raw syscalls on prepared values, as the caller guarantees.
    unsafe {
        let fail = |stage: u32| -> ! {
            let errno = *libc::__errno_location();
            let mut msg = [0u8; 8];
            msg[..4].copy_from_slice(&stage.to_ne_bytes());
            msg[4..].copy_from_slice(&errno.to_ne_bytes());
            libc::write(report, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        };
        for (target, &fd) in stdio.iter().enumerate() {
            // dup2 leaves the copy without CLOEXEC.
            if libc::dup2(fd, i32::try_from(target).unwrap_or(0)) < 0 {
                fail(REPORT_CONFINE);
            }
        }
        // Signal dispositions and the mask are inherited: a step starts
        // with the defaults (Rust ignores SIGPIPE; the helper ignores
        // terminal signals).
        for sig in [
            libc::SIGPIPE,
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
        ] {
            libc::signal(sig, libc::SIG_DFL);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &raw const empty, std::ptr::null_mut());
        if let Err(stage) = setup.apply(cwd) {
            fail(stage);
        }
        let mut denied = false;
        for p in programs {
            libc::execve(p.as_ptr(), argv.as_ptr(), envp.as_ptr());
            match *libc::__errno_location() {
                libc::ENOENT | libc::ENOTDIR => {}
                libc::EACCES => denied = true,
                _ => fail(REPORT_EXEC),
            }
        }
        if denied {
            *libc::__errno_location() = libc::EACCES;
        }
        fail(REPORT_EXEC)
    }
}

/// Everything the child applies between fork and exec, prepared before it.
struct ChildSetup<'a> {
    confine: Confinement,
    cgroup_fds: &'a [RawFd],
    landlock_fd: Option<RawFd>,
    seccomp: Option<&'a Filters>,
    base_inherited: bool,
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl ChildSetup<'_> {
    /// A new session first (no controlling terminal, so nothing can be typed
    /// into the operator's; the step leads its own process group),
    /// root-needing steps next (cgroups, the step's own IPC and network
    /// namespaces), the uid drop after them, then the working directory
    /// (entered as the step's user: root without `CAP_DAC_OVERRIDE`, as in
    /// Kubernetes' Baseline profile, cannot search the step's 0700 scratch),
    /// Landlock and seccomp last (the last filter denies `unshare`). On
    /// failure, `errno` holds the cause and the stage is returned.
    fn apply(&self, cwd: &CString) -> Result<(), u32> {
        self.until_drop().map_err(|_| REPORT_CONFINE)?;
        // SAFETY: chdir on a prepared C string.
        if unsafe { libc::chdir(cwd.as_ptr()) } != 0 {
            return Err(REPORT_ENTER);
        }
        self.after_drop().map_err(|_| REPORT_CONFINE)
    }

    /// Everything up to and including the uid drop.
    fn until_drop(&self) -> io::Result<()> {
        let c = &self.confine;
        // SAFETY (whole block): raw syscalls on prepared plain values; no
        // allocation, no locks, async-signal-safe.
        unsafe {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            for &fd in self.cgroup_fds {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            let namespaces = if c.ipc_namespace {
                libc::CLONE_NEWIPC
            } else {
                0
            } | if c.network_none {
                libc::CLONE_NEWNET
            } else {
                0
            };
            if namespaces != 0 {
                check(libc::unshare(namespaces))?;
            }
            if c.network_none {
                loopback_up()?;
            }
            let limit = |res: libc::__rlimit_resource_t, soft: u64, hard: u64| {
                let rl = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                check(libc::setrlimit(res, &raw const rl))
            };
            limit(libc::RLIMIT_CORE, 0, 0)?;
            limit(libc::RLIMIT_NOFILE, NOFILE, NOFILE)?;
            limit(libc::RLIMIT_FSIZE, FSIZE, FSIZE)?;
            limit(libc::RLIMIT_CPU, c.cpu_soft, c.cpu_soft + 5)?;
            libc::umask(0o077);
            // CLOEXEC rather than close: the report pipe must stay open until exec.
            if libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if let Some((uid, gid)) = c.drop_to {
                // The output pipes were made by root with mode 0600; without
                // this, `echo x > /dev/stderr` (a re-open through /proc) fails.
                check(libc::fchown(1, uid, gid))?;
                check(libc::fchown(2, uid, gid))?;
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setresgid(gid, gid, gid))?;
                check(libc::setresuid(uid, uid, uid))?;
            }
        }
        Ok(())
    }

    /// No new privileges, Landlock and seccomp.
    fn after_drop(&self) -> io::Result<()> {
        let c = &self.confine;
        // SAFETY (whole block): raw syscalls on prepared plain values; no
        // allocation, no locks, async-signal-safe.
        unsafe {
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            if let Some(fd) = self.landlock_fd {
                if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(filters) = self.seccomp.filter(|_| c.seccomp) {
                let base = if self.base_inherited {
                    &[][..]
                } else {
                    &filters.base[..]
                };
                let last = if c.network_none {
                    &filters.last_no_network
                } else {
                    &filters.last
                };
                for prog in base.iter().chain([last]) {
                    seccompiler::apply_filter(prog)
                        .map_err(|_| io::Error::from_raw_os_error(libc::EPERM))?;
                }
            }
        }
        Ok(())
    }
}

/// Brings `lo` up in a fresh network namespace (it starts down).
unsafe fn loopback_up() -> io::Result<()> {
    // SAFETY: socket/ioctl/close on a zeroed, correctly sized ifreq.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (slot, b) in ifr.ifr_name.iter_mut().zip(b"lo") {
            *slot = libc::c_char::try_from(*b).unwrap_or_default();
        }
        let mut rc = libc::ioctl(sock, libc::SIOCGIFFLAGS, &raw mut ifr);
        if rc == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::c_short::try_from(libc::IFF_UP).unwrap_or(1);
            rc = libc::ioctl(sock, libc::SIOCSIFFLAGS, &raw const ifr);
        }
        let err = io::Error::last_os_error();
        libc::close(sock);
        if rc == 0 {
            Ok(())
        } else {
            Err(err)
        }
    }
}

/// A pidfd for `pid` (a child of the caller, not yet reaped).
///
/// # Errors
/// Kernels before 5.3.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open returns a new owned descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `signal` to the process behind `pidfd` (never to a recycled pid).
pub fn pidfd_signal(pidfd: &OwnedFd, signal: i32) {
    // SAFETY: pidfd_send_signal on a descriptor we own, no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        );
    }
}
