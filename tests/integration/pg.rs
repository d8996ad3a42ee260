//! A throwaway PostgreSQL cluster per test: Debian's `postgresql` binaries,
//! a cluster in a temporary directory (run as the `postgres` user when the
//! tests run as root), on a loopback port of its own, stopped when dropped.
//! The benchmarks include this file too (`benches/replicas.rs`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The newest installed PostgreSQL's binaries (`/usr/lib/postgresql/N/bin`).
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

/// Whether PostgreSQL can be started here; under CI it must (this file is
/// shared with the benchmarks, hence its own check).
pub fn available() -> bool {
    if bin_dir().is_some() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "PostgreSQL (Debian package postgresql) is required under CI=true but not installed"
    );
    eprintln!("SKIP: PostgreSQL (Debian package postgresql) is not installed");
    false
}

pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    server: Option<Child>,
    databases: AtomicU32,
    fsync: bool,
    /// Further `-c` settings of the server.
    settings: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Pg {
    /// A new cluster, started, without fsync (the tests need semantics, not
    /// durability across power loss). Call [`available`] first.
    pub fn start() -> Pg {
        Pg::started(false, &[])
    }

    /// A new cluster with PostgreSQL's durable defaults (`fsync=on`), for
    /// the benchmarks' comparison with SQLite's `synchronous=FULL`.
    pub fn start_durable() -> Pg {
        Pg::started(true, &[])
    }

    /// [`Pg::start_durable`] with `pg_stat_statements` loaded, for counting
    /// a benchmark's statements (`CREATE EXTENSION` in each database).
    pub fn start_durable_counting() -> Pg {
        Pg::started(
            true,
            &[
                "shared_preload_libraries=pg_stat_statements",
                "pg_stat_statements.track=all",
                "pg_stat_statements.track_planning=on",
            ],
        )
    }

    fn started(fsync: bool, settings: &[&str]) -> Pg {
        use std::os::unix::fs::PermissionsExt;
        let bin = bin_dir().expect("PostgreSQL installed");
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        if nix::unistd::geteuid().is_root() {
            let pg = nix::unistd::User::from_name("postgres")
                .unwrap()
                .expect("the postgres user (Debian's postgresql package makes it)");
            nix::unistd::chown(&data, Some(pg.uid), Some(pg.gid)).unwrap();
        }
        let out = as_postgres(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Pg {
            dir,
            bin,
            port: free_port(),
            server: None,
            databases: AtomicU32::new(0),
            fsync,
            settings: settings.iter().map(|s| (*s).to_owned()).collect(),
        };
        pg.start_server();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn start_server(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("postgres.log")).unwrap();
        let child = as_postgres(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.data())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                if self.fsync { "fsync=on" } else { "fsync=off" },
                "-c",
                "max_connections=200",
            ])
            .args(self.settings.iter().flat_map(|s| ["-c", s]))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (fast shutdown: connections are cut).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.start_server();
    }

    /// A new, empty database; its URL.
    pub fn database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("runbookd_{n}");
        let out = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                &name,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "createdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// An interactive psql session on `url` (statements on its stdin,
    /// unaligned rows on its stdout), for holding a transaction open.
    pub fn session(&self, url: &str) -> Child {
        Command::new(self.bin.join("psql"))
            .args([url, "-At", "-q"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Runs SQL with psql; its unaligned output.
    pub fn psql(&self, url: &str, sql: &str) -> String {
        self.try_psql(url, sql)
            .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
    }

    /// `sql` through psql: its output, or PostgreSQL's error.
    pub fn try_psql(&self, url: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args([url, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `program` as the `postgres` user when root (PostgreSQL refuses root),
/// killed should the test process die first.
fn as_postgres(program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    if nix::unistd::geteuid().is_root() {
        cmd.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]);
    }
    cmd.args(["--pdeathsig", "KILL", "--"]).arg(program);
    cmd
}
