//! What the sandbox enforces right now, layer by layer, and why a missing
//! layer is missing: `GET /api/v1/status`, `runbookd status` and the UI show
//! it, and `--strict-sandbox` refuses to start without the layers the
//! configuration asks for. Built from what the sandbox probed and set up,
//! never assumed.

use serde::{Deserialize, Serialize};

use super::sandbox::{RunAs, Sandbox};

/// One isolation layer around every step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// Steps run as another user than runbookd.
    UidDrop,
    /// Steps cannot read the store, credentials or secret files.
    Landlock,
    /// Steps cannot make the syscalls of the deny-list.
    Seccomp,
    /// Each step in a cgroup of its own: killed whole, however it forks.
    Cgroups,
    /// A cap on a step's processes and threads.
    PidsLimit,
    /// A cap on a step's memory (`resources.memory`).
    MemoryLimit,
    /// `network: none` steps get a network namespace without interfaces.
    NetworkNamespace,
    /// Each step gets an IPC namespace of its own.
    IpcIsolation,
    /// Steps cannot connect to runbookd's own port.
    ConnectGuard,
    /// A run's scratch directory is on a size-capped tmpfs.
    ScratchLimit,
}

/// A layer, whether it is enforced, and what it does or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerReport {
    pub layer: Layer,
    pub enforced: bool,
    pub detail: String,
}

/// Every layer, in the order above.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub layers: Vec<LayerReport>,
    /// runbookd's effective uid.
    pub uid: u32,
    /// `--strict-sandbox`: started only because the layers it requires are
    /// all enforced.
    pub strict: bool,
}

impl Report {
    #[must_use]
    pub fn get(&self, layer: Layer) -> Option<&LayerReport> {
        self.layers.iter().find(|l| l.layer == layer)
    }
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(
            || format!("uid {uid}"),
            |u| format!("{} (uid {uid})", u.name),
        )
}

/// What `sandbox` enforces now.
#[must_use]
pub fn report(sandbox: &Sandbox) -> Report {
    let p = &sandbox.probe;
    let c = &sandbox.config;
    let uid = nix::unistd::geteuid().as_raw();
    let cg = &p.cgroups;
    let mut layers = Vec::new();
    let mut add = |layer, enforced, detail: String| {
        layers.push(LayerReport {
            layer,
            enforced,
            detail,
        });
    };
    match sandbox.identity(RunAs::Default) {
        Some((step_uid, _)) if step_uid != uid => add(
            Layer::UidDrop,
            true,
            match &sandbox.drop_note {
                None => format!("steps run as {} (sandbox.run_as)", user_name(step_uid)),
                Some(note) => format!("steps run as {}: {note}", user_name(step_uid)),
            },
        ),
        _ if p.euid_root => add(
            Layer::UidDrop,
            false,
            "runbookd is root and `sandbox.allow_root_steps` is set: steps run as root".into(),
        ),
        _ => add(
            Layer::UidDrop,
            false,
            format!(
                "runbookd is not root ({}): steps run as its own user, which only Landlock keeps from its files",
                user_name(uid)
            ),
        ),
    }
    if p.landlock_abi > 0 {
        add(
            Layer::Landlock,
            true,
            format!(
                "ABI {}: steps cannot read the store, the config, credentials, secret files or other runs' scratch, and write only to their scratch and `writable_paths`",
                p.landlock_abi
            ),
        );
    } else {
        add(
            Layer::Landlock,
            false,
            "the kernel offers no Landlock (5.13 or later with `landlock` in its `lsm=` list)"
                .into(),
        );
    }
    if p.seccomp {
        add(
            Layer::Seccomp,
            true,
            "steps run with no_new_privs and a syscall deny-list (ptrace, mount, bpf, unshare, setns, keyctl, …)".into(),
        );
    } else {
        add(
            Layer::Seccomp,
            false,
            "the kernel has no seccomp filter support".into(),
        );
    }
    match (&cg.v2, (&cg.v1_memory, &cg.v1_pids)) {
        (Some(path), _) => add(
            Layer::Cgroups,
            true,
            format!(
                "cgroup v2 at {}: each step in its own cgroup, killed whole",
                path.display()
            ),
        ),
        (None, (m, pids)) if m.is_some() || pids.is_some() => add(
            Layer::Cgroups,
            true,
            format!(
                "cgroup v1 ({}): each step's processes counted, but one that leaves its process group (setsid) cannot be killed with it",
                [m.as_ref().map(|_| "memory"), pids.as_ref().map(|_| "pids")]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        _ => add(
            Layer::Cgroups,
            false,
            "no writable cgroup hierarchy (not root, or a container without a cgroup of its own): steps are limited by rlimits and the process group, and the pod's or host's limits".into(),
        ),
    }
    let pids = cg.v2_pids || cg.v1_pids.is_some();
    match (c.default_pids, pids) {
        (Some(n), true) => add(
            Layer::PidsLimit,
            true,
            format!("{n} processes and threads per step unless its runbook says otherwise (`resources.pids`)"),
        ),
        (None, true) => add(
            Layer::PidsLimit,
            true,
            "only for runbooks that set `resources.pids` (`sandbox.default_pids` is off)".into(),
        ),
        (_, false) => add(
            Layer::PidsLimit,
            false,
            "no pids cgroup controller: a step's processes are capped by RLIMIT_NPROC of its user only".into(),
        ),
    }
    if cg.v2_memory || cg.v1_memory.is_some() {
        add(
            Layer::MemoryLimit,
            true,
            "for runbooks that set `resources.memory` (the memory cgroup controller)".into(),
        );
    } else {
        add(
            Layer::MemoryLimit,
            false,
            "no memory cgroup controller: `resources.memory` falls back to RLIMIT_AS".into(),
        );
    }
    if p.netns {
        add(
            Layer::NetworkNamespace,
            true,
            "`network: none` steps run without network interfaces or Unix sockets".into(),
        );
    } else {
        add(
            Layer::NetworkNamespace,
            false,
            if p.euid_root {
                "a network namespace cannot be made here (a container without CAP_SYS_ADMIN?): `network: none` steps fail rather than run connected"
            } else {
                "not root: `network: none` steps fail rather than run connected"
            }
            .into(),
        );
    }
    if p.ipcns {
        add(
            Layer::IpcIsolation,
            true,
            "each step has an IPC namespace of its own (no shared memory or message queues with runbookd)".into(),
        );
    } else {
        add(
            Layer::IpcIsolation,
            false,
            "an IPC namespace cannot be made here (not root, or no CAP_SYS_ADMIN)".into(),
        );
    }
    if sandbox.guards_connections() {
        add(
            Layer::ConnectGuard,
            true,
            format!(
                "steps cannot connect to runbookd's port{} (cgroup BPF)",
                c.guarded_ports
                    .iter()
                    .map(|p| format!(" {p}"))
                    .collect::<Vec<_>>()
                    .concat()
            ),
        );
    } else {
        add(
            Layer::ConnectGuard,
            false,
            "needs root and a writable cgroup v2 hierarchy: steps can connect to runbookd's port, where every request but health checks needs a credential they cannot read".into(),
        );
    }
    match sandbox.scratch_limit() {
        Some(bytes) => add(
            Layer::ScratchLimit,
            true,
            format!(
                "run scratch directories share a tmpfs of {} MiB",
                bytes >> 20
            ),
        ),
        None => add(
            Layer::ScratchLimit,
            false,
            if c.scratch_size.is_none() {
                "`sandbox.scratch_size` is off: scratch directories share the runtime directory's filesystem".into()
            } else {
                format!(
                    "the scratch root cannot be a tmpfs of its own ({}): scratch directories share the runtime directory's filesystem, limited by the volume's size",
                    if p.euid_root {
                        "mounting needs CAP_SYS_ADMIN, which a container's profile usually drops"
                    } else {
                        "not root"
                    }
                )
            },
        ),
    }
    Report {
        layers,
        uid,
        strict: c.strict,
    }
}

/// The layers the configuration asks for that are not enforced, each with
/// why: what `--strict-sandbox` refuses to start without.
#[must_use]
pub fn missing_for_strict(r: &Report, sandbox: &Sandbox) -> Vec<String> {
    let c = &sandbox.config;
    let required = |l: Layer| match l {
        Layer::UidDrop => !c.allow_root_steps,
        Layer::Landlock | Layer::Seccomp | Layer::Cgroups | Layer::IpcIsolation => true,
        Layer::PidsLimit => c.default_pids.is_some(),
        Layer::ConnectGuard => !c.guarded_ports.is_empty(),
        Layer::ScratchLimit => c.scratch_size.is_some(),
        Layer::MemoryLimit | Layer::NetworkNamespace => false,
    };
    let name = |l: Layer| {
        serde_json::to_value(l)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let mut missing: Vec<String> = r
        .layers
        .iter()
        .filter(|l| !l.enforced && required(l.layer))
        .map(|l| format!("{}: {}", name(l.layer), l.detail))
        .collect();
    // Strict asks for cgroup v2: under v1 a step that calls setsid escapes
    // its kill.
    if sandbox.probe.cgroups.v2.is_none() && r.get(Layer::Cgroups).is_some_and(|l| l.enforced) {
        missing.push(format!(
            "{}: only cgroup v1 is writable; strict needs a writable cgroup v2 hierarchy",
            name(Layer::Cgroups)
        ));
    }
    missing
}
