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
//! As root, the scratch root is a `tmpfs` of its own, `sandbox.scratch_size`
//! large (1 GiB by default): steps filling their scratch directories get
//! `ENOSPC` there and never fill the disk that holds the store. It is
//! unmounted when the instance ends, or by whoever reaps a dead one.
//!
//! Run directories have 128-bit random names in a parent that cannot be
//! listed, and steps are refused read access to the runtime directory by
//! Landlock except for their own run's directory, so a run cannot read
//! another's scratch. (A step of the same user may still learn another
//! run's directory name from `/proc`, a command line or a bound socket,
//! and Landlock does not mediate `connect` or `chmod` there; only a user
//! per run would.)
//!
//! When steps run as a user other than root and runbookd's own (the default
//! when runbookd is root), a run's directory is made inside a *slot*: a
//! directory of runbookd's (0711, so steps can neither list nor change it)
//! that holds one run's directory at a time. A slot and its Landlock ruleset
//! (which grants beneath the slot) are kept for later runs, because building
//! a ruleset of a few hundred rules costs more than a short step; the run's
//! own directory is always new, so nothing a run held (an open descriptor,
//! an inotify watch, a planted file) reaches a later run's directory. A
//! slot goes to a later run only when every process of the run's steps is
//! known to be gone (their cgroup v2 said so) and the slot is exactly as
//! made: empty, 0711, runbookd's, with the same extended attributes.
//! Anything else removes it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use nix::fcntl::{Flock, FlockArg};
use rustix::fs::{AtFlags, Mode, OFlags};

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
    /// `Some(bytes)`: the scratch root is a `tmpfs` of that size.
    scratch_limit: Option<u64>,
    /// Slots of finished runs, for later runs.
    idle: Arc<Mutex<Vec<Slot>>>,
    _lock: Flock<File>,
}

/// Most idle slots kept.
const IDLE_SLOTS: usize = 32;

/// A directory of runbookd's holding one run's scratch directory at a time,
/// with the Landlock ruleset that grants beneath it.
#[derive(Debug)]
struct Slot {
    path: PathBuf,
    /// Its extended attributes' names when made.
    xattrs: Vec<u8>,
    ruleset: Option<(u64, Arc<OwnedFd>)>,
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
    /// Claims a new instance id in `runtime_dir` (made if missing); as
    /// root, its scratch root becomes a `tmpfs` of `scratch_size` bytes.
    ///
    /// # Errors
    /// When the directory is unusable (not ours, not writable) or no lock can be taken.
    pub fn start(runtime_dir: &Path, scratch_size: Option<u64>) -> io::Result<Instance> {
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
        let scratch_limit = scratch_size.filter(|_| nix::unistd::geteuid().is_root()).and_then(|size| {
            let options = format!("size={size},mode=0711,uid=0,gid=0");
            match nix::mount::mount(
                Some("runbookd-scratch"),
                &scratch_root,
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                Some(options.as_str()),
            ) {
                Ok(()) => Some(size),
                Err(e) => {
                    tracing::warn!(error = %e, dir = %scratch_root.display(), "sandbox: the scratch root cannot be a tmpfs of its own, so steps' scratch directories have no size limit and share the runtime directory's filesystem");
                    None
                }
            }
        });
        Ok(Instance {
            id,
            dir: runtime_dir.to_owned(),
            scratch_root,
            scratch_limit,
            idle: Arc::default(),
            _lock: lock,
        })
    }

    /// The size of the scratch root's own `tmpfs`, when it has one.
    #[must_use]
    pub fn scratch_limit(&self) -> Option<u64> {
        self.scratch_limit
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

    /// A new, empty run scratch directory: 0700, owned by `owner` when
    /// given, with an unguessable name; removed when the returned value
    /// drops (its slot, if any, kept for a later run when that is safe).
    ///
    /// # Errors
    /// When it cannot be made or handed to the step user.
    pub fn scratch(&self, owner: Option<(u32, u32)>) -> io::Result<Scratch> {
        // A cleaner of /tmp may have removed an idle root, or the runtime
        // dir above it (which another user could then have made): check
        // both, making the root again.
        own_dir(&self.dir, 0o711)?;
        own_dir(&self.scratch_root, 0o711)?;
        // Only a step user who owns nothing of runbookd's may share slots:
        // root, or runbookd's own user, could change one.
        let me = nix::unistd::geteuid().as_raw();
        let slotted = owner.is_some_and(|(uid, _)| uid != 0 && uid != me);
        let mut slot = if slotted {
            let idle = lock(&self.idle).pop();
            if let Some(slot) =
                idle.filter(|s| fs::symlink_metadata(&s.path).is_ok_and(|m| m.is_dir()))
            {
                Some(slot)
            } else {
                let path = self.scratch_root.join(random_hex(16)?);
                fs::DirBuilder::new().mode(0o711).create(&path)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o711))?;
                let xattrs = xattr_names(&path)?;
                Some(Slot {
                    path,
                    xattrs,
                    ruleset: None,
                })
            }
        } else {
            None
        };
        let parent = slot.as_ref().map_or(&self.scratch_root, |s| &s.path);
        let path = parent.join(random_hex(16)?);
        if let Err(e) = fs::DirBuilder::new().mode(0o700).create(&path) {
            if let Some(slot) = slot {
                let _ = remove_tree(&slot.path);
            }
            return Err(e);
        }
        let scratch = Scratch {
            ruleset: Mutex::new(slot.as_mut().and_then(|s| s.ruleset.take())),
            slot,
            path,
            // Until it is made whole: a failure below removes the slot.
            reusable: AtomicBool::new(false),
            idle: Arc::downgrade(&self.idle),
        };
        fs::set_permissions(&scratch.path, fs::Permissions::from_mode(0o700))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&scratch.path, Some(uid), Some(gid))?;
        }
        scratch.reusable.store(true, Ordering::Relaxed);
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
            unmount(&scratch);
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
        if self.scratch_limit.is_some() {
            unmount(&self.scratch_root);
        }
        let _ = remove_tree(&self.scratch_root);
        let _ = fs::remove_file(self.dir.join(format!("{}.lock", self.id)));
    }
}

/// Detaches a scratch root's `tmpfs` (nothing when it is none).
fn unmount(dir: &Path) {
    let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
}

/// The most entries [`remove_tree`] visits before giving up on a tree (a
/// step may leave millions): what is left is logged and stays.
const REMOVE_BUDGET: u64 = 2_000_000;

/// Removes a directory tree that a step may have made hostile: nested tens
/// of thousands deep, directories chmod-ed to 0, links to elsewhere.
/// Without recursion (constant stack: a deep tree cannot crash runbookd, as
/// std's recursive `remove_dir_all` does at ~14,000 levels) and with a
/// constant number of descriptors: it walks down one directory at a time
/// and back up through `..`, removing files as it goes.
///
/// Each directory is made runbookd's and 0700 before it is listed
/// ([`enter`]): root without `CAP_DAC_OVERRIDE` (Kubernetes' Baseline
/// profile) cannot enter a step's 0700 directory, and a directory that is
/// runbookd's cannot be changed by a step of another user while it is
/// walked, so no name is swapped for a link between a check and its use
/// and `..` leads back where the walk came from. Nothing is followed.
fn remove_tree(dir: &Path) -> io::Result<()> {
    let (Some(parent), Some(top)) = (dir.parent(), dir.file_name()) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // runbookd's own directory (the runtime dir, a scratch root or a slot).
    let parent = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut cur = match enter(&parent, top) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    let mut path: Vec<std::ffi::OsString> = Vec::new();
    let mut visited = 0u64;
    loop {
        let mut sub = None;
        for entry in rustix::fs::Dir::read_from(&cur)? {
            let entry = entry?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            visited += 1;
            if visited > REMOVE_BUDGET {
                return Err(io::Error::other(format!(
                    "more than {REMOVE_BUDGET} entries under {}: left in place",
                    dir.display()
                )));
            }
            let name = std::ffi::OsStr::from_bytes(name.to_bytes());
            let is_dir = match entry.file_type() {
                rustix::fs::FileType::Directory => true,
                rustix::fs::FileType::Unknown => {
                    rustix::fs::statat(&cur, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
                        rustix::fs::FileType::from_raw_mode(st.st_mode)
                            == rustix::fs::FileType::Directory
                    })
                }
                _ => false,
            };
            if is_dir {
                sub = Some(name.to_owned());
                break;
            }
            match rustix::fs::unlinkat(&cur, name, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(name) = sub {
            cur = enter(&cur, &name)?;
            path.push(name);
            continue;
        }
        // `cur` is empty: remove it from its parent, and go on there.
        let Some(name) = path.pop() else {
            drop(cur);
            rustix::fs::unlinkat(&parent, top, AtFlags::REMOVEDIR)?;
            return Ok(());
        };
        let up = rustix::fs::openat(
            &cur,
            "..",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        drop(cur);
        rustix::fs::unlinkat(&up, name.as_os_str(), AtFlags::REMOVEDIR)?;
        cur = up;
    }
}

/// Opens directory `name` of `dir` (runbookd's, which no step can write)
/// for listing, made runbookd's and 0700 first when it is not: `CAP_CHOWN`
/// suffices where `CAP_DAC_OVERRIDE` is missing. A link or a file is
/// refused, never followed.
fn enter(dir: &OwnedFd, name: &std::ffi::OsStr) -> io::Result<OwnedFd> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
        return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
    }
    let (me, group) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    if st.st_uid != me {
        rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(me)),
            Some(rustix::fs::Gid::from_raw(group)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    if st.st_uid != me || st.st_mode & 0o700 != 0o700 {
        // `dir` cannot change under us: `name` is the directory just checked.
        rustix::fs::chmodat(dir, name, Mode::RWXU, AtFlags::empty())?;
    }
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The names of a file's extended attributes, as the kernel lists them.
fn xattr_names(path: &Path) -> io::Result<Vec<u8>> {
    let mut names = [0u8; 1024];
    let n = rustix::fs::llistxattr(path, &mut names[..]).map_err(io::Error::from)?;
    Ok(names[..n].to_vec())
}

/// One run's scratch directory, removed on drop.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    /// The slot it is in (whose ruleset is the one below while it is).
    slot: Option<Slot>,
    /// The Landlock ruleset of its steps without `writable_paths`, built
    /// once (for the slot, when there is one: the kernel copies a ruleset
    /// into each step that restricts itself to it), with the generation of
    /// the sandbox's read policy it was built for.
    ruleset: Mutex<Option<(u64, Arc<OwnedFd>)>>,
    /// Cleared when a step's processes could not be shown to be gone.
    reusable: AtomicBool,
    idle: Weak<Mutex<Vec<Slot>>>,
}

impl Scratch {
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The shared ruleset of the run's steps under read policy
    /// `generation`, built by `build` the first time (and again when the
    /// policy changed since: a reload hid new files), given the directory
    /// it must grant beneath (the slot, or the run's directory).
    ///
    /// # Errors
    /// `build`'s.
    pub fn ruleset(
        &self,
        generation: u64,
        build: impl FnOnce(&Path) -> Result<OwnedFd, String>,
    ) -> Result<Arc<OwnedFd>, String> {
        let mut cached = lock(&self.ruleset);
        if let Some((built_for, fd)) = &*cached {
            if *built_for == generation {
                return Ok(fd.clone());
            }
        }
        let granted = self.slot.as_ref().map_or(&self.path, |s| &s.path);
        let fd = Arc::new(build(granted)?);
        *cached = Some((generation, fd.clone()));
        Ok(fd)
    }

    /// A step ran here whose processes may outlive it (no cgroup v2 told
    /// they were gone): its slot is removed, never handed on.
    pub fn keep_from_reuse(&self) {
        self.reusable.store(false, Ordering::Relaxed);
    }
}

impl Slot {
    /// Whether it is as [`Instance::scratch`] made it: a directory of
    /// runbookd's, 0711, empty, with the same extended attributes.
    fn as_made(&self) -> bool {
        let me = nix::unistd::geteuid().as_raw();
        fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.is_dir() && m.uid() == me && m.permissions().mode() & 0o7777 == 0o711)
            && fs::read_dir(&self.path).is_ok_and(|mut d| d.next().is_none())
            && xattr_names(&self.path).is_ok_and(|now| now == self.xattrs)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let removed = remove_tree(&self.path)
            .map_err(|e| {
                tracing::warn!(error = %e, dir = %self.path.display(), "a step's scratch directory could not be removed; it stays in the runtime directory");
            })
            .is_ok();
        let Some(mut slot) = self.slot.take() else {
            return;
        };
        if removed && self.reusable.load(Ordering::Relaxed) && slot.as_made() {
            if let Some(idle) = self.idle.upgrade() {
                let mut idle = lock(&idle);
                if idle.len() < IDLE_SLOTS {
                    slot.ruleset = lock(&self.ruleset).take();
                    idle.push(slot);
                    return;
                }
            }
        }
        let _ = remove_tree(&slot.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_instance_is_reaped_and_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let rt = dir.path().join("rt");
        let live = Instance::start(&rt, Some(8 << 20)).unwrap();
        let live_scratch = live.scratch(None).unwrap();
        // A dead instance (kill -9): its lock file and scratch stay, unlocked.
        let dead_id = "00112233aabbccdd";
        fs::write(rt.join(format!("{dead_id}.lock")), "pid=1\n").unwrap();
        let dead_root = rt.join(dead_id);
        fs::create_dir_all(dead_root.join("run/sub")).unwrap();
        fs::set_permissions(dead_root.join("run"), fs::Permissions::from_mode(0o000)).unwrap();
        let me = Instance::start(&rt, None).unwrap();
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
        // As root the live instance's scratch is a tmpfs of its own, gone
        // with the instance.
        let root = rt.join(live.id());
        let on_tmpfs = || {
            nix::sys::statfs::statfs(&root)
                .is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        };
        assert_eq!(on_tmpfs(), nix::unistd::geteuid().is_root());
        assert_eq!(
            live.scratch_limit().is_some(),
            nix::unistd::geteuid().is_root()
        );
        drop(live_scratch);
        drop(live);
        assert!(!root.exists(), "the scratch root is unmounted and removed");
    }

    #[test]
    fn a_runtime_dir_that_is_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let link = dir.path().join("rt");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let err = Instance::start(&link, None).unwrap_err();
        assert!(
            err.to_string().contains("not a directory owned by"),
            "{err}"
        );
    }
}
