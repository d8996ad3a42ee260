//! Per-step cgroups: a cgroup v2 directory for containment (`cgroup.kill`
//! takes every process of the step, `setsid` and double-fork escapees
//! included), and memory/pids limits from cgroup v2 where its controllers are
//! delegated, or cgroup v1 where only v1 has them (hybrid hosts such as CI's).

use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where step cgroups can be made on this host (found once at startup).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Hierarchies {
    /// A writable cgroup v2 directory (ours) under which step cgroups go.
    pub v2: Option<PathBuf>,
    /// v2 has memory/pids controllers for children of `v2`.
    pub v2_memory: bool,
    pub v2_pids: bool,
    /// Writable v1 memory and pids hierarchies (our cgroup in each).
    pub v1_memory: Option<PathBuf>,
    pub v1_pids: Option<PathBuf>,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl Hierarchies {
    /// Finds writable hierarchies by making and removing a probe cgroup.
    #[must_use]
    pub fn probe() -> Self {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let own_path = |controller: &str| {
            own.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
                (ctrls.split(',').any(|c| c == controller))
                    .then(|| path.trim_start_matches('/').to_owned())
            })
        };
        let v2_rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(|p| p.trim_start_matches('/').to_owned());
        let mut h = Hierarchies::default();
        if let Some(rel) = v2_rel {
            for mount in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
                let Some(base) = ours(Path::new(mount), &rel) else {
                    continue;
                };
                if Path::new(mount).join("cgroup.controllers").exists()
                    && usable(&base, "cgroup.kill")
                {
                    let ctrls =
                        fs::read_to_string(base.join("cgroup.subtree_control")).unwrap_or_default();
                    h.v2_memory = ctrls.split_whitespace().any(|c| c == "memory");
                    h.v2_pids = ctrls.split_whitespace().any(|c| c == "pids");
                    h.v2 = Some(base);
                    break;
                }
            }
        }
        for (ctrl, slot, file) in [
            ("memory", &mut h.v1_memory, "memory.limit_in_bytes"),
            ("pids", &mut h.v1_pids, "pids.max"),
        ] {
            if let Some(base) =
                own_path(ctrl).and_then(|rel| ours(&Path::new("/sys/fs/cgroup").join(ctrl), &rel))
            {
                if usable(&base, file) {
                    *slot = Some(base);
                }
            }
        }
        h
    }
}

/// This process's cgroup directory in the hierarchy mounted at `mount`:
/// `mount/rel` (`rel` from /proc/self/cgroup), or, in a container that
/// shares the host's cgroup namespace, `mount` itself (the runtime mounts
/// the container's cgroup there, so the host path named in
/// /proc/self/cgroup does not exist inside). Either only when its
/// `cgroup.procs` lists this process.
fn ours(mount: &Path, rel: &str) -> Option<PathBuf> {
    let me = std::process::id().to_string();
    [mount.join(rel), mount.to_owned()].into_iter().find(|dir| {
        fs::read_to_string(dir.join("cgroup.procs"))
            .is_ok_and(|procs| procs.lines().any(|p| p.trim() == me))
    })
}

impl Hierarchies {
    fn bases(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.v2, &self.v1_memory, &self.v1_pids]
            .into_iter()
            .flatten()
    }

    /// Kills every process left in the step cgroups of instance `id` (whose
    /// lock the caller holds: its owner is dead) and removes them. Returns
    /// how many step cgroups were removed.
    #[must_use]
    pub fn reap_instance(&self, id: &str) -> usize {
        let mut reaped = 0;
        for base in self.bases() {
            let dir = base.join(format!("runbookd-{id}"));
            if !dir.is_dir() {
                continue;
            }
            // v2: one write kills the whole subtree.
            let _ = fs::write(dir.join("cgroup.kill"), "1");
            let steps: Vec<PathBuf> = fs::read_dir(&dir)
                .map(|es| {
                    es.flatten()
                        .map(|e| e.path())
                        .filter(|p| p.is_dir())
                        .collect()
                })
                .unwrap_or_default();
            for step in steps {
                kill_procs(&step);
                if remove_retrying(&step) {
                    reaped += 1;
                }
            }
            remove_retrying(&dir);
        }
        reaped
    }

    /// Removes this instance's (empty) cgroup directories at exit.
    pub fn remove_instance(&self, id: &str) {
        for base in self.bases() {
            let _ = fs::remove_dir(base.join(format!("runbookd-{id}")));
        }
    }
}

/// SIGKILL to every process listed in a cgroup's `cgroup.procs`.
fn kill_procs(dir: &Path) {
    for pid in fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
    {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// `rmdir` of a cgroup, retrying while the kernel finishes killed processes.
fn remove_retrying(dir: &Path) -> bool {
    for _ in 0..200 {
        match fs::remove_dir(dir) {
            Ok(()) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
            Err(_) => {
                kill_procs(dir);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
    false
}

/// Whether a child cgroup can be made under `base` and has `file`.
fn usable(base: &Path, file: &str) -> bool {
    // Unique per call: two sandboxes of one process (tests) probe at once.
    let probe = base.join(format!(
        "runbookd-probe-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let ok = fs::create_dir(&probe).is_ok() && probe.join(file).exists();
    let _ = fs::remove_dir(&probe);
    ok
}

/// Limits a step asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory: Option<u64>,
    pub pids: Option<u64>,
}

/// The cgroups of one step; [`StepCgroup::remove`] ends them.
#[derive(Debug)]
pub struct StepCgroup {
    dirs: Vec<PathBuf>,
    v2: Option<PathBuf>,
    memory_dir: Option<PathBuf>,
    procs: Vec<OwnedFd>,
    /// `cgroup.kill` of the v2 cgroup, handed to the spawn helper so it can
    /// take the step with it should runbookd die.
    kill_file: Option<OwnedFd>,
    limits: Limits,
    /// Where `pids.max` was written (v2, or a v1 pids hierarchy).
    pids_dir: Option<PathBuf>,
    /// Layers applied, for the step's sandbox record.
    pub layers: Vec<String>,
}

impl StepCgroup {
    /// Makes the step's cgroups: v2 for containment when available, plus the
    /// limits asked for.
    ///
    /// # Errors
    /// When a limit is asked for that no hierarchy can enforce, or a cgroup
    /// cannot be made.
    pub fn create(h: &Hierarchies, instance: &str, limits: Limits) -> Result<Self, String> {
        let name = format!(
            "runbookd-{instance}/s{}",
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut cg = StepCgroup {
            dirs: Vec::new(),
            v2: None,
            memory_dir: None,
            procs: Vec::new(),
            kill_file: None,
            limits,
            pids_dir: None,
            layers: Vec::new(),
        };
        if let Some(base) = &h.v2 {
            let dir = cg.make(&base.join(&name))?;
            cg.v2 = Some(dir.clone());
            let kill: File = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(dir.join("cgroup.kill"))
                .map_err(|e| format!("cannot open `{}/cgroup.kill`: {e}", dir.display()))?;
            cg.kill_file = Some(kill.into());
            cg.layers.push("cgroup-v2".to_owned());
            if let Some(m) = limits.memory.filter(|_| h.v2_memory) {
                write(&dir.join("memory.max"), &m.to_string())?;
                write(&dir.join("memory.swap.max"), "0").ok();
                cg.memory_dir = Some(dir.clone());
                cg.layers.push(format!("memory:{m}"));
            }
            if let Some(p) = limits.pids.filter(|_| h.v2_pids) {
                write(&dir.join("pids.max"), &p.to_string())?;
                cg.pids_dir = Some(dir.clone());
                cg.layers.push(format!("pids:{p}"));
            }
        }
        if let Some(m) = limits.memory.filter(|_| cg.memory_dir.is_none()) {
            let base = h.v1_memory.as_ref().ok_or_else(|| {
                "`resources.memory` needs a memory cgroup controller (v2 delegated, or v1), which this host does not offer to runbookd".to_owned()
            })?;
            let dir = cg.make(&base.join(&name))?;
            write(&dir.join("memory.limit_in_bytes"), &m.to_string())?;
            write(&dir.join("memory.memsw.limit_in_bytes"), &m.to_string()).ok();
            cg.memory_dir = Some(dir);
            cg.layers.push(format!("memory:{m}:v1"));
        }
        if let Some(p) = limits.pids.filter(|_| !(h.v2.is_some() && h.v2_pids)) {
            let base = h.v1_pids.as_ref().ok_or_else(|| {
                "`resources.pids` needs a pids cgroup controller (v2 delegated, or v1), which this host does not offer to runbookd".to_owned()
            })?;
            let dir = cg.make(&base.join(&name))?;
            write(&dir.join("pids.max"), &p.to_string())?;
            cg.pids_dir = Some(dir);
            cg.layers.push(format!("pids:{p}:v1"));
        }
        Ok(cg)
    }

    fn make(&mut self, dir: &Path) -> Result<PathBuf, String> {
        if let Some(parent) = dir.parent() {
            instance_dir(parent)?;
        }
        fs::create_dir(dir)
            .map_err(|e| format!("cannot create cgroup `{}`: {e}", dir.display()))?;
        self.dirs.push(dir.to_owned());
        let procs: File = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(dir.join("cgroup.procs"))
            .map_err(|e| format!("cannot open `{}/cgroup.procs`: {e}", dir.display()))?;
        self.procs.push(procs.into());
        Ok(dir.to_owned())
    }

    /// The `cgroup.procs` descriptors the child writes itself into.
    #[must_use]
    pub fn join_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Whether the cgroups can serve another step with the same limits:
    /// v2 (which tells when they are empty), no memory limit (whose OOM
    /// count would carry over), and no process left in any of them.
    #[must_use]
    pub fn reusable(&self) -> bool {
        self.reusable_when(self.emptied())
    }

    /// [`StepCgroup::reusable`], `emptied` having just been read.
    #[must_use]
    pub fn reusable_when(&self, emptied: bool) -> bool {
        emptied
            && self.memory_dir.is_none()
            && self.dirs.iter().all(|d| {
                fs::read_to_string(d.join("cgroup.procs")).is_ok_and(|s| s.trim().is_empty())
            })
            // Nothing a step (sharing runbookd's user, without Landlock)
            // could have left for the next one: a freeze, child cgroups.
            && self.v2.as_ref().is_some_and(|d| {
                fs::read_to_string(d.join("cgroup.freeze")).map_or(true, |s| s.trim() == "0")
                    && fs::read_dir(d)
                        .is_ok_and(|mut e| !e.any(|e| e.and_then(|e| e.file_type()).is_ok_and(|t| t.is_dir())))
            })
    }

    /// Before reuse: writes the pids limit again (a step that shares
    /// runbookd's user could have raised it where Landlock is missing).
    ///
    /// # Errors
    /// When the limit cannot be written.
    pub fn reset_limits(&self) -> Result<(), String> {
        if let (Some(dir), Some(p)) = (&self.pids_dir, self.limits.pids) {
            write(&dir.join("pids.max"), &p.to_string())?;
        }
        Ok(())
    }

    /// The limits it was made with.
    #[must_use]
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether the step's processes are in a cgroup v2 (of this instance).
    #[must_use]
    pub fn in_v2(&self) -> bool {
        self.v2.is_some()
    }

    /// The v2 `cgroup.kill` descriptor, when there is one.
    #[must_use]
    pub fn kill_fd(&self) -> Option<RawFd> {
        self.kill_file.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Whether the step's memory limit made the kernel kill a process.
    #[must_use]
    pub fn oom_killed(&self) -> bool {
        let Some(dir) = &self.memory_dir else {
            return false;
        };
        let count = |file: &str, key: &str| {
            fs::read_to_string(dir.join(file)).ok().and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix(key)
                        .and_then(|v| v.trim().parse::<u64>().ok())
                })
            })
        };
        // v2: memory.events; v1: memory.oom_control (kernel 4.13+).
        count("memory.events", "oom_kill ")
            .or_else(|| count("memory.oom_control", "oom_kill "))
            .unwrap_or(0)
            > 0
    }

    /// `populated` of the v2 cgroup's `cgroup.events`, when it can be read.
    fn populated_flag(&self) -> Option<bool> {
        let events = fs::read_to_string(self.v2.as_ref()?.join("cgroup.events")).ok()?;
        events
            .lines()
            .find_map(|l| l.strip_prefix("populated "))
            .map(|v| v.trim() == "1")
    }

    /// Whether any process of the step is still alive (v2 only).
    #[must_use]
    pub fn populated(&self) -> bool {
        self.populated_flag() == Some(true)
    }

    /// Whether the kernel says no process is left: only a v2 cgroup can
    /// tell (`populated 0` in `cgroup.events`).
    #[must_use]
    pub fn emptied(&self) -> bool {
        self.populated_flag() == Some(false)
    }

    /// Kills every process in the step's cgroups (escapees included).
    pub fn kill(&self) {
        match &self.v2 {
            Some(v2) => self.kill_dir(v2),
            None => self.dirs.iter().for_each(|d| self.kill_dir(d)),
        }
    }

    fn kill_dir(&self, dir: &Path) {
        if self.v2.as_deref() == Some(dir) {
            let _ = fs::write(dir.join("cgroup.kill"), "1");
            return;
        }
        kill_procs(dir);
    }

    /// Removes the directories, killing whatever still holds one (retrying
    /// while the kernel finishes the exits).
    pub async fn remove(mut self) {
        for dir in std::mem::take(&mut self.dirs).iter().rev() {
            for attempt in 0..200 {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) if attempt < 199 => {
                        self.kill_dir(dir);
                        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    }
                    Err(e) => {
                        tracing::warn!(cgroup = %dir.display(), error = %e, "cannot remove step cgroup");
                    }
                }
            }
        }
    }
}

impl Drop for StepCgroup {
    /// A step dropped mid-run (cancelled) still takes its processes with it.
    fn drop(&mut self) {
        if !self.dirs.is_empty() {
            self.kill();
            for dir in self.dirs.iter().rev() {
                let _ = fs::remove_dir(dir);
            }
        }
    }
}

/// The instance's cgroup (parent of its step cgroups), made on first use;
/// on cgroup v2 it passes the memory and pids controllers down when its
/// parent has them enabled for it.
pub(crate) fn instance_dir(dir: &Path) -> Result<(), String> {
    match fs::create_dir(dir) {
        Ok(()) => {
            if let Ok(ctrls) = fs::read_to_string(dir.join("cgroup.controllers")) {
                for c in ["memory", "pids"] {
                    if ctrls.split_whitespace().any(|x| x == c) {
                        let _ = fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
                    }
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create cgroup `{}`: {e}", dir.display())),
    }
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    fs::write(path, value)
        .map_err(|e| format!("cannot write `{value}` to `{}`: {e}", path.display()))
}
