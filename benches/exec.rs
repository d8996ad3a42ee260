//! Cost of one sandboxed step. `cargo bench --bench exec`; figures in docs/benchmarks.md.
//!
//! - `sandboxed_true`: a one-step run's scratch directory taken and given
//!   back, and `exec::process::run` of `/bin/true` in it with the default
//!   layers this host offers (process group, env allowlist, rlimits,
//!   no-new-privs, uid drop as root, Landlock, seccomp, a cgroup v2 per step),
//!   output captured. Goal: median ≤ 1.5 ms per step.
//! - `bare_spawn_true`: `std::process::Command` (`posix_spawn`) of `/bin/true`
//!   and wait, nothing else: the physical limit, measured in the same run.
//!
//! Each runs with 1 and 2 threads; steps/s = threads / median time.
//! Goal: sandboxed ≥ 60% of the bare spawn rate with 2 workers.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use runbookd::exec::{ExecSettings, NoSink, ProcessSpec, Sandbox, SandboxConfig, StepOptions};
use tokio_util::sync::CancellationToken;

fn main() {
    divan::main();
}

struct Setup {
    rt: tokio::runtime::Runtime,
    sandbox: Sandbox,
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    let sandbox = Sandbox::new(SandboxConfig {
        spawner: runbookd::exec::SpawnerConfig::Helper {
            program: env!("CARGO_BIN_EXE_runbookd").into(),
        },
        ..SandboxConfig::default()
    })
    .expect("sandbox");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    Setup { rt, sandbox }
});

#[divan::bench(threads = [1, 2])]
fn sandboxed_true(bencher: divan::Bencher) {
    let s = &*SETUP;
    let argv = vec!["/bin/true".to_owned()];
    let env = BTreeMap::new();
    let opts = StepOptions {
        timeout: Duration::from_secs(10),
        ..StepOptions::default()
    };
    let settings = ExecSettings::default();
    let cancel = CancellationToken::new();
    bencher.bench(|| {
        let scratch = s
            .sandbox
            .scratch_for(runbookd::exec::sandbox::RunAs::Default)
            .expect("scratch");
        let spec = ProcessSpec {
            argv: &argv,
            env: &env,
            scratch: &scratch,
            opts: &opts,
        };
        let r = s.rt.block_on(runbookd::exec::process::run(
            &s.sandbox,
            &settings,
            &spec,
            Arc::new(NoSink),
            &cancel,
        ));
        assert!(r.outcome.succeeded(), "{:?}", r.outcome);
    });
}

#[divan::bench(threads = [1, 2])]
fn bare_spawn_true(bencher: divan::Bencher) {
    bencher.bench(|| {
        let status = Command::new("/bin/true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("spawn");
        assert!(status.success());
    });
}
