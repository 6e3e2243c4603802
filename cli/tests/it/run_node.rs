//! Node.js on a virtual `node_modules`: real packages from the xsmall benchmark corpus
//! (`../shared/bench`), `require` of JS and JSON, `.bin` executables, a native `.node`
//! addon, after the real tree was deleted.
//!
//! The corpus is taken from `VRIFT_TEST_CORPUS` (a directory holding `node_modules`), or an
//! installed `corpora/xsmall` beside the repository, or installed on the spot with
//! `../shared/bench/make-corpus.sh xsmall` (npm, pinned by its lock file). Skipped, with the
//! reason printed, only if node or npm is missing.

use crate::run_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use run_support::*;

/// Packages copied out of the corpus (with their dependencies) for the test project.
const PACKAGES: &[&str] = &[
    "lodash",
    "js-yaml",
    "argparse",
    "json5",
    "minimist",
    "dayjs",
    "clsx",
    "zod",
    "react",
    "loose-envify",
    "js-tokens",
    "semver",
    "@unrs/resolver-binding-linux-x64-gnu",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn corpus() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VRIFT_TEST_CORPUS") {
        return Some(PathBuf::from(p));
    }
    let root = repo_root();
    for c in [
        root.join("../corpora/xsmall"),
        root.join("bench/corpora/xsmall"),
    ] {
        if c.join("node_modules/lodash/package.json").is_file() {
            return Some(c);
        }
    }
    let script = root.join("../shared/bench/make-corpus.sh");
    if !script.is_file() {
        return None;
    }
    let dest = std::env::temp_dir().join("vrift-test-corpus-xsmall");
    let st = Command::new("bash")
        .arg(&script)
        .arg("xsmall")
        .arg(&dest)
        .status()
        .ok()?;
    st.success().then_some(dest)
}

fn setup(env: &Env) -> Option<PathBuf> {
    need(have("node") && have("npm"), "node and npm")?;
    let c = corpus()
        .expect("no node corpus: set VRIFT_TEST_CORPUS or provide ../shared/bench/make-corpus.sh");
    let nm = env.path("app/node_modules");
    std::fs::create_dir_all(nm.join(".bin")).unwrap();
    std::fs::create_dir_all(nm.join("@unrs")).unwrap();
    for p in PACKAGES {
        let src = c.join("node_modules").join(p);
        assert!(src.is_dir(), "corpus lacks {p}");
        let st = Command::new("cp")
            .arg("-r")
            .arg(&src)
            .arg(nm.join(p))
            .status()
            .unwrap();
        assert!(st.success());
    }
    for (bin, target) in [
        ("js-yaml", "../js-yaml/bin/js-yaml.js"),
        ("semver", "../semver/bin/semver.js"),
    ] {
        std::os::unix::fs::symlink(target, nm.join(".bin").join(bin)).unwrap();
    }
    write(&env.path("app/data.yml"), "name: vrift\nlist: [1, 2, 3]\n");
    write(
        &env.path("app/main.js"),
        r#"
const _ = require('lodash');
const yaml = require('js-yaml');
const JSON5 = require('json5');
const dayjs = require('dayjs');
const clsx = require('clsx');
const { z } = require('zod');
const React = require('react');
const semver = require('semver');
const fs = require('fs');
console.log(_.chunk([1, 2, 3, 4], 2).length, yaml.load('a: 1').a, JSON5.parse('{x: 5}').x);
console.log(dayjs('2020-01-02').year(), clsx('a', { b: true }), z.string().parse('ok'), typeof React.createElement);
console.log(semver.satisfies('1.2.3', '^1.0.0'), require('react/package.json').name, require('lodash/package.json').name);
console.log(require.resolve('lodash'));
console.log(fs.readdirSync(__dirname + '/node_modules').filter(n => !n.startsWith('.')).sort().join(','));
console.log(fs.realpathSync(__dirname + '/node_modules/.bin/semver'));
const addon = require('@unrs/resolver-binding-linux-x64-gnu');
console.log('addon', typeof addon.sync);
"#,
    );
    Some(env.ingest_and_remove("app/node_modules", "nm.vrm"))
}

#[test]
fn node_requires_real_packages_from_a_virtual_node_modules() {
    let env = Env::new();
    let Some(m) = setup(&env) else { return };
    let out = env.run_ok(&[&m], &["node", "app/main.js"]);
    let root = env.root().display().to_string();
    let want = format!(
        "2 1 5\n2020 a b ok function\ntrue react lodash\n{root}/app/node_modules/lodash/lodash.js\n\
         @unrs,argparse,clsx,dayjs,js-tokens,js-yaml,json5,lodash,loose-envify,minimist,react,semver,zod\n\
         {root}/app/node_modules/semver/bin/semver.js\naddon function\n"
    );
    assert_eq!(out, want);
}

#[test]
fn node_bin_executables_from_the_virtual_tree() {
    let env = Env::new();
    let Some(m) = setup(&env) else { return };
    let out = env.run_ok(
        &[&m],
        &[
            "app/node_modules/.bin/semver",
            "-r",
            "^2.0.0",
            "1.0.0",
            "2.5.1",
        ],
    );
    assert_eq!(out, "2.5.1\n");
    let out = env.run_ok(
        &[&m],
        &["sh", "-c", "cd app && node_modules/.bin/js-yaml data.yml"],
    );
    assert!(out.contains("\"name\": \"vrift\""), "{out}");
    // A child process started by node keeps the view (fork + exec through libuv).
    let out = env.run_ok(
        &[&m],
        &[
            "node",
            "-e",
            "const cp=require('child_process'); process.stdout.write(cp.execFileSync('node', ['-p', \"require('./app/node_modules/lodash/package.json').name\"]).toString()); process.stdout.write(cp.execSync('app/node_modules/.bin/semver 3.0.0').toString())",
        ],
    );
    assert_eq!(out, "lodash\n3.0.0\n");
}

/// `fs.watch` (what `tsc -w`, webpack and vite in watch mode use) on a virtual directory and a
/// virtual file: the watch is set up and fires for what the program writes through the view.
#[test]
fn fs_watch_on_the_view_sees_writes() {
    let Some(()) = need(have("node"), "node") else {
        return;
    };
    let env = Env::new();
    write(&env.path("app/src/a.txt"), "1\n");
    let m = env.ingest_and_remove("app", "app.vrm");
    let script = r#"
const fs = require('fs');
const seen = new Set();
const done = () => { if (seen.size === 2) { console.log([...seen].sort().join(' ')); process.exit(0); } };
fs.watch('app/src', (ev, f) => { if (f === 'b.txt') { seen.add('dir:' + f); done(); } });
fs.watch('app/src/a.txt', () => { seen.add('file:a.txt'); done(); });
setTimeout(() => { fs.writeFileSync('app/src/b.txt', 'x'); fs.appendFileSync('app/src/a.txt', '2\n'); }, 100);
setTimeout(() => { console.log('timeout', [...seen].join(' ')); process.exit(1); }, 5000);
"#;
    let out = env.run_ok(&[&m], &["node", "-e", script]);
    assert_eq!(out, "dir:b.txt file:a.txt\n");
}

/// The whole xsmall corpus (16,971 files from npm) round-trips exactly through ingest with
/// the default filter and checkout: nothing left out, `diff -r` empty. (The small, medium
/// and large corpora do too; they are too big to install on every CI run.)
#[test]
fn the_npm_corpus_round_trips_exactly() {
    let c = corpus()
        .expect("no node corpus: set VRIFT_TEST_CORPUS or provide ../shared/bench/make-corpus.sh");
    let env = Env::new();
    let nm = c.join("node_modules");
    let v = ingest_copy_json(&env, &nm, "nm.vrm");
    assert_eq!(v["excluded"], 0, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    let (diff, _) = checkout_and_diff(&env, "nm.vrm", &nm);
    assert_eq!(diff, "");
}
