//! The Helm chart (`deploy/helm/runbookd`): rendered with `helm template`,
//! every object validated against the Kubernetes schemas with
//! `kubernetes-validate --strict`, held to the profile the sandbox needs
//! (Baseline: no privileged pod, capabilities dropped to what the uid drop
//! uses, a read-only root, a user namespace), and its Deployment run with
//! `podman play kube` from the image the container tests build, where a
//! real Alertmanager payload must run a runbook from the chart's ConfigMap.
//! No cluster can run here; what a cluster adds (scheduling, the Service,
//! the NetworkPolicy) is not tested.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::container::{image, ok, podman, podman_available};
use crate::exec::require;
use crate::helpers::stderr;
use crate::sandbox_report::{assert_report_matches, observed};

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/helm/runbookd")
}

/// helm, as scripts/test installs it (target/tools/bin), or on PATH.
fn helm() -> Option<PathBuf> {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/bin/helm");
    if local.is_file() {
        return Some(local);
    }
    Command::new("helm")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
        .then(|| PathBuf::from("helm"))
}

fn tools_available() -> Option<PathBuf> {
    let validate = Command::new("python3")
        .args(["-c", "import kubernetes_validate"])
        .output()
        .is_ok_and(|o| o.status.success());
    let helm = helm();
    require(
        helm.is_some() && validate,
        "helm and kubernetes-validate (scripts/test installs both)",
    )
    .then_some(helm)
    .flatten()
}

/// `helm template` with these `--set`/`--set-file` arguments.
fn render(helm: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(helm);
    cmd.args(["template", "t"]).arg(chart()).args(args);
    String::from_utf8(ok(cmd, &format!("helm template {args:?}")).stdout).unwrap()
}

/// `kubernetes-validate --strict` on rendered manifests: every object known
/// to Kubernetes 1.33 (custom resources it has no schema for are named).
fn validate(manifests: &str) -> String {
    let mut child = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "-k", "1.33", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), manifests.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "kubernetes-validate: {out}");
    out
}

/// The rendered objects, as JSON.
fn objects(manifests: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(manifests)
        .filter_map(|doc| {
            let v: Value = serde::Deserialize::deserialize(doc).ok()?;
            v.is_object().then_some(v)
        })
        .collect()
}

fn kind<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

#[test]
fn the_chart_renders_objects_kubernetes_accepts_in_the_baseline_profile() {
    let Some(helm) = tools_available() else {
        return;
    };
    let mut lint = Command::new(&helm);
    lint.args(["lint", "--strict"]).arg(chart());
    ok(lint, "helm lint");
    let sqlite = render(&helm, &[]);
    let postgres = render(
        &helm,
        &["--set", "postgres.enabled=true,postgres.url=postgres://runbookd@db:5432/runbookd,postgres.passwordSecret.name=pg,replicaCount=3"],
    );
    let operator = render(
        &helm,
        &[
            "--set",
            "serviceMonitor.enabled=true,alertmanagerConfig.enabled=true",
        ],
    );
    for m in [&sqlite, &postgres] {
        let out = validate(m);
        assert!(!out.contains("Couldn't find schema"), "{out}");
    }
    // The Prometheus Operator's kinds have no bundled schema: named, not checked.
    let out = validate(&operator);
    for crd in ["ServiceMonitor", "AlertmanagerConfig"] {
        assert!(out.contains(crd), "{out}");
    }
    // The profile, in every rendering.
    for m in [&sqlite, &postgres, &operator] {
        let objs = objects(m);
        let deploy = kind(&objs, "Deployment");
        assert_eq!(deploy.len(), 1, "{m}");
        let pod = &deploy[0]["spec"]["template"]["spec"];
        assert_eq!(pod["hostUsers"], false, "{pod:#}");
        assert_eq!(pod["automountServiceAccountToken"], false, "{pod:#}");
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1);
        let sc = &containers[0]["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{sc:#}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{sc:#}");
        assert_ne!(sc["privileged"], true, "{sc:#}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{sc:#}"
        );
        let mut added: Vec<&str> = sc["capabilities"]["add"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        added.sort_unstable();
        assert_eq!(added, ["CHOWN", "FOWNER", "KILL", "SETGID", "SETUID"]);
        let probes = |p: &str| containers[0][p]["httpGet"]["path"].clone();
        assert_eq!(probes("livenessProbe"), "/-/healthy");
        assert_eq!(probes("readinessProbe"), "/-/ready");
    }
    // SQLite: one replica on a claim, replaced (never two on one store);
    // PostgreSQL: N replicas, each named, and a disruption budget.
    let objs = objects(&sqlite);
    let d = kind(&objs, "Deployment")[0];
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    assert_eq!(kind(&objs, "PersistentVolumeClaim").len(), 1);
    assert!(kind(&objs, "PodDisruptionBudget").is_empty());
    let objs = objects(&postgres);
    let d = kind(&objs, "Deployment")[0];
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(kind(&objs, "PodDisruptionBudget").len(), 1);
    assert!(kind(&objs, "PersistentVolumeClaim").is_empty());
    let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "RUNBOOKD_REPLICA"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"),
        "{env:?}"
    );
    // Refusals: a password in the URL.
    let mut cmd = Command::new(&helm);
    cmd.args(["template", "t"]).arg(chart()).args([
        "--set",
        "postgres.enabled=true,postgres.url=postgres://runbookd:hunter2@db/runbookd",
    ]);
    let o = cmd.output().unwrap();
    assert!(
        !o.status.success(),
        "a password in postgres.url was rendered"
    );
}

/// The chart's Deployment with its defaults (a user namespace, the Baseline
/// capabilities), run by `podman play kube`, takes a real Alertmanager
/// payload and runs a runbook given in the chart's values, sandboxed.
/// podman 4.3 needs three things a cluster would do otherwise: the chart's
/// Secrets made with `podman secret create`, a pod network (slirp4netns;
/// it cannot make a user namespace on the host's network) and a `hostPort`
/// to reach the pod by (a Service, in a cluster).
#[test]
fn the_charts_deployment_runs_a_runbook_under_podman_play_kube() {
    if !podman_available("the chart's Deployment under podman") {
        return;
    }
    let Some(helm) = tools_available() else {
        return;
    };
    let image = image();
    let (repo, tag) = image.rsplit_once(':').unwrap();
    let dir = crate::helpers::open_tempdir();
    let look = crate::container::look();
    let rb = dir.path().join("look.yaml");
    std::fs::write(&rb, look).unwrap();
    let port = crate::alertmanager::free_port();
    let release = format!("t{}", std::process::id());
    let mut cmd = Command::new(&helm);
    cmd.args(["template", &release])
        .arg(chart())
        .args([
            "--set",
            &format!("image.repository={repo},image.tag={tag},image.pullPolicy=Never"),
            "--set-file",
        ])
        .arg(format!("runbooks.look\\.yaml={}", rb.display()));
    let manifests = String::from_utf8(ok(cmd, "helm template").stdout).unwrap();
    let mut played = Played {
        file: dir.path().join("played.yaml"),
        secrets: Vec::new(),
        volumes: Vec::new(),
    };
    let mut token = None;
    let mut docs = Vec::new();
    // Each document as helm wrote it (its YAML 1.1 octal modes stay octal),
    // the Deployment with a host port added.
    for text in manifests.split("\n---") {
        let Some(obj) = objects(text).pop() else {
            continue;
        };
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        match obj["kind"].as_str().unwrap() {
            "Secret" => {
                // podman 4.3 writes a Secret volume's `data` without decoding
                // it (and ignores `stringData`): give it the decoded values.
                let decoded: serde_json::Map<String, Value> = obj["data"]
                    .as_object()
                    .expect("the chart's Secrets carry `data`")
                    .iter()
                    .map(|(k, b)| {
                        use base64::Engine as _;
                        let raw = base64::engine::general_purpose::STANDARD
                            .decode(b.as_str().unwrap())
                            .unwrap();
                        (k.clone(), Value::from(String::from_utf8(raw).unwrap()))
                    })
                    .collect();
                if name.ends_with("-webhook") {
                    token = decoded["token"].as_str().map(str::to_owned);
                }
                let mut secret = obj.clone();
                secret["data"] = Value::Object(decoded);
                let file = dir.path().join(format!("{name}.json"));
                std::fs::write(&file, secret.to_string()).unwrap();
                let _ = podman(&["secret", "rm", &name]).output();
                let mut create = podman(&["secret", "create", &name]);
                create.arg(&file);
                ok(create, "podman secret create");
                played.secrets.push(name);
            }
            "Deployment" => {
                let line = "              containerPort: 9095\n";
                assert_eq!(text.matches(line).count(), 1, "{text}");
                docs.push(text.replace(
                    line,
                    &format!(
                        "{line}              hostPort: {port}\n              hostIP: 127.0.0.1\n"
                    ),
                ));
            }
            kind => {
                if kind == "PersistentVolumeClaim" {
                    played.volumes.push(name);
                }
                docs.push(text.to_owned());
            }
        }
    }
    let token = token.expect("the chart made a webhook token");
    std::fs::write(&played.file, docs.join("\n---")).unwrap();
    for v in &played.volumes {
        let _ = podman(&["volume", "rm", "-f", v]).output();
    }
    let mut play = podman(&[
        "play",
        "kube",
        "--start",
        "--network=slirp4netns",
        "--userns=auto:uidmapping=0:300000:1024,gidmapping=0:300000:1024",
    ]);
    play.arg(&played.file);
    let o = play.output().unwrap();
    assert!(
        o.status.success(),
        "podman play kube: {}\n{manifests}",
        stderr(&o)
    );
    let url = format!("http://127.0.0.1:{port}");
    crate::container::wait_ready(&url, &|| pod_logs(&release));
    let container = format!("{}-runbookd", pod_name(&release));
    let mut cat = podman(&[
        "exec",
        &container,
        "cat",
        "/var/lib/runbookd/operator.token",
    ]);
    cat.stderr(Stdio::piped());
    let operator = String::from_utf8(ok(cat, "reading the operator credential").stdout).unwrap();
    let operator = reqwest::Client::builder()
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", operator.trim()).parse().unwrap(),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .unwrap();
    let (out, status) =
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(crate::sandbox_report::post_and_observe(
                &url,
                &token,
                &operator,
                crate::container::captured_payload(),
                &|| pod_logs(&release),
            ));
    let out = out.as_str();
    // In the user namespace podman made (1,024 ids), not nobody's 65534.
    assert_eq!(observed(out, "uid"), "1023", "{out}");
    assert_eq!(observed(out, "Seccomp"), "2", "{out}");
    assert_eq!(observed(out, "credential"), "denied", "{out}");
    assert_report_matches(&status, out);
}

/// The pod `podman play kube` made for the release's Deployment.
fn pod_name(release: &str) -> String {
    let o = podman(&["pod", "ps", "--format", "{{.Name}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find(|n| n.starts_with(release))
        .unwrap_or_else(|| panic!("no pod of {release}"))
        .to_owned()
}

fn pod_logs(release: &str) -> String {
    let o = podman(&["pod", "logs", &pod_name(release)])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// What `podman play kube` made from a file: torn down when dropped.
struct Played {
    file: PathBuf,
    secrets: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for Played {
    fn drop(&mut self) {
        let _ = podman(&["play", "kube", "--down"]).arg(&self.file).output();
        for v in &self.volumes {
            let _ = podman(&["volume", "rm", "-f", v]).output();
        }
        for s in &self.secrets {
            let _ = podman(&["secret", "rm", s]).output();
        }
    }
}
