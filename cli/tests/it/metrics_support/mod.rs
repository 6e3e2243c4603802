//! Helpers for the metrics tests, which run the real thing: `promtool`, `prometheus`,
//! `prometheus-pushgateway` (Debian packages, installed by `.ci/run`), all on loopback.
#![allow(dead_code)] // each test file uses a subset

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn vrift_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrift"))
}

/// `vrift --the-source-root STORE`.
pub fn vrift(store: &Path) -> Command {
    let mut c = Command::new(vrift_bin());
    c.env_remove("VR_THE_SOURCE");
    c.arg("--the-source-root").arg(store).arg("--no-progress");
    c
}

pub fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The paths of the named tools. When one is missing the test is skipped with a printed
/// reason, except in CI (`CI` set), where that is a failure.
pub fn tools(names: &[&str]) -> Option<Vec<PathBuf>> {
    let found: Vec<Option<PathBuf>> = names.iter().map(|n| which(n)).collect();
    let missing: Vec<&str> = names
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(n, _)| *n)
        .collect();
    if missing.is_empty() {
        return Some(found.into_iter().flatten().collect());
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "CI is set but {} not installed (.ci/run installs the Debian packages prometheus and prometheus-pushgateway)",
            missing.join(", ")
        );
    }
    eprintln!(
        "SKIPPED: {} not found on PATH (apt-get install prometheus prometheus-pushgateway); CI is unset",
        missing.join(", ")
    );
    None
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vrift-metrics-")
        .tempdir()
        .expect("tempdir")
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A child process killed (and reaped) when dropped; keeps its stderr for diagnostics.
pub struct Proc {
    pub name: String,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Proc {
    /// Starts `cmd` with stderr (and stdout) captured.
    pub fn start(name: &str, mut cmd: Command) -> Proc {
        Self::start_with_url(name, &mut cmd, false).0
    }

    /// Starts `cmd` and, if `want_url`, waits (bounded) for the first `http://.../metrics` it
    /// prints on stderr.
    pub fn start_with_url(name: &str, cmd: &mut Command, want_url: bool) -> (Proc, String) {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        for stream in [
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let (log, tx) = (log.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(i) = line.find("http://") {
                        let url: String = line[i..]
                            .chars()
                            .take_while(|c| !c.is_whitespace() && *c != '"')
                            .collect();
                        if url.ends_with("/metrics") {
                            let _ = tx.send(url);
                        }
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let mut p = Proc {
            name: name.to_string(),
            child,
            log,
        };
        let url = if want_url {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(u) => u,
                Err(_) => panic!("{name} printed no metrics URL:\n{}", p.log()),
            }
        } else {
            String::new()
        };
        if let Ok(Some(st)) = p.child.try_wait() {
            panic!("{name} exited at once ({st}):\n{}", p.log());
        }
        (p, url)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) for the process to exit on its own; returns whether it succeeded.
    pub fn wait(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(50));
                return st.success();
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not finish within {limit:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into()
}

/// GET `url`: (status, body); status 0 when nothing answers.
pub fn get(url: &str) -> (u16, String) {
    match agent().get(url).call() {
        Ok(mut r) => {
            let status = r.status().as_u16();
            (status, r.body_mut().read_to_string().unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

/// GET `url` with query parameters.
pub fn get_query(url: &str, params: &[(&str, &str)]) -> (u16, String) {
    let mut req = agent().get(url);
    for (k, v) in params {
        req = req.query(*k, *v);
    }
    match req.call() {
        Ok(mut r) => {
            let status = r.status().as_u16();
            (status, r.body_mut().read_to_string().unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// Polls `f` every 200ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `url` answers 200 and returns the body.
pub fn wait_http_ok(url: &str, limit: Duration) -> String {
    wait_for(&format!("{url} to answer 200"), limit, || {
        let (s, body) = get(url);
        (s == 200).then_some(body)
    })
}

/// `promtool check metrics` on an exposition (it also lints names, units and help texts).
pub fn promtool_check_metrics(promtool: &Path, what: &str, text: &str) {
    assert!(!text.trim().is_empty(), "{what}: empty exposition");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed on {what}:\n{}{}\n--- exposition\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a promtool subcommand on a file and requires success.
pub fn promtool_check(promtool: &Path, kind: &str, file: &Path) {
    let out = Command::new(promtool)
        .args(["check", kind])
        .arg(file)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool check {kind} {} failed:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `files` (relative path → content) under `root`.
pub fn write_tree(root: &Path, files: &[(String, String)]) {
    for (rel, content) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
}

/// The value of the sample `name{labels...}` in an exposition (labels in any order).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = match series.split_once('{') {
            Some((n, rest)) => (n, rest),
            None => (series, ""),
        };
        if n != name {
            return None;
        }
        let all = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        all.then(|| value.parse().ok()).flatten()
    })
}
