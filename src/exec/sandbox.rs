//! The sandbox around every step (DESIGN §5, SANDBOX.md §10): what the host
//! offers (probed once), and the command + `pre_exec` hook that applies it.
//!
//! Always on: own session and process group with no controlling terminal
//! (nothing can be typed into the operator's terminal), stdin `/dev/null`,
//! environment cleared to an allowlist, scratch dir as cwd/HOME/TMPDIR, umask
//! 077, fds above 2 closed on exec, rlimits (core 0, nofile, fsize, cpu
//! backstop), no-new-privs, and as root a drop to `run_as` (last, after
//! everything that needs root).
//! Default where the kernel has them: Landlock (read-only filesystem except
//! scratch and `writable_paths`; the store, the config, secret files and
//! other runs' scratch not even readable), a seccomp deny-list (namespaces,
//! io_uring, terminal injection, …), a cgroup per step with a default pids
//! limit. Opt-in: `network: none`, memory limits. An opt-in layer the host
//! cannot give fails the step; with `strict`, a missing default layer refuses
//! to start. Every step result lists the layers applied.
#![allow(unsafe_code)] // pre_exec runs between fork and exec: raw syscalls only, reasons inline

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use landlock::{
    Access, AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    Scope, ABI,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::Serialize;

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use tokio_util::sync::CancellationToken;

use super::cgroup::{Hierarchies, Limits, StepCgroup};
use super::helper::{Helper, HELPER_DIED};
use super::instance::{Instance, Reaped, Scratch};
use super::spawn::{pidfd_open, spawn_here, Confinement, SpawnRequest};

/// Settings of the sandbox (server config file / CLI flags).
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// User steps run as when runbookd runs as root.
    pub run_as: String,
    /// Run steps as root when runbookd is root (logged loudly).
    pub allow_root_steps: bool,
    /// Refuse to start when a default layer (Landlock, seccomp, cgroup) is missing.
    pub strict: bool,
    /// PATH of every step.
    pub path: String,
    /// Processes and threads a step may have at once when its runbook sets
    /// no `resources.pids` (a fork bomb stops there); `None` for no default.
    pub default_pids: Option<u64>,
    /// Where instance locks and run scratch directories live.
    pub runtime_dir: PathBuf,
    /// Files and directories steps may not read even when they share
    /// runbookd's user: the store, the config file, secret files.
    pub hidden: Vec<PathBuf>,
    /// The secret files the runbooks name at start (hidden too; a reload
    /// replaces them: [`Sandbox::hide_secrets`]).
    pub secret_files: Vec<PathBuf>,
    /// Who starts steps (`sandbox.spawner`).
    pub spawner: SpawnerConfig,
    /// As root, the scratch root is a `tmpfs` of this many bytes
    /// (`sandbox.scratch_size`; `None`: no limit, on the runtime
    /// directory's filesystem).
    pub scratch_size: Option<u64>,
    /// TCP ports steps may not connect to (runbookd's own listener):
    /// enforced by the connect guard where the host allows it.
    pub guarded_ports: Vec<u16>,
}

/// Idle step cgroups kept for reuse (more than the concurrent steps of a
/// busy server rarely pays).
const CGROUP_POOL: usize = 32;

/// The default of `sandbox.scratch_size` (1 GiB).
pub const DEFAULT_SCRATCH_SIZE: u64 = 1 << 30;

/// The default of `sandbox.default_pids`.
pub const DEFAULT_PIDS: u64 = 512;

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            run_as: "nobody".to_owned(),
            allow_root_steps: false,
            strict: false,
            path: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            default_pids: Some(DEFAULT_PIDS),
            runtime_dir: super::instance::default_runtime_dir(),
            hidden: Vec::new(),
            secret_files: Vec::new(),
            spawner: SpawnerConfig::default(),
            guarded_ports: Vec::new(),
            scratch_size: Some(DEFAULT_SCRATCH_SIZE),
        }
    }
}

/// What this host offers, found once at startup.
#[derive(Debug, Clone, Serialize)]
#[allow(clippy::struct_excessive_bools)] // independent facts about the host
pub struct Probe {
    pub euid_root: bool,
    /// Landlock ABI version; 0 when unavailable.
    pub landlock_abi: i32,
    pub seccomp: bool,
    /// A network namespace can be created for `network: none`.
    pub netns: bool,
    /// Each step can get an IPC namespace of its own.
    pub ipcns: bool,
    pub cgroups: Hierarchies,
    /// runbookd is PID 1 (steps' orphans would never be reaped without an init).
    pub pid1: bool,
    /// The ids runbookd's user namespace maps.
    pub id_maps: IdMaps,
}

impl Probe {
    #[must_use]
    pub fn run() -> Self {
        let (euid, pid) = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getpid().as_raw(),
        );
        // SAFETY: landlock_create_ruleset with a NULL attr and the VERSION
        // flag only returns the ABI version or -1 (the landlock crate does
        // not expose the raw version).
        let abi = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<u8>(),
                0usize,
                1u32,
            )
        };
        // SAFETY: PR_GET_SECCOMP has no arguments and returns the mode or -1.
        let seccomp = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } >= 0;
        Probe {
            euid_root: euid == 0,
            landlock_abi: i32::try_from(abi.max(0)).unwrap_or(0),
            seccomp,
            netns: euid == 0 && unshare_works(libc::CLONE_NEWNET),
            ipcns: euid == 0 && unshare_works(libc::CLONE_NEWIPC),
            cgroups: Hierarchies::probe(),
            pid1: pid == 1,
            id_maps: IdMaps::read(),
        }
    }
}

/// Whether a child can enter new namespaces of these kinds.
fn unshare_works(flags: libc::c_int) -> bool {
    let mut cmd = std::process::Command::new("/bin/true");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: unshare is a raw syscall, async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::unshare(flags) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.status().is_ok_and(|s| s.success())
}

/// The uid and gid ranges of runbookd's user namespace (`/proc/self/uid_map`,
/// `gid_map`): `(first id inside, count)` each. The initial namespace maps
/// every id; a container's (`podman --userns=auto`, Kubernetes'
/// `hostUsers: false`) maps a range, and a step cannot become an id
/// outside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdMaps {
    pub uids: Vec<(u32, u32)>,
    pub gids: Vec<(u32, u32)>,
}

impl IdMaps {
    /// This process's maps (all ids when they cannot be read).
    #[must_use]
    pub fn read() -> Self {
        let read = |path: &str| {
            let ranges = std::fs::read_to_string(path)
                .map(|s| parse_id_map(&s))
                .unwrap_or_default();
            if ranges.is_empty() {
                vec![(0, u32::MAX)]
            } else {
                ranges
            }
        };
        IdMaps {
            uids: read("/proc/self/uid_map"),
            gids: read("/proc/self/gid_map"),
        }
    }

    /// Both ids are mapped.
    #[must_use]
    pub fn maps(&self, uid: u32, gid: u32) -> bool {
        let has = |ranges: &[(u32, u32)], id: u32| {
            ranges.iter().any(|&(first, count)| {
                id >= first && u64::from(id) < u64::from(first) + u64::from(count)
            })
        };
        has(&self.uids, uid) && has(&self.gids, gid)
    }

    /// The highest mapped uid and gid other than root's, if any.
    #[must_use]
    pub fn highest_unprivileged(&self) -> Option<(u32, u32)> {
        let highest = |ranges: &[(u32, u32)]| {
            ranges
                .iter()
                // A range above nobody's id has nothing at or below it.
                .filter(|&&(first, count)| count > 0 && first <= NOBODY)
                .map(|&(first, count)| {
                    u32::try_from((u64::from(first) + u64::from(count) - 1).min(u64::from(NOBODY)))
                        .unwrap_or(NOBODY)
                })
                .filter(|&id| id != 0)
                .max()
        };
        Some((highest(&self.uids)?, highest(&self.gids)?))
    }

    /// `uids 0-1023, gids 0-1023`, for messages.
    #[must_use]
    pub fn describe(&self) -> String {
        let ranges = |r: &[(u32, u32)]| {
            r.iter()
                .map(|&(first, count)| {
                    format!("{first}-{}", u64::from(first) + u64::from(count).max(1) - 1)
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        format!("uids {}, gids {}", ranges(&self.uids), ranges(&self.gids))
    }
}

/// Linux's overflow id (`nobody`), the highest a step is ever given.
const NOBODY: u32 = 65534;

/// `inside outside count` lines into `(inside, count)` ranges.
fn parse_id_map(text: &str) -> Vec<(u32, u32)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(str::parse::<u32>);
            let (inside, _outside, count) = (f.next()?.ok()?, f.next()?.ok()?, f.next()?.ok()?);
            Some((inside, count))
        })
        .collect()
}

/// The ids steps drop to: `run_as`'s own where the user namespace maps them;
/// for the default `nobody` in a namespace that does not (65534 is outside
/// `podman --userns=auto`'s 1024 ids), the highest mapped ids other than
/// root's, with a note saying so. Another named user that is not mapped is
/// an error: runbookd never guesses for a user someone chose.
fn step_ids(
    run_as: &str,
    ids: (u32, u32),
    maps: &IdMaps,
) -> Result<((u32, u32), Option<String>), SandboxError> {
    if maps.maps(ids.0, ids.1) {
        return Ok((ids, None));
    }
    let unmapped = || SandboxError::Unmapped {
        user: run_as.to_owned(),
        uid: ids.0,
        gid: ids.1,
        maps: maps.describe(),
    };
    if run_as != "nobody" {
        return Err(unmapped());
    }
    let picked = maps
        .highest_unprivileged()
        .filter(|&(uid, gid)| maps.maps(uid, gid))
        .ok_or_else(unmapped)?;
    let note = format!(
        "nobody's uid {} is not mapped in this user namespace ({}): the highest mapped ids are used",
        ids.0,
        maps.describe()
    );
    Ok((picked, Some(note)))
}

/// Why the sandbox cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("run_as user `{0}` does not exist")]
    NoSuchUser(String),
    #[error("run_as user `{user}` (uid {uid}, gid {gid}) is not mapped in runbookd's user namespace ({maps}): choose a user inside it, or map a wider range")]
    Unmapped {
        user: String,
        uid: u32,
        gid: u32,
        maps: String,
    },
    #[error("sandbox.strict (--strict-sandbox) is set and these layers are not enforced:\n  {}", .0.join("\n  "))]
    StrictMissing(Vec<String>),
    #[error("cannot build the seccomp filter: {0}")]
    Seccomp(String),
    #[error("{0}")]
    Runtime(#[from] io::Error),
    #[error("cannot prepare the Landlock rules: {0}")]
    Landlock(String),
}

/// Whom a run's steps run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunAs {
    /// The server's `run_as` (or unchanged when runbookd is not root, or
    /// root steps are allowed).
    #[default]
    Default,
    /// runbookd's own user (a runbook's `run_as: root` with root steps allowed).
    Unchanged,
    /// A runbook's `run_as` user.
    User { uid: u32, gid: u32 },
}

/// The per-step sandbox options from the runbook.
#[derive(Debug, Clone, Default)]
pub struct StepOptions {
    pub run_as: RunAs,
    pub network_none: bool,
    pub limits: Limits,
    pub writable_paths: Vec<PathBuf>,
    /// The step's timeout, for the CPU-time backstop.
    pub timeout: Duration,
}

use crate::record::SandboxRecord;
pub use crate::runbook::parse_memory;

/// A step ready to start: the request (policy as plain values), the
/// descriptors that go with it, and its record.
pub struct Prepared {
    pub request: SpawnRequest,
    pub record: SandboxRecord,
    pub cgroup: Option<StepCgroup>,
    /// The Landlock ruleset the child restricts itself to (shared by the
    /// steps of a scratch directory that have no `writable_paths`).
    pub landlock: Option<Arc<OwnedFd>>,
}

/// Who starts steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnerConfig {
    /// The spawn helper: `program __spawn-helper` (runbookd itself).
    Helper { program: PathBuf },
    /// runbookd forks each step itself.
    Inline,
}

impl Default for SpawnerConfig {
    fn default() -> Self {
        // The running program, even if its file was replaced since.
        SpawnerConfig::Helper {
            program: PathBuf::from("/proc/self/exe"),
        }
    }
}

enum Spawner {
    Inline,
    Helper(Helper),
}

/// The probed host plus the configuration, and this process's claim on the
/// runtime directory: makes run scratch dirs and sandboxed commands.
pub struct Sandbox {
    pub config: SandboxConfig,
    pub probe: Probe,
    /// (uid, gid) steps drop to; `None` when runbookd is not root or root steps are allowed.
    drop_to: Option<(u32, u32)>,
    /// Why `drop_to` is not `run_as`'s own ids (a user namespace that does
    /// not map them).
    pub drop_note: Option<String>,
    seccomp: Option<Arc<Filters>>,
    /// What steps may read: replaced whole when a reload names other
    /// secret files.
    policy: std::sync::RwLock<Arc<ReadPolicy>>,
    instance: Instance,
    spawner: Spawner,
    /// Idle step cgroups, for reuse ([`Sandbox::recycle`]).
    cgroup_pool: std::sync::Mutex<Vec<StepCgroup>>,
    /// What this start cleaned up after dead instances.
    pub reaped: Reaped,
    /// Steps cannot connect to these ports (`None`: the host cannot do it).
    pub guard: Option<super::guard::ConnectGuard>,
}

/// Syscalls no runbook step needs and an attacker would want (SANDBOX.md §10).
/// (`unshare` is filtered by its flags in the base filter and refused whole
/// by the last one: see [`Filters`].)
const DENIED: &[libc::c_long] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_setns,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_open_by_handle_at,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_syslog,
    libc::SYS_quotactl,
    libc::SYS_acct,
    // io_uring performs syscalls' work without the syscalls, so a filter on
    // them would not see it.
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
];

/// `clone` flags that create namespaces (a user namespace grants every
/// capability inside it).
const CLONE_NAMESPACES: &[libc::c_int] = &[
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
    0x80, // CLONE_NEWTIME
];

/// The namespaces a step's child enters itself before its last filter: its
/// own IPC namespace (always, as root) and network namespace (`network:
/// none`). Only these may be unshared under the base filter.
const STEP_NAMESPACES: &[libc::c_int] = &[libc::CLONE_NEWIPC, libc::CLONE_NEWNET];

/// Terminal ioctls that inject input or reach the console.
const DENIED_IOCTLS: &[libc::c_ulong] = &[libc::TIOCSTI, libc::TIOCLINUX];

/// Address families a `network: none` step may not make sockets of: a
/// network namespace cuts IP, but a Unix socket's path (PostgreSQL's, the
/// container runtime's) still reaches the host's services, and vsock the
/// hypervisor's.
const HOST_FAMILIES: &[libc::c_int] = &[libc::AF_UNIX, libc::AF_VSOCK];

fn seccomp_filter(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: i32,
) -> Result<BpfProgram, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| format!("{e:?}"))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno.unsigned_abs()),
        arch,
    )
    .map_err(|e| e.to_string())?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())
}

/// On x86-64, a filter refusing every x32 system call (number with bit 30
/// set): seccompiler's rules match x86-64 numbers only, and on a kernel
/// built with x32 the same calls under x32 numbers would pass them.
fn x32_refused() -> Option<BpfProgram> {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const X32: u32 = 0x4000_0000;
    const RET_ERRNO_EPERM: u32 = 0x0005_0000 | 1; // SECCOMP_RET_ERRNO | EPERM
    const RET_ALLOW: u32 = 0x7fff_0000;
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    let op = |code: u16, jt: u8, jf: u8, k: u32| seccompiler::sock_filter { code, jt, jf, k };
    Some(vec![
        op(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        op(JSET_K, 0, 1, X32),
        op(RET_K, 0, 0, RET_ERRNO_EPERM),
        op(RET_K, 0, 0, RET_ALLOW),
    ])
}

/// The seccomp filters of steps, compiled once.
///
/// - `base`: the deny-list (`EPERM`), and `clone3` refused with `ENOSYS`.
///   `clone3` takes its flags in memory, where seccomp cannot look, so it is
///   refused whole; `ENOSYS` makes libc fall back to `clone`, whose namespace
///   flags the deny-list checks. `unshare` is allowed only for the step's
///   own namespaces (IPC, network), which the child enters before `last`;
///   `prlimit64` may change only the caller's own limits (pid 0), so no step
///   lowers another process's (another run's remediation, an unprivileged
///   runbookd). The spawn helper filters itself with it once; its children
///   inherit it.
/// - `last`: applied by each step's child as its last act before exec:
///   `unshare` refused whole; with `network: none` (`last_no_network`)
///   also sockets that reach the host without IP (Unix, vsock).
pub struct Filters {
    pub base: Vec<BpfProgram>,
    pub last: BpfProgram,
    pub last_no_network: BpfProgram,
}

impl Filters {
    /// Compiles the filters for this architecture.
    ///
    /// # Errors
    /// When seccompiler cannot build them (an unsupported architecture).
    pub fn build() -> Result<Filters, String> {
        let rule = |conds: Vec<Result<SeccompCondition, seccompiler::BackendError>>| {
            conds
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .and_then(SeccompRule::new)
                .map_err(|e| e.to_string())
        };
        let masked = |arg: u8, mask: libc::c_int| {
            let mask = u64::from(mask.unsigned_abs());
            rule(vec![SeccompCondition::new(
                arg,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(mask),
                mask,
            )])
        };
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
        rules.insert(
            libc::SYS_clone,
            CLONE_NAMESPACES
                .iter()
                .map(|&f| masked(0, f))
                .collect::<Result<_, _>>()?,
        );
        rules.insert(
            libc::SYS_unshare,
            CLONE_NAMESPACES
                .iter()
                .filter(|f| !STEP_NAMESPACES.contains(f))
                .map(|&f| masked(0, f))
                .collect::<Result<_, _>>()?,
        );
        // The request is an `unsigned int`: compare the low 32 bits only, so
        // garbage in the high half cannot slip past.
        rules.insert(
            libc::SYS_ioctl,
            DENIED_IOCTLS
                .iter()
                .map(|&req| {
                    rule(vec![SeccompCondition::new(
                        1,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::Eq,
                        req,
                    )])
                })
                .collect::<Result<_, _>>()?,
        );
        // prlimit64(pid, resource, new, old): setting (new != NULL) the
        // limits of another process (pid != 0).
        rules.insert(
            libc::SYS_prlimit64,
            vec![rule(vec![
                SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, 0),
                SeccompCondition::new(2, SeccompCmpArgLen::Qword, SeccompCmpOp::Ne, 0),
            ])?],
        );
        let deny = seccomp_filter(rules, libc::EPERM)?;
        let enosys = seccomp_filter(
            [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
            libc::ENOSYS,
        )?;
        let last = seccomp_filter(
            [(libc::SYS_unshare, Vec::new())].into_iter().collect(),
            libc::EPERM,
        )?;
        let families = HOST_FAMILIES
            .iter()
            .map(|&f| {
                rule(vec![SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    u64::from(f.unsigned_abs()),
                )])
            })
            .collect::<Result<Vec<_>, _>>()?;
        let last_no_network = seccomp_filter(
            [
                (libc::SYS_unshare, Vec::new()),
                (libc::SYS_socket, families),
            ]
            .into_iter()
            .collect(),
            libc::EPERM,
        )?;
        let mut base = vec![deny, enosys];
        base.extend(x32_refused());
        Ok(Filters {
            base,
            last,
            last_no_network,
        })
    }
}

/// What steps may read: everything but the hidden paths (the store, the
/// config, credentials and secret files, the runtime directory).
struct ReadPolicy {
    /// Bumped at each change: rulesets built for an older one are rebuilt.
    generation: u64,
    /// The hidden paths, resolved: no `writable_paths` entry may contain
    /// one or lie beneath one.
    protected: Vec<PathBuf>,
    /// Read access everywhere except the hidden paths, opened once per
    /// policy.
    readable: Vec<(PathFd, BitFlags<AccessFs>)>,
}

impl ReadPolicy {
    /// The configured hidden paths, the runtime directory and `secrets`.
    fn new(
        config: &SandboxConfig,
        secrets: &[PathBuf],
        abi: i32,
        generation: u64,
    ) -> Result<Self, SandboxError> {
        let mut hidden = config.hidden.clone();
        hidden.push(config.runtime_dir.clone());
        hidden.extend(secrets.iter().cloned());
        let readable = if abi > 0 {
            readable_rules(&hidden, landlock_abi(abi)).map_err(SandboxError::Landlock)?
        } else {
            Vec::new()
        };
        let protected = hidden
            .iter()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
            .collect();
        Ok(ReadPolicy {
            generation,
            protected,
            readable,
        })
    }
}

impl Sandbox {
    /// Attaches the connect guard for `config.guarded_ports` to the cgroup
    /// v2 directory that holds this instance's step cgroups.
    fn guard(
        config: &SandboxConfig,
        probe: &Probe,
        instance: &str,
    ) -> Option<super::guard::ConnectGuard> {
        if config.guarded_ports.is_empty() {
            return None;
        }
        let Some(base) = &probe.cgroups.v2 else {
            tracing::warn!("sandbox: no writable cgroup v2 hierarchy, so steps could connect to runbookd's own port: the webhook needs a credential");
            return None;
        };
        let dir = base.join(format!("runbookd-{instance}"));
        let attached = super::cgroup::instance_dir(&dir)
            .map_err(io::Error::other)
            .and_then(|()| super::guard::ConnectGuard::attach(&dir, &config.guarded_ports));
        match attached {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::warn!(error = %e, "sandbox: the connect guard cannot be attached (it needs root and cgroup BPF), so steps could connect to runbookd's own port: the webhook needs a credential");
                None
            }
        }
    }

    /// Whether steps cannot connect to runbookd's own listener.
    #[must_use]
    pub fn guards_connections(&self) -> bool {
        self.guard.is_some()
    }

    fn read_policy(&self) -> Arc<ReadPolicy> {
        self.policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Hides `secrets` (the files the runbooks in force name) from steps
    /// besides the configured hidden paths, from the next step on: called
    /// with the runbooks at start and before a reloaded set is put in
    /// force, so no step of a runbook ever runs under a policy older than
    /// its secrets. Files no runbook names any longer are no longer hidden.
    ///
    /// # Errors
    /// When the Landlock read rules cannot be opened.
    pub fn hide_secrets(&self, secrets: &[PathBuf]) -> Result<(), SandboxError> {
        let mut current = self
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = ReadPolicy::new(
            &self.config,
            secrets,
            self.probe.landlock_abi,
            current.generation + 1,
        )?;
        *current = Arc::new(next);
        Ok(())
    }
}

impl Sandbox {
    /// Probes the host and checks the configuration.
    ///
    /// # Errors
    /// An unknown `run_as` user, or a missing layer under `strict`.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let probe = Probe::run();
        let (drop_to, drop_note) = if probe.euid_root && !config.allow_root_steps {
            let user = nix::unistd::User::from_name(&config.run_as)
                .ok()
                .flatten()
                .ok_or_else(|| SandboxError::NoSuchUser(config.run_as.clone()))?;
            let (ids, note) = step_ids(
                &config.run_as,
                (user.uid.as_raw(), user.gid.as_raw()),
                &probe.id_maps,
            )?;
            (Some(ids), note)
        } else {
            (None, None)
        };
        let seccomp = if probe.seccomp {
            Some(Arc::new(Filters::build().map_err(SandboxError::Seccomp)?))
        } else {
            None
        };
        let instance = Instance::start(&config.runtime_dir, config.scratch_size)?;
        let reaped = instance.reap_dead(&probe.cgroups);
        let guard = Self::guard(&config, &probe, instance.id());
        let policy = ReadPolicy::new(&config, &config.secret_files, probe.landlock_abi, 0)?;
        let spawner = match &config.spawner {
            SpawnerConfig::Inline => Spawner::Inline,
            SpawnerConfig::Helper { program } => {
                Spawner::Helper(Helper::start(program.clone(), seccomp.is_some())?)
            }
        };
        let sandbox = Sandbox {
            config,
            probe,
            drop_to,
            drop_note,
            seccomp,
            policy: std::sync::RwLock::new(Arc::new(policy)),
            instance,
            spawner,
            cgroup_pool: std::sync::Mutex::new(Vec::new()),
            reaped,
            guard,
        };
        if sandbox.config.strict {
            let missing =
                super::report::missing_for_strict(&super::report::report(&sandbox), &sandbox);
            if !missing.is_empty() {
                return Err(SandboxError::StrictMissing(missing));
            }
        }
        sandbox.log_startup();
        Ok(sandbox)
    }

    /// A run's scratch directory, owned by whom its steps run as.
    ///
    /// # Errors
    /// When it cannot be made or handed to the step user.
    pub fn scratch_for(&self, run_as: RunAs) -> io::Result<Scratch> {
        self.instance.scratch(self.identity(run_as))
    }

    /// The size of the scratch root's own tmpfs, when it has one.
    #[must_use]
    pub fn scratch_limit(&self) -> Option<u64> {
        self.instance.scratch_limit()
    }

    /// What the sandbox enforces now, layer by layer.
    #[must_use]
    pub fn report(&self) -> super::report::Report {
        super::report::report(self)
    }

    /// The uid and gid steps switch to (`None`: they keep runbookd's).
    #[must_use]
    pub fn identity(&self, run_as: RunAs) -> Option<(u32, u32)> {
        match run_as {
            RunAs::Default => self.drop_to,
            RunAs::Unchanged => None,
            RunAs::User { uid, gid } => Some((uid, gid)),
        }
    }

    /// Resolves a runbook's `run_as`.
    ///
    /// # Errors
    /// An unknown user, `root` without `allow_root_steps`, or any other user
    /// when runbookd cannot switch users (it is not root).
    pub fn resolve_run_as(&self, name: Option<&str>) -> Result<RunAs, String> {
        let Some(name) = name else {
            return Ok(RunAs::Default);
        };
        let user = nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .ok_or_else(|| format!("run_as user `{name}` does not exist"))?;
        let me = nix::unistd::geteuid();
        if (user.uid.is_root() || user.gid.as_raw() == 0)
            && me.is_root()
            && !self.config.allow_root_steps
        {
            return Err(format!("run_as `{name}` (root, or root's group) needs sandbox.allow_root_steps (--allow-root-steps)"));
        }
        if user.uid == me {
            return Ok(RunAs::Unchanged);
        }
        if !self.probe.euid_root {
            return Err(format!(
                "run_as `{name}` needs runbookd to run as root (it runs as uid {me})"
            ));
        }
        // The same rule as the server's run_as: a user the namespace does
        // not map is refused, `nobody` mapped to the highest ids there are.
        let ((uid, gid), _) = step_ids(
            name,
            (user.uid.as_raw(), user.gid.as_raw()),
            &self.probe.id_maps,
        )
        .map_err(|e| e.to_string())?;
        Ok(RunAs::User { uid, gid })
    }

    fn log_startup(&self) {
        let p = &self.probe;
        for (missing, what) in [
            (p.landlock_abi == 0, "Landlock is unavailable: steps can write wherever their user may"),
            (!p.seccomp, "seccomp is unavailable: steps are not filtered by the syscall deny-list"),
            (p.cgroups.v2.is_none(), "no writable cgroup v2 hierarchy: processes that leave the step's process group (setsid) cannot be contained"),
            (p.pid1, "runbookd runs as PID 1: run it under an init such as tini so orphaned step processes are reaped"),
        ] {
            if missing {
                tracing::warn!("sandbox: {what}");
            }
        }
        if p.euid_root && self.drop_to.is_none() {
            tracing::warn!("sandbox: running as root with allow_root_steps: steps run as root");
        }
        if !p.euid_root {
            tracing::info!(
                "sandbox: not running as root, so steps run as this user (no identity drop)"
            );
        }
        if self.config.default_pids.is_some() && !(p.cgroups.v2_pids || p.cgroups.v1_pids.is_some())
        {
            tracing::warn!("sandbox: no pids cgroup controller: the default pids limit of steps cannot be applied");
        }
        let r = &self.reaped;
        if r.instances > 0 {
            tracing::warn!(
                instances = r.instances,
                cgroups = r.cgroups,
                scratch_dirs = r.scratch_dirs,
                "cleaned up after runbookd processes that died without doing so: killed their steps' leftover processes, removed their scratch directories"
            );
        }
        tracing::info!(
            landlock_abi = p.landlock_abi,
            seccomp = p.seccomp,
            netns = p.netns,
            cgroup_v2 = p.cgroups.v2.is_some(),
            "sandbox probed"
        );
    }

    /// Removes this instance's cgroup directories (at exit).
    pub fn release(&self) {
        drop(std::mem::take(&mut *self.lock_pool()));
        self.probe.cgroups.remove_instance(self.instance.id());
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Vec<StepCgroup>> {
        self.cgroup_pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An idle step cgroup made earlier with these limits.
    fn pooled(&self, limits: Limits) -> Option<StepCgroup> {
        let mut pool = self.lock_pool();
        let at = pool.iter().position(|cg| cg.limits() == limits)?;
        let cg = pool.swap_remove(at);
        drop(pool);
        match cg.reset_limits() {
            Ok(()) => Some(cg),
            Err(e) => {
                tracing::debug!(error = %e, "a pooled step cgroup is not reused");
                tokio::spawn(cg.remove());
                None
            }
        }
    }

    /// Takes back a finished step's cgroup: an empty, reusable one waits
    /// for the next step with the same limits (making and removing a
    /// cgroup directory costs more than the rest of a short step's
    /// sandbox); any other is removed. `emptied`: its `cgroup.events` was
    /// just read and said no process is left.
    pub fn recycle(&self, cg: StepCgroup, emptied: bool) {
        if cg.reusable_when(emptied) {
            let mut pool = self.lock_pool();
            if pool.len() < CGROUP_POOL {
                pool.push(cg);
                return;
            }
        }
        // The kernel may take a moment to empty the cgroup after the last
        // exit; removing it need not delay the step's result.
        tokio::spawn(cg.remove());
    }

    /// Builds the sandboxed command for `argv`.
    ///
    /// # Errors
    /// A layer the step asks for that the host cannot give, or a failure to
    /// set one up; the step then fails with this reason.
    pub fn prepare(
        &self,
        argv: &[String],
        env: &BTreeMap<String, String>,
        run_dir: &Scratch,
        opts: &StepOptions,
    ) -> Result<Prepared, String> {
        let scratch = run_dir.path();
        let policy = self.read_policy();
        if argv.is_empty() {
            return Err("empty argv".to_owned());
        }
        if !scratch.is_dir() {
            return Err(format!(
                "scratch directory `{}` is missing",
                scratch.display()
            ));
        }
        for w in &opts.writable_paths {
            let real = std::fs::canonicalize(w)
                .map_err(|e| format!("writable path `{}`: {e}", w.display()))?;
            if let Some(p) = policy
                .protected
                .iter()
                .find(|p| p.starts_with(&real) || real.starts_with(p))
            {
                return Err(format!(
                    "writable path `{}` would let the step write `{}`, which holds runbookd's store, configuration, secrets or other runs' scratch directories: name a narrower path (or move `sandbox.runtime_dir`, e.g. to /run/runbookd)",
                    w.display(),
                    p.display()
                ));
            }
        }
        if opts.network_none && !self.probe.netns {
            return Err("`network: none` needs a network namespace, which runbookd can only create when it runs as root on a kernel with network namespaces".to_owned());
        }
        let mut record = SandboxRecord {
            applied: vec![
                "session".into(),
                "process-group".into(),
                "env-allowlist".into(),
                "scratch".into(),
                "rlimits".into(),
                "no-new-privs".into(),
            ],
            unavailable: Vec::new(),
        };

        let h = &self.probe.cgroups;
        let mut limits = opts.limits;
        if limits.pids.is_none() {
            // The default applies where a pids controller exists; its absence
            // was warned about at startup and is recorded on the step.
            if h.v2_pids || h.v1_pids.is_some() {
                limits.pids = self.config.default_pids;
            } else if self.config.default_pids.is_some() {
                record.unavailable.push("pids-limit".into());
            }
        }
        let wants_cgroup = h.v2.is_some() || limits != Limits::default();
        let cgroup = if wants_cgroup {
            match self.pooled(limits) {
                Some(cg) => Some(cg),
                None => Some(StepCgroup::create(h, self.instance.id(), limits)?),
            }
        } else {
            None
        };
        if let Some(cg) = &cgroup {
            record.applied.extend(cg.layers.iter().cloned());
        }
        // The guard holds every step in a cgroup v2 of this instance.
        match (&self.guard, cgroup.as_ref().is_some_and(StepCgroup::in_v2)) {
            (Some(_), true) => record.applied.push("connect-guard".into()),
            (Some(_), false) => {
                return Err("the step has no cgroup v2 of runbookd's, so the connect guard would not hold it".into());
            }
            (None, _) if !self.config.guarded_ports.is_empty() => {
                record.unavailable.push("connect-guard".into());
            }
            (None, _) => {}
        }
        if h.v2.is_none() {
            record.unavailable.push("cgroup-v2".into());
        }
        let landlock = if self.probe.landlock_abi > 0 {
            let build = |granted: &Path| {
                landlock_ruleset(
                    landlock_abi(self.probe.landlock_abi),
                    &policy.readable,
                    granted,
                    &opts.writable_paths,
                )
                .map_err(|e| format!("cannot build the Landlock ruleset: {e}"))
            };
            // A few hundred rules: built once per run, or per slot.
            let fd = if opts.writable_paths.is_empty() {
                run_dir.ruleset(policy.generation, build)?
            } else {
                Arc::new(build(scratch)?)
            };
            record
                .applied
                .push(format!("landlock:v{}", self.probe.landlock_abi));
            Some(fd)
        } else {
            if !opts.writable_paths.is_empty() {
                tracing::debug!("writable_paths has no effect without Landlock");
            }
            record.unavailable.push("landlock".into());
            None
        };
        match &self.seccomp {
            Some(_) => record.applied.push("seccomp".into()),
            None => record.unavailable.push("seccomp".into()),
        }
        if opts.network_none {
            record.applied.push("network:none".into());
        }
        match self.instance.scratch_limit() {
            Some(n) => record.applied.push(format!("scratch-size:{n}")),
            None if self.config.scratch_size.is_some() => {
                record.unavailable.push("scratch-size".into());
            }
            None => {}
        }
        if self.probe.ipcns {
            record.applied.push("ipc-namespace".into());
        } else {
            record.unavailable.push("ipc-namespace".into());
        }
        let drop_to = self.identity(opts.run_as);
        if let Some((uid, _)) = drop_to {
            record.applied.push(format!("uid:{uid}"));
        }

        // The step's whole environment: the allowlist, the runbook's
        // variables, and HOME/TMPDIR, which no runbook may point elsewhere.
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        vars.insert("PATH".into(), self.config.path.clone());
        vars.insert("LANG".into(), "C.UTF-8".into());
        vars.extend(
            env.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "PATH" | "HOME" | "TMPDIR"))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let home = scratch.to_string_lossy().into_owned();
        vars.insert("HOME".into(), home.clone());
        vars.insert("TMPDIR".into(), home);
        let cgroup_fds = cgroup
            .as_ref()
            .map(StepCgroup::join_fds)
            .unwrap_or_default();
        let request = SpawnRequest {
            argv: argv.to_vec(),
            env: vars.into_iter().collect(),
            cwd: scratch.to_owned(),
            path: self.config.path.clone(),
            confine: Confinement {
                network_none: opts.network_none,
                ipc_namespace: self.probe.ipcns,
                cpu_soft: opts.timeout.as_secs() + 10,
                drop_to,
                landlock: landlock.is_some(),
                cgroups: cgroup_fds.len(),
                seccomp: self.seccomp.is_some(),
                kill_file: cgroup.as_ref().and_then(StepCgroup::kill_fd).is_some(),
            },
        };
        Ok(Prepared {
            request,
            record,
            cgroup,
            landlock,
        })
    }

    /// Forks a prepared step (in the helper, or here with the inline
    /// spawner); whether its exec happened is on its report pipe.
    ///
    /// # Errors
    /// Why the step could not be forked, worded for its record.
    pub async fn spawn(&self, p: &Prepared) -> Result<StepProcess, String> {
        let mut fds: Vec<RawFd> = p.landlock.iter().map(AsRawFd::as_raw_fd).collect();
        fds.extend(
            p.cgroup
                .as_ref()
                .map(StepCgroup::join_fds)
                .unwrap_or_default(),
        );
        fds.extend(p.cgroup.as_ref().and_then(StepCgroup::kill_fd));
        let program = p.request.argv.first().map_or("", String::as_str);
        let helper = match &self.spawner {
            Spawner::Helper(h) => Some(h),
            Spawner::Inline => None,
        };
        match helper {
            None => {
                let s = spawn_here(&p.request, &fds, self.seccomp.as_deref(), false)
                    .map_err(|f| f.reason(program))?;
                let pidfd = match pidfd_open(s.pid) {
                    Ok(fd) => fd,
                    Err(e) => {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(s.pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                        reap_here(s.pid);
                        return Err(format!(
                            "pidfd_open failed (Linux 5.3 or later is needed): {e}"
                        ));
                    }
                };
                Ok(StepProcess {
                    pid: s.pid,
                    pidfd,
                    stdout: s.stdout,
                    stderr: s.stderr,
                    report: s.report,
                    lost: CancellationToken::new(),
                    reaper: Reaper::Here,
                })
            }
            Some(h) => {
                let owned = fds
                    .iter()
                    .map(|&fd| {
                        // SAFETY: `fd` is open for the duration of this call
                        // (owned by `p`); the copy is what travels.
                        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()
                    })
                    .collect::<io::Result<Vec<OwnedFd>>>()
                    .map_err(|e| format!("cannot run `{program}`: {e}"))?;
                let s = h.spawn(p.request.clone(), owned).await?;
                let generation = s.generation();
                Ok(StepProcess {
                    pid: s.pid,
                    pidfd: s.pidfd,
                    stdout: s.stdout,
                    stderr: s.stderr,
                    report: s.report,
                    lost: s.lost,
                    reaper: Reaper::Helper(generation),
                })
            }
        }
    }

    /// Reaps a step whose leader has exited and whose group is killed.
    ///
    /// # Errors
    /// When whoever could reap it is gone (the helper died).
    pub async fn reap(&self, pid: i32, reaper: Reaper) -> Result<ExitStatus, String> {
        match (reaper, &self.spawner) {
            (Reaper::Here, _) => Ok(reap_here(pid)),
            (Reaper::Helper(g), Spawner::Helper(h)) => h.reap(pid, g).await,
            (Reaper::Helper(_), Spawner::Inline) => Err(HELPER_DIED.to_owned()),
        }
    }
}

/// Waits for a child of this process that has exited.
fn reap_here(pid: i32) -> ExitStatus {
    let mut status = 0;
    // SAFETY: waitpid on our own child into a local.
    while unsafe { libc::waitpid(pid, &raw mut status, 0) } < 0 {
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    ExitStatus::from_raw(status)
}

/// Who reaps a started step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaper {
    /// runbookd (the inline spawner).
    Here,
    /// The spawn helper of this generation.
    Helper(u64),
}

/// A started step as runbookd holds it: the leader (unreaped), a pidfd that
/// becomes readable when it exits, its output pipes.
pub struct StepProcess {
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Closes at exec, or carries why the sandbox or the exec failed.
    pub report: OwnedFd,
    /// Cancelled when whoever holds the leader unreaped is gone (the spawn
    /// helper died): its group id may then be recycled, so the step is
    /// stopped by pidfd and cgroup only.
    pub lost: CancellationToken,
    pub reaper: Reaper,
}

fn landlock_abi(abi: i32) -> ABI {
    match abi {
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        _ => ABI::V6,
    }
}

/// The read rules every step gets, opened once at startup: read and execute
/// everywhere except beneath the hidden paths. Landlock only grants (a rule
/// covers everything beneath its directory), so the hidden paths are left
/// out by granting each sibling along the way down to them instead of
/// their common ancestors; directory *listing* is granted on `/` as a whole,
/// so names stay visible (`ls /`, `du /`) while contents beneath a hidden
/// path cannot be read. Entries that resolve into or above a hidden path
/// (symlinks) are followed to their real place and never granted whole.
fn readable_rules(
    hidden: &[PathBuf],
    abi: ABI,
) -> Result<Vec<(PathFd, BitFlags<AccessFs>)>, String> {
    let hidden: Vec<PathBuf> = hidden
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .filter(|p| p != Path::new("/"))
        .collect();
    let read = AccessFs::from_read(abi);
    let mut paths: Vec<(PathBuf, BitFlags<AccessFs>)> =
        vec![(PathBuf::from("/"), BitFlags::from(AccessFs::ReadDir))];
    if hidden.is_empty() {
        paths[0].1 = read;
    } else {
        grant_beside(Path::new("/"), &hidden, read, &mut paths);
    }
    open_rules(paths)
}

/// Opens the paths of the read rules; a path other than `/` that vanished
/// since it was listed is skipped.
fn open_rules(
    paths: Vec<(PathBuf, BitFlags<AccessFs>)>,
) -> Result<Vec<(PathFd, BitFlags<AccessFs>)>, String> {
    let mut rules = Vec::with_capacity(paths.len());
    for (p, access) in paths {
        match PathFd::new(&p) {
            Ok(fd) => rules.push((fd, access)),
            // An entry that vanished since it was listed (a temporary file
            // of another program) grants nothing; only `/` must be there.
            Err(e) if p != Path::new("/") => {
                tracing::debug!(path = %p.display(), error = %e, "skipped in the Landlock read rules");
            }
            Err(e) => return Err(format!("`{}`: {e}", p.display())),
        }
    }
    Ok(rules)
}

/// Grants `read` on every entry of `dir` (an ancestor of a hidden path)
/// except hidden paths, descending into the ancestors of hidden paths.
fn grant_beside(
    dir: &Path,
    hidden: &[PathBuf],
    read: BitFlags<AccessFs>,
    out: &mut Vec<(PathBuf, BitFlags<AccessFs>)>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // Where the entry really is; dangling links grant nothing.
        let Ok(resolved) = std::fs::canonicalize(&path) else {
            continue;
        };
        if hidden.iter().any(|h| resolved.starts_with(h)) {
            continue;
        }
        if hidden.iter().any(|h| h.starts_with(&resolved)) {
            // An ancestor of a hidden path, seen by its real name only: a
            // symlink to it is skipped here and its target walked once.
            if resolved == path {
                grant_beside(&path, hidden, read, out);
            }
            continue;
        }
        out.push((path, read));
    }
}

/// Builds a step's Landlock ruleset in the parent: the shared read rules,
/// full access beneath `granted` (the run's scratch dir, or the slot that
/// holds it) and `writable_paths`, write access to the null-like devices.
/// Nothing else, `/dev/tty` included.
fn landlock_ruleset(
    abi: ABI,
    readable: &[(PathFd, BitFlags<AccessFs>)],
    granted: &Path,
    writable: &[PathBuf],
) -> Result<OwnedFd, String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(|e| err(&e))?;
    if abi >= ABI::V6 {
        ruleset = ruleset.scope(Scope::from_all(abi)).map_err(|e| err(&e))?;
    }
    let mut created = ruleset.create().map_err(|e| err(&e))?;
    for (fd, access) in readable {
        created = created
            .add_rule(PathBeneath::new(fd, *access))
            .map_err(|e| err(&e))?;
    }
    created = created
        .add_rule(PathBeneath::new(
            PathFd::new(granted).map_err(|e| err(&e))?,
            AccessFs::from_all(abi),
        ))
        .map_err(|e| err(&e))?;
    for dev in ["/dev/null", "/dev/zero", "/dev/full"] {
        if let Ok(fd) = PathFd::new(dev) {
            created = created
                .add_rule(PathBeneath::new(fd, AccessFs::from_file(abi)))
                .map_err(|e| err(&e))?;
        }
    }
    for path in writable {
        let fd =
            PathFd::new(path).map_err(|e| format!("writable path `{}`: {e}", path.display()))?;
        created = created
            .add_rule(PathBeneath::new(fd, AccessFs::from_all(abi)))
            .map_err(|e| err(&e))?;
    }
    Option::<OwnedFd>::from(created)
        .ok_or_else(|| "the kernel did not create a Landlock ruleset".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_get_ids_their_user_namespace_maps() {
        let all = IdMaps {
            uids: parse_id_map("         0          0 4294967295\n"),
            gids: parse_id_map("         0          0 4294967295\n"),
        };
        assert_eq!(
            step_ids("nobody", (65534, 65534), &all).unwrap(),
            ((65534, 65534), None)
        );
        // podman --userns=auto: 1024 ids from 0.
        let auto = IdMaps {
            uids: parse_id_map("0 100000 1024\n"),
            gids: parse_id_map("0 100000 1024\n"),
        };
        let (ids, note) = step_ids("nobody", (65534, 65534), &auto).unwrap();
        assert_eq!(ids, (1023, 1023));
        assert!(note.unwrap().contains("uids 0-1023"));
        // A user someone named is never swapped for another.
        let err = step_ids("deploy", (2000, 2000), &auto)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`deploy` (uid 2000, gid 2000) is not mapped")
                && err.contains("uids 0-1023"),
            "{err}"
        );
        // Only root mapped: no one to drop to.
        let root_only = IdMaps {
            uids: parse_id_map("0 100000 1\n"),
            gids: parse_id_map("0 100000 1\n"),
        };
        assert!(step_ids("nobody", (65534, 65534), &root_only).is_err());
        // Root, and a range far above nobody's id: nothing to drop to below it.
        let split = IdMaps {
            uids: parse_id_map("0 100000 1\n70000 200000 1000\n"),
            gids: parse_id_map("0 100000 1\n70000 200000 1000\n"),
        };
        assert!(step_ids("nobody", (65534, 65534), &split).is_err());
        // Kubernetes hostUsers: false maps 65536 ids: nobody is inside.
        let k8s = IdMaps {
            uids: parse_id_map("0 1879048192 65536\n"),
            gids: parse_id_map("0 1879048192 65536\n"),
        };
        assert_eq!(
            step_ids("nobody", (65534, 65534), &k8s).unwrap().0,
            (65534, 65534)
        );
    }

    #[test]
    fn a_listed_entry_that_vanished_does_not_stop_the_start() {
        // Another program's temporary file, listed in /tmp and removed
        // before its rule was opened (this made starts fail under load).
        let read = AccessFs::from_read(ABI::V1);
        let rules = open_rules(vec![
            (PathBuf::from("/"), BitFlags::from(AccessFs::ReadDir)),
            (PathBuf::from("/nonexistent/vanished-tmp-file"), read),
            (PathBuf::from("/etc"), read),
        ])
        .unwrap();
        assert_eq!(rules.len(), 2);
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(parse_memory("256Mi"), Ok(256 << 20));
        assert_eq!(parse_memory("1Gi"), Ok(1 << 30));
        assert_eq!(parse_memory("500M"), Ok(500_000_000));
        assert_eq!(parse_memory("4096"), Ok(4096));
        for bad in ["", "Mi", "12XB", "0", "-1Mi", "1.5Gi"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }
}
