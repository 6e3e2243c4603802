//! Getting metrics out of the process: a Prometheus recorder per exposition, a small HTTP
//! endpoint (`ingest --metrics-listen`, `serve --metrics`), the node_exporter textfile
//! (`--metrics-textfile`, written atomically) and the Pushgateway (`--metrics-push`).
//!
//! The recorders are `metrics-exporter-prometheus` ones built without its tokio/hyper
//! features: the endpoint is a few dozen lines of `std::net`, the push one blocking `ureq`
//! request. Recorders are used locally (never installed globally), so one process can keep
//! two expositions that differ in labels: the Pushgateway wants the grouping labels (`job`,
//! `project`) in its URL and not on the metrics, a textfile or an endpoint needs `project` on
//! the metrics themselves.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use vrift_pipeline::metrics::{self as m, IngestMetrics, Sampler};
use vrift_pipeline::Counters;
use vrift_remote::metrics::{self as rm, Command as RemoteCommand, RemoteMetrics};
use vrift_remote::RemoteStats;

/// The content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A recorder with vrift's histogram buckets (true histograms, never summaries).
pub fn recorder() -> PrometheusRecorder {
    let buckets = [
        (m::DURATION, &m::DURATION_BUCKETS[..]),
        (m::STAGE_BUSY, &m::DURATION_BUCKETS[..]),
        (m::LOCK_WAIT, &m::LOCK_WAIT_BUCKETS[..]),
        (rm::REQUEST_DURATION, &rm::REQUEST_BUCKETS[..]),
        (rm::DURATION, &rm::DURATION_BUCKETS[..]),
    ];
    let mut b = PrometheusBuilder::new();
    for (name, bounds) in buckets {
        b = b
            .set_buckets_for_metric(Matcher::Full(name.to_string()), bounds)
            .expect("bucket lists are not empty");
    }
    b.build_recorder()
}

// ---------------------------------------------------------------------------------------------
// HTTP endpoint

/// What the endpoint answers to `GET /metrics`: the exposition, or a status and a reason.
pub type Render = Arc<dyn Fn() -> std::result::Result<String, (u16, String)> + Send + Sync>;

/// Binds `addr` (e.g. `127.0.0.1:9464`; port 0 picks a free one).
pub fn bind(addr: &str) -> Result<TcpListener> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .with_context(|| format!("invalid listen address {addr:?} (use HOST:PORT)"))?
        .collect();
    TcpListener::bind(&addrs[..]).with_context(|| format!("cannot listen on {addr}"))
}

/// Serves `render` on `/metrics` from a background thread, one short thread per connection.
pub fn spawn_http(listener: TcpListener, render: Render) -> Result<()> {
    std::thread::Builder::new()
        .name("vrift-metrics-http".into())
        .spawn(move || serve_http(listener, render))?;
    Ok(())
}

/// Serves `render` on `/metrics` on the calling thread, forever.
pub fn serve_http(listener: TcpListener, render: Render) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let render = render.clone();
        let _ = std::thread::Builder::new()
            .name("vrift-metrics-conn".into())
            .spawn(move || {
                let _ = answer(conn, &render);
            });
    }
}

fn answer(mut conn: TcpStream, render: &Render) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Drain the headers (bounded): we need none of them.
    let mut line = String::new();
    for _ in 0..100 {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => match render() {
            Ok(text) => (200, CONTENT_TYPE, text),
            Err((code, why)) => (code, "text/plain; charset=utf-8", why + "\n"),
        },
        ("GET" | "HEAD", "/") => (
            200,
            "text/html; charset=utf-8",
            "<html><body><a href=\"/metrics\">/metrics</a></body></html>\n".to_string(),
        ),
        ("GET" | "HEAD", _) => (404, "text/plain; charset=utf-8", "not found\n".into()),
        _ => (
            405,
            "text/plain; charset=utf-8",
            "method not allowed\n".into(),
        ),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Error",
    };
    write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        conn.write_all(body.as_bytes())?;
    }
    conn.flush()
}

// ---------------------------------------------------------------------------------------------
// Textfile and Pushgateway

/// Writes `text` to `path` for node_exporter's textfile collector: a temp file in the same
/// directory (named so the collector, which reads `*.prom`, never sees it), renamed over the
/// old one. A reader sees the old file or the new one, never a part. There is no fsync: after
/// a crash the collector may see the previous run's numbers, and an fsync on a busy disk could
/// cost an ingest more than all of its metrics.
pub fn write_textfile(path: &Path, text: &str) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file path", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        // Readable by the node_exporter user whatever our umask.
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write metrics textfile {}", path.display()));
    }
    Ok(())
}

/// The Pushgateway URL of the group `job`/`project` under `base` (`http://host:9091`). A
/// `base` that already names a group (`.../metrics/job/...`) is used as it is.
pub fn push_url(base: &str, job: &str, project: &str) -> String {
    let base = base.trim_end_matches('/');
    let base = if base.contains("://") {
        base.to_string()
    } else {
        format!("http://{base}")
    };
    if base.contains("/metrics/job") {
        return base;
    }
    format!(
        "{base}/metrics/job{}/project{}",
        path_segment(job),
        path_segment(project)
    )
}

/// A grouping label value as a URL path segment; anything but plain characters goes through
/// the Pushgateway's `@base64` form (also the only way to send an empty value).
fn path_segment(v: &str) -> String {
    let plain = !v.is_empty()
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'~'));
    if plain {
        format!("/{v}")
    } else {
        format!("@base64/{}", base64url(v.as_bytes()))
    }
}

fn base64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    if out.is_empty() {
        out.push('=');
    }
    out
}

/// PUTs `text` to the Pushgateway group at `url` (replacing that group's previous run).
pub fn push(url: &str, text: &str) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .put(url)
        .header("Content-Type", CONTENT_TYPE)
        .send(text)
        .with_context(|| format!("cannot push metrics to {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        bail!("pushing metrics to {url}: HTTP {status}: {}", body.trim());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One ingest's metrics

/// The `--metrics-*` flags of one ingest.
pub struct IngestFlags<'a> {
    pub listen: Option<&'a str>,
    pub textfile: Option<&'a Path>,
    pub push: Option<&'a str>,
    pub job: &'a str,
}

impl IngestFlags<'_> {
    pub fn any(&self) -> bool {
        self.listen.is_some() || self.textfile.is_some() || self.push.is_some()
    }
}

struct Exposition {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// The labels every series of this exposition carries (`project` or none).
    labels: Vec<(&'static str, String)>,
}

impl Exposition {
    fn new(labels: Vec<(&'static str, String)>) -> Exposition {
        let recorder = recorder();
        Exposition {
            handle: recorder.handle(),
            recorder,
            labels,
        }
    }

    fn register_remote(&self, command: RemoteCommand) -> RemoteMetrics {
        metrics::with_local_recorder(&self.recorder, || {
            RemoteMetrics::register(&self.labels, command)
        })
    }
}

/// Everything that exports one ingest's metrics; built before the run, finished after it.
pub struct IngestExport {
    /// With a `project` label: endpoint and textfile.
    labelled: Option<Exposition>,
    /// Without it (the Pushgateway adds `job` and `project` from its URL).
    bare: Option<Exposition>,
    sinks: Arc<Vec<IngestMetrics>>,
    sampler: Option<Sampler>,
    /// `ingest --push`: the push's series, in the same expositions.
    remote: Vec<RemoteMetrics>,
    textfile: Option<PathBuf>,
    push_url: Option<String>,
}

impl IngestExport {
    /// Declares the remote series too (`ingest --push`), so they travel with the ingest's.
    pub fn attach_remote(&mut self) {
        for e in self.labelled.iter().chain(&self.bare) {
            self.remote.push(e.register_remote(RemoteCommand::Push));
        }
    }

    /// Records the push of `ingest --push` (before [`finish`](Self::finish)).
    pub fn record_remote(&self, stats: &RemoteStats, seconds: f64, success: bool) {
        let durations = stats.take_durations();
        for r in &self.remote {
            r.finish(stats, &durations, seconds, success);
        }
    }

    /// Declares every series, starts the sampler and (with `--metrics-listen`) the endpoint.
    /// `None` when no metrics flag was given: then nothing at all is set up.
    pub fn start(
        flags: &IngestFlags<'_>,
        project: &str,
        counters: Arc<Counters>,
    ) -> Result<Option<IngestExport>> {
        if !flags.any() {
            return Ok(None);
        }
        let listener = flags.listen.map(bind).transpose()?;
        let mut sinks = Vec::new();
        let labelled = (flags.listen.is_some() || flags.textfile.is_some()).then(|| {
            let e = Exposition::new(vec![("project", project.to_string())]);
            sinks.push(metrics::with_local_recorder(&e.recorder, || {
                IngestMetrics::register(&e.labels)
            }));
            e
        });
        let bare = flags.push.is_some().then(|| {
            let e = Exposition::new(Vec::new());
            sinks.push(metrics::with_local_recorder(&e.recorder, || {
                IngestMetrics::register(&e.labels)
            }));
            e
        });
        let sinks = Arc::new(sinks);
        if let (Some(l), Some(e)) = (listener, &labelled) {
            eprintln!(
                "metrics: serving http://{}/metrics while the ingest runs",
                l.local_addr()?
            );
            let handle = e.handle.clone();
            spawn_http(l, Arc::new(move || Ok(handle.render())))?;
        }
        let sampler = Sampler::start(counters, sinks.clone(), Duration::from_millis(200));
        Ok(Some(IngestExport {
            labelled,
            bare,
            sinks,
            sampler: Some(sampler),
            remote: Vec::new(),
            textfile: flags.textfile.map(Path::to_path_buf),
            push_url: flags.push.map(|u| push_url(u, flags.job, project)),
        }))
    }

    /// Records the end of the run and hands the metrics over (textfile, Pushgateway). Returns
    /// the problems doing so; they are warnings, never a failed ingest.
    pub fn finish(mut self, counters: &Counters, seconds: f64, success: bool) -> Vec<String> {
        if let Some(s) = self.sampler.take() {
            s.stop();
        }
        for s in self.sinks.iter() {
            s.finish(counters, seconds, success);
        }
        let mut problems = Vec::new();
        if let (Some(path), Some(e)) = (&self.textfile, &self.labelled) {
            if let Err(err) = write_textfile(path, &e.handle.render()) {
                problems.push(format!("{err:#}"));
            }
        }
        if let (Some(url), Some(e)) = (&self.push_url, &self.bare) {
            if let Err(err) = push(url, &e.handle.render()) {
                problems.push(format!("{err:#}"));
            }
        }
        problems
    }
}

/// The `--metrics-*` of `vrift push` / `vrift pull`: the remote series alone.
pub struct RemoteExport {
    labelled: Option<(Exposition, RemoteMetrics)>,
    bare: Option<(Exposition, RemoteMetrics)>,
    textfile: Option<PathBuf>,
    push_url: Option<String>,
}

impl RemoteExport {
    /// `None` when no metrics flag was given.
    pub fn start(
        flags: &IngestFlags<'_>,
        project: &str,
        command: RemoteCommand,
    ) -> Option<RemoteExport> {
        if flags.textfile.is_none() && flags.push.is_none() {
            return None;
        }
        let with = |labels| {
            let e = Exposition::new(labels);
            let m = e.register_remote(command);
            (e, m)
        };
        Some(RemoteExport {
            labelled: flags
                .textfile
                .map(|_| with(vec![("project", project.to_string())])),
            bare: flags.push.map(|_| with(Vec::new())),
            textfile: flags.textfile.map(Path::to_path_buf),
            push_url: flags.push.map(|u| push_url(u, flags.job, project)),
        })
    }

    /// Records the run and hands it over; problems are warnings, never a failed command.
    pub fn finish(self, stats: &RemoteStats, seconds: f64, success: bool) -> Vec<String> {
        let durations = stats.take_durations();
        let mut problems = Vec::new();
        if let (Some(path), Some((e, m))) = (&self.textfile, &self.labelled) {
            m.finish(stats, &durations, seconds, success);
            if let Err(err) = write_textfile(path, &e.handle.render()) {
                problems.push(format!("{err:#}"));
            }
        }
        if let (Some(url), Some((e, m))) = (&self.push_url, &self.bare) {
            m.finish(stats, &durations, seconds, success);
            if let Err(err) = push(url, &e.handle.render()) {
                problems.push(format!("{err:#}"));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_urls() {
        assert_eq!(
            push_url("http://127.0.0.1:9091/", "ci", "app"),
            "http://127.0.0.1:9091/metrics/job/ci/project/app"
        );
        assert_eq!(
            push_url("pg:9091", "ci", "my app/x"),
            "http://pg:9091/metrics/job/ci/project@base64/bXkgYXBwL3g="
        );
        assert_eq!(
            push_url("http://pg/metrics/job/x/a/b", "ci", "app"),
            "http://pg/metrics/job/x/a/b"
        );
        assert_eq!(path_segment(""), "@base64/=");
    }

    #[test]
    fn base64url_matches_rfc4648() {
        for (i, o) in [
            ("", "="),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("\u{ff}\u{fe}", "w7_Dvg=="),
        ] {
            assert_eq!(base64url(i.as_bytes()), o, "{i:?}");
        }
    }

    #[test]
    fn every_series_is_declared_with_zero() {
        let rec = recorder();
        let c = Counters::default();
        let sink = metrics::with_local_recorder(&rec, || {
            IngestMetrics::register(&[("project", "p".to_string())])
        });
        sink.sample(&c);
        let text = rec.handle().render();
        for o in m::OUTCOMES {
            assert!(
                text.contains(&format!("{}{{project=\"p\",outcome=\"{o}\"}} 0", m::FILES)),
                "{text}"
            );
        }
        for q in m::QUEUES {
            assert!(text.contains(&format!("queue=\"{q}\"")), "{text}");
        }
        sink.finish(&c, 1.5, true);
        let text = rec.handle().render();
        assert!(
            text.contains("vrift_ingest_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains("vrift_ingest_last_run_success{project=\"p\"} 1"),
            "{text}"
        );
    }
}
