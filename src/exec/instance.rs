//! One executing runbookd process, provably: a runtime directory shared by
//! every runbookd of this user, in which each process holds an exclusive
//! `flock` on its own `<id>.lock` for as long as it lives, and keeps its
//! steps' scratch directories under `<id>/`. Its step cgroups are named after
//! the same id.
//!
//! Ownership is therefore a lock, not a guess from process names or ids: the
//! kernel drops the lock when the owner dies (kill -9 included), so whoever
//! can take it knows the owner is gone and may kill that instance's leftover
//! step processes and remove its scratch. A live owner, whatever its binary
//! is called (the test binary runs the app in process), keeps its lock and is
//! never touched.
//!
//! Layout (default `$TMPDIR/runbookd-<uid>`, `sandbox.runtime_dir`):
//! ```text
//! runbookd-0/            0711, owned by runbookd's user (checked, never a symlink)
//!   9f3c…e1.lock         0600, flock held by instance 9f3c…e1
//!   9f3c…e1/             0711: the instance's scratch root (cannot be listed)
//!     4b1d…77/           0700, owned by the step user: one run's scratch dir
//! ```
//! Run directories have 128-bit random names in a parent that cannot be
//! listed, and steps are refused read access to the runtime directory by
//! Landlock except for their own run's directory, so a run cannot read
//! another's scratch.
//!
//! A finished run's directory is kept for a later run of the same user
//! (making a directory and its Landlock ruleset costs more than a short
//! step), but only when it can be given back exactly as made: every process
//! of the run's steps is known to be gone (their cgroup v2 said so), its
//! contents are removed, its mode is 0700 again, its owner is unchanged and
//! it carries no extended attribute (ACLs included) a step could have left.
//! Anything else is removed as before.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use nix::fcntl::{Flock, FlockArg};

use super::cgroup::Hierarchies;

/// `n` random bytes from the kernel, as lower-case hex.
///
/// # Errors
/// When `/dev/urandom` cannot be read.
pub fn random_hex(n: usize) -> io::Result<String> {
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().fold(String::with_capacity(n * 2), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// The default runtime directory of this user.
#[must_use]
pub fn default_runtime_dir() -> PathBuf {
    std::env::temp_dir().join(format!("runbookd-{}", nix::unistd::geteuid().as_raw()))
}

/// This process's claim on the runtime directory; dropped, it releases the
/// lock and removes its scratch root.
#[derive(Debug)]
pub struct Instance {
    id: String,
    dir: PathBuf,
    scratch_root: PathBuf,
    /// Finished runs' directories, emptied, for later runs.
    idle: Arc<Mutex<Vec<Idle>>>,
    _lock: Flock<File>,
}

/// Most idle scratch directories kept.
const IDLE_SCRATCH: usize = 32;

/// An emptied scratch directory waiting for a run of the same user.
#[derive(Debug)]
struct Idle {
    path: PathBuf,
    owner: Option<(u32, u32)>,
    ids: (u32, u32),
    ruleset: Option<Arc<OwnedFd>>,
}

/// What cleaning up after dead instances found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reaped {
    pub instances: usize,
    pub cgroups: usize,
    pub scratch_dirs: usize,
}

/// Makes `dir` (mode `mode`) if missing, and checks it is a real directory
/// owned by this user: a directory under a shared `/tmp` made by someone
/// else, or a symlink planted there, is refused.
fn own_dir(dir: &Path, mode: u32) -> io::Result<()> {
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = fs::symlink_metadata(dir)?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_dir() || meta.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "`{}` is not a directory owned by uid {me}; refusing to keep step scratch there",
                dir.display()
            ),
        ));
    }
    if meta.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

impl Instance {
    /// Claims a new instance id in `runtime_dir` (made if missing).
    ///
    /// # Errors
    /// When the directory is unusable (not ours, not writable) or no lock can be taken.
    pub fn start(runtime_dir: &Path) -> io::Result<Instance> {
        let context = |what: &str, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("runtime directory `{}`: {what}: {e}", runtime_dir.display()),
            )
        };
        own_dir(runtime_dir, 0o711).map_err(|e| context("cannot use it", e))?;
        let id = random_hex(8)?;
        let lock_path = runtime_dir.join(format!("{id}.lock"));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|e| context("cannot create the instance lock", e))?;
        let scratch_root = runtime_dir.join(&id);
        writeln!(file, "pid={}", std::process::id())?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| context("cannot lock the instance lock", e.into()))?;
        own_dir(&scratch_root, 0o711).map_err(|e| context("cannot make the scratch root", e))?;
        Ok(Instance {
            id,
            dir: runtime_dir.to_owned(),
            scratch_root,
            idle: Arc::default(),
            _lock: lock,
        })
    }

    /// The id step cgroups are named after (`runbookd-<id>`).
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The runtime directory, which steps may not read (except their own scratch).
    #[must_use]
    pub fn runtime_dir(&self) -> &Path {
        &self.dir
    }

    /// An empty run scratch directory: 0700, owned by `owner` when given,
    /// with an unguessable name; when the returned value drops it is
    /// emptied for a later run ([`Scratch`]) or removed.
    ///
    /// # Errors
    /// When it cannot be made or handed to the step user.
    pub fn scratch(&self, owner: Option<(u32, u32)>) -> io::Result<Scratch> {
        let reused = {
            let mut idle = lock(&self.idle);
            let at = idle.iter().position(|d| d.owner == owner);
            at.map(|at| idle.swap_remove(at))
        };
        // A cleaner of /tmp may have removed an idle directory or the root.
        if let Some(d) = reused.filter(|d| d.path.is_dir()) {
            return Ok(Scratch {
                path: d.path,
                owner,
                ids: d.ids,
                ruleset: Mutex::new(d.ruleset),
                reusable: AtomicBool::new(true),
                idle: Arc::downgrade(&self.idle),
            });
        }
        own_dir(&self.scratch_root, 0o711)?;
        let path = self.scratch_root.join(random_hex(16)?);
        fs::DirBuilder::new().mode(0o700).create(&path)?;
        let mut scratch = Scratch {
            path,
            owner,
            ids: (u32::MAX, u32::MAX),
            ruleset: Mutex::new(None),
            // Never reused if it cannot be handed over whole.
            reusable: AtomicBool::new(false),
            idle: Arc::downgrade(&self.idle),
        };
        fs::set_permissions(&scratch.path, fs::Permissions::from_mode(0o700))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&scratch.path, Some(uid), Some(gid))?;
        }
        let meta = fs::symlink_metadata(&scratch.path)?;
        scratch.ids = (meta.uid(), meta.gid());
        scratch.reusable = AtomicBool::new(true);
        Ok(scratch)
    }

    /// Kills what dead instances left behind: the processes in their step
    /// cgroups (`setsid` escapees included), the cgroups, their scratch
    /// directories and lock files. An instance counts as dead only when its
    /// lock can be taken; one whose lock file is gone is left alone.
    #[must_use]
    pub fn reap_dead(&self, cgroups: &Hierarchies) -> Reaped {
        let mut reaped = Reaped::default();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return reaped;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".lock") else {
                continue;
            };
            if id == self.id || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let Ok(file) = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(entry.path())
            else {
                continue;
            };
            // Held: its owner lives.
            let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
                continue;
            };
            reaped.instances += 1;
            reaped.cgroups += cgroups.reap_instance(id);
            let scratch = self.dir.join(id);
            if fs::symlink_metadata(&scratch).is_ok_and(|m| m.is_dir())
                && remove_tree(&scratch).is_ok()
            {
                reaped.scratch_dirs += 1;
            }
            let _ = fs::remove_file(entry.path());
            drop(lock);
        }
        reaped
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        lock(&self.idle).clear();
        let _ = remove_tree(&self.scratch_root);
        let _ = fs::remove_file(self.dir.join(format!("{}.lock", self.id)));
    }
}

/// Removes a directory tree; files a step made read-only or unreadable to
/// itself are made removable first.
fn remove_tree(dir: &Path) -> io::Result<()> {
    // A step may have chmod-ed its directories to 0: open them up, then retry.
    fn open_up(dir: &Path) {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    open_up(&e.path());
                }
            }
        }
    }
    if fs::remove_dir_all(dir).is_ok() {
        return Ok(());
    }
    open_up(dir);
    fs::remove_dir_all(dir)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One run's scratch directory. Dropped, it is emptied and kept for a
/// later run of the same user when that is safe ([`Scratch::wipe`]), or
/// removed.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    owner: Option<(u32, u32)>,
    /// The owner and group it was made with.
    ids: (u32, u32),
    /// The Landlock ruleset of its steps without `writable_paths`, built
    /// once for the directory (a ruleset names the directory itself, and
    /// the kernel copies it into each step that restricts itself to it).
    ruleset: Mutex<Option<Arc<OwnedFd>>>,
    /// Cleared when a step's processes could not be shown to be gone.
    reusable: AtomicBool,
    idle: Weak<Mutex<Vec<Idle>>>,
}

impl Scratch {
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory's shared ruleset, built by `build` the first time.
    ///
    /// # Errors
    /// `build`'s.
    pub fn ruleset(
        &self,
        build: impl FnOnce() -> Result<OwnedFd, String>,
    ) -> Result<Arc<OwnedFd>, String> {
        let mut cached = lock(&self.ruleset);
        if let Some(fd) = &*cached {
            return Ok(fd.clone());
        }
        let fd = Arc::new(build()?);
        *cached = Some(fd.clone());
        Ok(fd)
    }

    /// A step ran here whose processes may outlive it (no cgroup v2 told
    /// they were gone): the directory is removed, never handed on.
    pub fn keep_from_reuse(&self) {
        self.reusable.store(false, Ordering::Relaxed);
    }

    /// Empties the directory and checks it is as [`Instance::scratch`] made
    /// it: still a directory of the same owner, mode 0700 again, nothing
    /// left in it, no extended attribute but the `security.` ones (which a
    /// step's user cannot set).
    fn wipe(&self) -> io::Result<()> {
        let dir = &self.path;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                remove_tree(&entry.path())?;
            } else {
                fs::remove_file(entry.path())?;
            }
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        let meta = fs::symlink_metadata(dir)?;
        let as_made = meta.is_dir()
            && (meta.uid(), meta.gid()) == self.ids
            && meta.permissions().mode() & 0o7777 == 0o700
            && fs::read_dir(dir)?.next().is_none();
        let mut names = [0u8; 1024];
        let listed =
            rustix::fs::llistxattr(dir.as_path(), &mut names[..]).map_err(io::Error::from)?;
        let no_xattrs = names[..listed]
            .split(|&b| b == 0)
            .all(|name| name.is_empty() || name.starts_with(b"security."));
        if as_made && no_xattrs {
            Ok(())
        } else {
            Err(io::Error::other("not as it was made"))
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.reusable.load(Ordering::Relaxed) {
            if let Some(idle) = self.idle.upgrade() {
                match self.wipe() {
                    Ok(()) => {
                        let mut idle = lock(&idle);
                        if idle.len() < IDLE_SCRATCH {
                            idle.push(Idle {
                                path: std::mem::take(&mut self.path),
                                owner: self.owner,
                                ids: self.ids,
                                ruleset: lock(&self.ruleset).take(),
                            });
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(dir = %self.path.display(), error = %e, "a run's scratch directory is removed, not reused");
                    }
                }
            }
        }
        let _ = remove_tree(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_instance_is_reaped_and_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let rt = dir.path().join("rt");
        let live = Instance::start(&rt).unwrap();
        let live_scratch = live.scratch(None).unwrap();
        // A dead instance (kill -9): its lock file and scratch stay, unlocked.
        let dead_id = "00112233aabbccdd";
        fs::write(rt.join(format!("{dead_id}.lock")), "pid=1\n").unwrap();
        let dead_root = rt.join(dead_id);
        fs::create_dir_all(dead_root.join("run/sub")).unwrap();
        fs::set_permissions(dead_root.join("run"), fs::Permissions::from_mode(0o000)).unwrap();
        let me = Instance::start(&rt).unwrap();
        let reaped = me.reap_dead(&Hierarchies::default());
        assert_eq!(reaped.instances, 1, "{reaped:?}");
        assert_eq!(reaped.scratch_dirs, 1);
        assert!(!dead_root.exists());
        assert!(!rt.join(format!("{dead_id}.lock")).exists());
        assert!(
            live_scratch.path().exists(),
            "a live instance keeps its scratch"
        );
        let mode = fs::metadata(live_scratch.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let root_mode = fs::metadata(&rt).unwrap().permissions().mode();
        assert_eq!(root_mode & 0o777, 0o711, "the runtime dir cannot be listed");
    }

    #[test]
    fn a_runtime_dir_that_is_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let link = dir.path().join("rt");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let err = Instance::start(&link).unwrap_err();
        assert!(
            err.to_string().contains("not a directory owned by"),
            "{err}"
        );
    }
}
