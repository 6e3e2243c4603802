//! Open/lookup timings for a node_modules-sized manifest. Ignored by default; run with
//! `cargo test -p vrift-manifest --release --test timing -- --ignored --nocapture`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use vrift_manifest::{EntryInput, Manifest, ManifestBuilder, OpenOptions};

/// About `n` entries (files plus the directories holding them) shaped like
/// node_modules: scoped packages, each with 16 files in 6 directories.
fn node_modules_like(n: usize) -> (ManifestBuilder, Vec<Vec<u8>>) {
    let mut b = ManifestBuilder::with_capacity("/home/dev/project", n);
    let mut paths = Vec::with_capacity(n);
    let mut i = 0usize;
    let mut pkg = 0usize;
    // 16 files + 6 directories per package, plus root, node_modules and 13 scopes
    while 15 + (pkg + 1) * 22 <= n {
        for f in 0..16 {
            let sub = ["lib", "dist", "src/util", "test"][f % 4];
            let p = format!(
                "node_modules/@scope{}/package-{pkg:05}/{sub}/file-{f:02}.js",
                pkg % 13
            );
            let mut e = EntryInput::file(p.clone(), (f * 1000) as u64, [(pkg % 251) as u8; 32]);
            e.mtime_ns = 1_700_000_000_000_000_000 + i as i64;
            e.ino = i as u64;
            b.push(e);
            paths.push(p.into_bytes());
            i += 1;
        }
        pkg += 1;
    }
    (b, paths)
}

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

#[test]
#[ignore = "timing report, run explicitly in release mode"]
fn open_and_lookup_64k() {
    report(64 * 1024);
}

#[test]
#[ignore = "timing report, run explicitly in release mode"]
fn open_and_lookup_100k() {
    report(100_000);
}

fn report(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.vrm");
    let (b, paths) = node_modules_like(n);
    let t = Instant::now();
    b.write_atomic(&path).unwrap();
    let build = t.elapsed();
    let m = Manifest::open(&path).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "manifest: {} entries, {:.1} MiB, build+write {build:?}",
        m.len(),
        size as f64 / f64::from(1 << 20)
    );

    let full = best_of(50, || {
        black_box(Manifest::open(&path).unwrap());
    });
    let no_populate = best_of(50, || {
        let o = OpenOptions {
            populate: false,
            ..OpenOptions::default()
        };
        black_box(Manifest::open_with(&path, o).unwrap());
    });
    let no_sum = best_of(50, || {
        let o = OpenOptions {
            verify_checksum: false,
            populate: false,
        };
        black_box(Manifest::open_with(&path, o).unwrap());
    });
    let bytes = std::fs::read(&path).unwrap();
    let from_bytes = best_of(50, || {
        black_box(Manifest::from_bytes(bytes.clone(), std::path::Path::new("m")).unwrap());
    });
    println!("open (mmap+populate, checksum, validate): {full:?}");
    println!("open (mmap, checksum, validate):          {no_populate:?}");
    println!("open (mmap, no checksum, validate):       {no_sum:?}");
    println!("from_bytes (incl. 1 copy of the Vec):     {from_bytes:?}");

    // look paths up in a scrambled order, as a shim would
    let mut order: Vec<usize> = (0..paths.len()).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let paths: Vec<&Vec<u8>> = order.iter().map(|&i| &paths[i]).collect();
    let t = Instant::now();
    let mut found = 0;
    for p in &paths {
        found += usize::from(m.lookup(black_box(p)).is_some());
    }
    let per_lookup = t.elapsed() / paths.len() as u32;
    assert_eq!(found, paths.len());
    let t = Instant::now();
    let mut listed = 0;
    for e in m.iter().filter(vrift_manifest::Entry::is_dir) {
        listed += m.children(&e).count();
    }
    let list_all = t.elapsed();
    assert_eq!(listed, m.len() - 1);
    let t = Instant::now();
    for p in &paths {
        let mut miss = (*p).clone();
        miss.push(b'~');
        assert!(m.lookup(black_box(&miss)).is_none());
    }
    let per_miss = t.elapsed() / paths.len() as u32;
    println!("lookup: {per_lookup:?} per hit, {per_miss:?} per miss (random order)");
    println!("children() of every dir: {list_all:?} total");
}
