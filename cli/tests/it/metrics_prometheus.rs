//! End to end against the real components: `vrift ingest --metrics-push` into a real
//! Pushgateway, `vrift serve` for the store, a real Prometheus scraping both with the shipped
//! scrape config and alert rules. Then every PromQL expression of the shipped dashboard and
//! alert rules is evaluated through Prometheus' HTTP API and must return data, so renaming a
//! metric without updating `dashboards/` breaks the build. Every exposition vrift produces
//! (ingest endpoint, serve endpoint, textfile, what the Pushgateway re-exposes) must pass
//! `promtool check metrics`.

use crate::common::s3;
use crate::metrics_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use metrics_support::*;
use serde_json::Value;
use vrift_cas::lock::{LockKind, StoreLock};

/// Files for a project: `shared` contents every project has, plus its own.
fn tree(root: &Path, project: &str, shared: usize, own: usize) {
    let mut files = Vec::new();
    for i in 0..shared {
        files.push((
            format!("lib{}/shared{i}.js", i % 4),
            format!("shared {i}\n"),
        ));
    }
    for i in 0..own {
        files.push((
            format!("own/{project}{i}.js"),
            format!("{project} only {i}\n").repeat(i + 1),
        ));
    }
    files.push((".env".into(), format!("TOKEN={project}\n")));
    write_tree(root, &files);
}

fn json_of(cmd: &mut Command) -> Value {
    let out = cmd.output().expect("run vrift");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{cmd:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Prometheus' answer to an instant query: `Ok(result array)` or `Err(why)`.
fn query(prom: &str, expr: &str) -> Result<Vec<Value>, String> {
    let (status, body) = get_query(&format!("{prom}/api/v1/query"), &[("query", expr)]);
    let v: Value = serde_json::from_str(&body).map_err(|_| format!("HTTP {status}: {body}"))?;
    if v["status"] != "success" {
        return Err(format!("{}: {}", v["errorType"], v["error"]));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

fn scalar(prom: &str, expr: &str) -> Option<f64> {
    let r = query(prom, expr).ok()?;
    let first = r.first()?;
    first["value"][1].as_str()?.parse().ok()
}

/// A dashboard expression as Prometheus can evaluate it: Grafana's variables filled in.
fn fill_variables(e: &str) -> String {
    e.replace("${project}", ".*")
        .replace("$project", ".*")
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h")
}

/// An alert expression ends in one comparison with a number; with `bool` it returns data
/// (0 or 1) whenever its inputs exist, firing or not.
fn with_bool(expr: &str) -> String {
    let e = expr.trim_end();
    let num_start = e
        .rfind(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')))
        .map(|i| i + 1)
        .unwrap_or(0);
    let (lhs, num) = e.split_at(num_start);
    assert!(
        !num.is_empty(),
        "alert expr does not end in a number: {expr}"
    );
    let lhs = lhs.trim_end();
    for op in ["==", "!=", ">=", "<=", ">", "<"] {
        if let Some(rest) = lhs.strip_suffix(op) {
            return format!("{rest} {op} bool {num}");
        }
    }
    panic!("alert expr does not end in `<comparison> <number>`: {expr}");
}

#[test]
fn dashboard_and_alert_queries_return_data_from_real_prometheus() {
    let Some(t) = tools(&["promtool", "prometheus", "prometheus-pushgateway"]) else {
        return;
    };
    let (promtool, prometheus, pushgateway) = (&t[0], &t[1], &t[2]);
    let tmp = tempdir();
    let store = tmp.path().join("store");
    let w = tmp.path();

    // --- A real Pushgateway.
    let pg_port = free_port();
    let pg_url = format!("http://127.0.0.1:{pg_port}");
    let mut cmd = Command::new(pushgateway);
    cmd.arg(format!("--web.listen-address=127.0.0.1:{pg_port}"))
        .arg(format!(
            "--persistence.file={}",
            w.join("pg.data").display()
        ));
    let _pg = Proc::start("pushgateway", cmd);
    wait_http_ok(&format!("{pg_url}/-/ready"), Duration::from_secs(15));

    // --- History for the store gauges: a project whose tree is gone, pruned and its blobs
    // collected by `gc --delete` (last gc), and one forgotten without deleting (orphans).
    for (name, delete) in [("gone", true), ("orphaned", false)] {
        let src = w.join(name).join("node_modules");
        tree(&src, name, 0, 5);
        let out = vrift(&store)
            .arg("ingest")
            .arg(&src)
            .arg("-o")
            .arg(w.join(format!("{name}.vrm")))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        // Stale: tree and manifest gone. The first is pruned and collected, the second only
        // forgotten (its blobs stay as orphans).
        std::fs::remove_dir_all(w.join(name)).unwrap();
        std::fs::remove_file(w.join(format!("{name}.vrm"))).unwrap();
        let mut gc = vrift(&store);
        if delete {
            gc.args(["gc", "--prune-stale", "--delete"]);
        } else {
            gc.args(["forget", name]);
        }
        let out = gc.output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    // --- vrift serve for the store.
    let mut cmd = vrift(&store);
    cmd.args(["serve", "--metrics", "127.0.0.1:0", "--refresh", "1"]);
    let (serve, serve_url) = Proc::start_with_url("vrift serve", &mut cmd, true);
    wait_http_ok(&serve_url, Duration::from_secs(20));

    // --- Two projects sharing content; both push, one also writes a textfile. The second
    // runs while the test holds the store lock exclusively (as `gc --delete` would), so its
    // live --metrics-listen endpoint can be scraped mid-run and lock waits are non-zero.
    let alpha = w.join("alpha").join("node_modules");
    let beta = w.join("beta").join("node_modules");
    tree(&alpha, "alpha", 30, 10);
    tree(&beta, "beta", 30, 6);
    let textfile = w.join("alpha.prom");
    // alpha also pushes to a real S3 server (`ingest --push`), so the remote-tier panels
    // have data: its series travel in alpha's Pushgateway group.
    let s3 = s3::S3Server::start().expect("rclone for the remote-tier panels");
    let remote = format!("s3://{}/metrics", s3::BUCKET);
    let mut cmd = vrift(&store);
    s3.env(&mut cmd);
    let alpha_report = json_of(
        cmd.arg("--json")
            .args(["--remote", &remote])
            .arg("ingest")
            .arg(&alpha)
            .arg("-o")
            .arg(w.join("alpha.vrm"))
            .arg("--push")
            .args(["--metrics-push", &pg_url, "--metrics-job", "ci"])
            .arg("--metrics-textfile")
            .arg(&textfile),
    );
    assert!(
        alpha_report["push"]["blobs_uploaded"].as_u64() > Some(0),
        "{alpha_report}"
    );
    // A pull into another store, pushing its own group (job vrift_remote).
    let mut cmd = vrift(&w.join("pull-store"));
    s3.env(&mut cmd);
    let pulled = json_of(
        cmd.arg("--json")
            .args(["--remote", &remote])
            .args(["pull", "alpha", "-o"])
            .arg(w.join("alpha-pulled.vrm"))
            .args(["--metrics-push", &pg_url]),
    );
    assert!(pulled["blobs_downloaded"].as_u64() > Some(0), "{pulled}");
    let lock = StoreLock::acquire(&store, LockKind::Exclusive, false, |_| {}).unwrap();
    let mut cmd = vrift(&store);
    cmd.arg("--json")
        .arg("ingest")
        .arg(&beta)
        .arg("-o")
        .arg(w.join("beta.vrm"))
        .args(["--metrics-push", &pg_url, "--metrics-job", "ci"])
        .args(["--metrics-listen", "127.0.0.1:0"]);
    let (mut beta_run, live_url) = Proc::start_with_url("vrift ingest beta", &mut cmd, true);
    let live = wait_http_ok(&live_url, Duration::from_secs(10));
    assert_eq!(
        sample(&live, "vrift_ingest_running", &[("project", "beta")]),
        Some(1.0),
        "{live}"
    );
    promtool_check_metrics(promtool, "ingest --metrics-listen", &live);
    std::thread::sleep(Duration::from_millis(2000));
    let waiting = wait_http_ok(&serve_url, Duration::from_secs(5));
    drop(lock);
    assert!(beta_run.wait(Duration::from_secs(30)), "{}", beta_run.log());
    let beta_out = beta_run.log();
    let beta_report: Value = beta_out
        .lines()
        .filter(|l| l.starts_with('{'))
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON report from beta:\n{beta_out}"));
    assert!(
        sample(&waiting, "vrift_store_lock_wait_seconds", &[]).unwrap_or(0.0) >= 0.5,
        "serve did not see the lock wait:\n{waiting}"
    );

    // --- The expositions pass promtool.
    promtool_check_metrics(
        promtool,
        "the textfile",
        &std::fs::read_to_string(&textfile).unwrap(),
    );
    let status = json_of(vrift(&store).arg("--json").arg("status"));
    let serve_text = wait_for("vrift serve to catch up", Duration::from_secs(20), || {
        let (s, body) = get(&serve_url);
        (s == 200
            && sample(&body, "vrift_store_blobs", &[]) == status["blobs"].as_f64()
            && sample(&body, "vrift_store_projects", &[]) == Some(2.0))
        .then_some(body)
    });
    promtool_check_metrics(promtool, "vrift serve", &serve_text);
    let pushed = wait_http_ok(&format!("{pg_url}/metrics"), Duration::from_secs(5));
    promtool_check_metrics(promtool, "the Pushgateway's exposition", &pushed);

    // serve agrees with `vrift status` (a full walk).
    for (metric, key) in [
        ("vrift_store_disk_bytes", "total_bytes"),
        ("vrift_store_orphan_blobs", "orphans"),
        ("vrift_store_orphan_bytes", "orphan_bytes"),
        ("vrift_store_apparent_bytes", "apparent_bytes"),
        ("vrift_store_referenced_bytes", "referenced_bytes"),
        ("vrift_store_dedup_ratio", "dedup_ratio"),
    ] {
        let got = sample(&serve_text, metric, &[]).unwrap();
        let want = status[key].as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-9,
            "{metric} = {got}, status {key} = {want}"
        );
    }
    assert!(sample(&serve_text, "vrift_store_orphan_blobs", &[]).unwrap() >= 5.0);
    assert!(sample(&serve_text, "vrift_store_last_gc_timestamp_seconds", &[]).unwrap() > 0.0);
    assert_eq!(
        sample(&serve_text, "vrift_store_last_gc_deleted_blobs", &[]),
        Some(5.0)
    );

    // --- A real Prometheus with the shipped scrape config (targets and intervals adjusted).
    let dir = dashboards_dir();
    let shipped = std::fs::read_to_string(dir.join("prometheus.yml")).unwrap();
    let serve_addr = serve_url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let mut config = shipped.clone();
    for (from, to) in [
        ("localhost:9465", serve_addr.to_string()),
        ("localhost:9091", format!("127.0.0.1:{pg_port}")),
        // No node_exporter here: its target just stays down.
        ("localhost:9100", format!("127.0.0.1:{}", free_port())),
        ("scrape_interval: 15s", "scrape_interval: 1s".into()),
        ("evaluation_interval: 15s", "evaluation_interval: 1s".into()),
        (
            "- alerts.yml",
            format!(
                "- {}",
                dir.join("alerts.yml").canonicalize().unwrap().display()
            ),
        ),
    ] {
        assert!(
            config.contains(from),
            "prometheus.yml no longer has {from:?}"
        );
        config = config.replace(from, &to);
    }
    let cfg = w.join("prometheus.yml");
    std::fs::write(&cfg, config).unwrap();
    promtool_check(promtool, "config", &cfg);
    let prom_port = free_port();
    let prom = format!("http://127.0.0.1:{prom_port}");
    let mut cmd = Command::new(prometheus);
    cmd.arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", w.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    let prom_proc = Proc::start("prometheus", cmd);
    wait_http_ok(&format!("{prom}/-/ready"), Duration::from_secs(30));

    // The numbers made it through the Pushgateway, with its grouping labels.
    let pushed_new = wait_for(
        "pushed ingest metrics in Prometheus",
        Duration::from_secs(20),
        || {
            scalar(
                &prom,
                r#"vrift_ingest_files_total{job="ci",project="alpha",outcome="new_blob"}"#,
            )
        },
    );
    assert_eq!(pushed_new, alpha_report["blobs_new"].as_f64().unwrap());
    assert_eq!(
        scalar(
            &prom,
            r#"vrift_ingest_files_total{job="ci",project="beta",outcome="dedup_hit"}"#
        ),
        beta_report["dedup_hits"].as_f64()
    );
    assert!(
        scalar(
            &prom,
            r#"vrift_ingest_lock_wait_seconds_sum{project="beta"}"#
        )
        .unwrap()
            >= 1.0
    );

    // --- Every dashboard expression returns data.
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("vrift.json")).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dash["panels"], &mut exprs);
    assert!(exprs.len() >= 20);
    // Template variables: `label_values(metric, label)` needs `metric` to have data.
    for v in dash["templating"]["list"].as_array().unwrap() {
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or("");
        if let Some(inner) = q.strip_prefix("label_values(") {
            exprs.push(inner.split(',').next().unwrap().trim().to_string());
        }
    }
    // --- And every rule expression; alerts must evaluate with data once `bool` is added.
    let rules = wait_for(
        "the alert rules to be loaded",
        Duration::from_secs(20),
        || {
            let (_, body) = get(&format!("{prom}/api/v1/rules"));
            let v: Value = serde_json::from_str(&body).ok()?;
            let rules: Vec<Value> = v["data"]["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            (!rules.is_empty()).then_some(rules)
        },
    );
    let alert_names: Vec<&str> = rules.iter().filter_map(|r| r["name"].as_str()).collect();
    for want in ["DiskNearlyFull", "OrphanBytesGrowing", "IngestErrors"] {
        assert!(
            alert_names.iter().any(|n| n.contains(want)),
            "no *{want}* alert in {alert_names:?}"
        );
    }
    let mut rule_exprs = Vec::new();
    for r in &rules {
        let q = r["query"].as_str().unwrap().to_string();
        if r["type"] == "alerting" {
            // As written: must evaluate (healthy, so usually nothing is firing).
            query(&prom, &q).unwrap_or_else(|e| panic!("alert {}: {q}: {e}", r["name"]));
            rule_exprs.push(with_bool(&q));
        } else {
            rule_exprs.push(q);
        }
    }

    let mut pending: Vec<String> = exprs
        .iter()
        .map(|e| fill_variables(e))
        .chain(rule_exprs)
        .collect();
    // Range functions (rate, delta) need a few scrapes; poll until all have data.
    let outcome = wait_for_all(&prom, &mut pending, Duration::from_secs(30));
    if let Err(report) = outcome {
        panic!(
            "queries without data after 30s:\n{report}\n--- serve\n{}\n--- prometheus\n{}",
            serve.log(),
            prom_proc.log()
        );
    }
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(e)) = m.get("expr") {
                out.push(e.clone());
            }
            m.values().for_each(|x| collect_exprs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

/// Evaluates each pending expression until it returns data; errors are fatal at once.
fn wait_for_all(prom: &str, pending: &mut Vec<String>, limit: Duration) -> Result<(), String> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let mut still = Vec::new();
        for e in pending.drain(..) {
            match query(prom, &e) {
                Ok(r) if !r.is_empty() => {}
                Ok(_) => still.push(e),
                Err(why) => panic!("query failed: {e}\n{why}"),
            }
        }
        *pending = still;
        if pending.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(pending.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
