//! `syscost`: what each file-system operation an ingest is made of costs on this machine.
//!
//! An ingest of a tree into a store is a sum of a few operations per file (stat, open+read,
//! BLAKE3, link a new blob, strip its write bits, replace a duplicate by a link, free the
//! duplicate's blocks) plus one `mkdir` per new shard directory. Timing each alone, single
//! threaded, over thousands of files in a scratch directory on the file system under test,
//! gives the cost model that bounds what any ingest can reach on this machine (see
//! bench/README.md, "What bounds an ingest here").
//!
//! usage: syscost [--dir DIR] [--files N] [--size BYTES]
//! DIR (default: a new directory under /tmp) should be on the file system the store lives on.
// Measures raw system calls: calls them directly.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let mut dir: Option<PathBuf> = None;
    let mut n: usize = 20_000;
    let mut size: usize = 8192;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = Some(args.next().context("--dir DIR")?.into()),
            "--files" => n = args.next().context("--files N")?.parse()?,
            "--size" => size = args.next().context("--size BYTES")?.parse()?,
            "-h" | "--help" => {
                println!("usage: syscost [--dir DIR] [--files N] [--size BYTES]");
                return Ok(());
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let base = match dir {
        Some(d) => {
            fs::create_dir_all(&d)?;
            tempdir_in(&d)?
        }
        None => tempdir_in(Path::new("/tmp"))?,
    };
    let result = run(&base, n, size);
    // Removing the scratch is not timed; it takes a while on a discard mount.
    let _ = fs::remove_dir_all(&base);
    result
}

fn tempdir_in(parent: &Path) -> Result<PathBuf> {
    let p = parent.join(format!("syscost-{}", std::process::id()));
    fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
    Ok(p)
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in scratch paths")
}

fn check(ret: libc::c_int, what: &str) -> Result<()> {
    if ret < 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn open_ro(p: &Path) -> Result<OwnedFd> {
    // SAFETY: valid NUL-terminated path; the fd is owned on success.
    let fd = unsafe { libc::open(c(p).as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    check(fd, "open")?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Times `f` over `0..n` and prints microseconds per call.
fn measure(what: &str, n: usize, mut f: impl FnMut(usize) -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    for i in 0..n {
        f(i)?;
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("{what:<58} {us:>8.2} µs");
    Ok(us)
}

fn make_files(dir: &Path, n: usize, size: usize, salt: u8) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let mut data = vec![salt; size];
    (0..n)
        .map(|i| {
            data[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let p = dir.join(format!("f{i}"));
            fs::write(&p, &data)?;
            Ok(p)
        })
        .collect()
}

fn raise_fd_limit(n: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max.min(2 * n as u64 + 64).max(lim.rlim_cur);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        // Two sets of descriptors are open at once at most.
        (lim.rlim_cur as usize).saturating_sub(64) / 2
    }
}

fn run(base: &Path, n: usize, size: usize) -> Result<()> {
    let n = n.min(raise_fd_limit(n));
    println!(
        "syscost: {n} files of {size} bytes in {} (single thread)",
        base.display()
    );
    let src = base.join("src");
    let files = make_files(&src, n, size, 1)?;
    // A second set with the same contents: the duplicates a dedup replaces.
    let dups = make_files(&base.join("dup"), n, size, 1)?;
    // Shards that exist already: 256 directories, like a store's `ab/cd` leaves.
    let store = base.join("store");
    for s in 0..256 {
        fs::create_dir_all(store.join(format!("{s:02x}")))?;
    }
    // SAFETY: plain sync(2).
    unsafe { libc::sync() };

    let mut buf = vec![0u8; size + 1];
    // SAFETY: all-zero bytes are a valid `struct stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    measure("lstat (walk; path-based, warm dcache)", n, |i| {
        // SAFETY: valid path and out pointer.
        check(
            unsafe { libc::lstat(c(&files[i]).as_ptr(), &mut st) },
            "lstat",
        )
    })?;
    measure("open + read whole file + fstat + close", n, |i| {
        let fd = open_ro(&files[i])?;
        // SAFETY: buf is valid for buf.len() bytes; st is a valid out pointer.
        let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        check(r as libc::c_int, "read")?;
        // SAFETY: fd is open; st is a valid out pointer.
        check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, "fstat")
    })?;
    let data = vec![7u8; size];
    measure("BLAKE3 of the file's bytes", n, |_| {
        std::hint::black_box(blake3::hash(std::hint::black_box(&data)));
        Ok(())
    })?;

    let dirs = base.join("shards");
    fs::create_dir(&dirs)?;
    for s in 0..256 {
        fs::create_dir(dirs.join(format!("{s:02x}")))?;
    }
    let half = (n / 2).min(32_000);
    let mkdir = |i: usize| -> Result<()> {
        let p = dirs.join(format!("{:02x}/{:04x}", i % 256, i / 256));
        // SAFETY: valid path.
        check(unsafe { libc::mkdir(c(&p).as_ptr(), 0o755) }, "mkdir")
    };
    measure("mkdir of a new shard directory (ab/cd)", half, mkdir)?;

    let blob = |i: usize| store.join(format!("{:02x}/b{i}", i % 256));
    let fds: Vec<OwnedFd> = files.iter().map(|p| open_ro(p)).collect::<Result<_>>()?;
    measure(
        "linkat(fd, AT_EMPTY_PATH) into an existing shard (new blob)",
        n,
        |i| {
            // SAFETY: valid fd and path.
            check(
                unsafe {
                    libc::linkat(
                        fds[i].as_raw_fd(),
                        c"".as_ptr(),
                        libc::AT_FDCWD,
                        c(&blob(i)).as_ptr(),
                        libc::AT_EMPTY_PATH,
                    )
                },
                "linkat",
            )
        },
    )?;
    measure("fchmod (strip the new blob's write bits)", n, |i| {
        // SAFETY: valid fd.
        check(unsafe { libc::fchmod(fds[i].as_raw_fd(), 0o444) }, "fchmod")
    })?;
    drop(fds);
    let dup_fds: Vec<OwnedFd> = dups.iter().map(|p| open_ro(p)).collect::<Result<_>>()?;
    measure(
        "linkat failing with EEXIST (a dedup hit shows up)",
        n,
        |i| {
            // SAFETY: valid fd and path; the failure is the point.
            let r = unsafe {
                libc::linkat(
                    dup_fds[i].as_raw_fd(),
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    c(&blob(i)).as_ptr(),
                    libc::AT_EMPTY_PATH,
                )
            };
            if r == 0 {
                bail!("linkat unexpectedly succeeded");
            }
            Ok(())
        },
    )?;
    measure(
        "fstatat of the existing blob (mode and inode check)",
        n,
        |i| {
            // SAFETY: valid path and out pointer.
            check(
                unsafe { libc::lstat(c(&blob(i)).as_ptr(), &mut st) },
                "lstat",
            )
        },
    )?;
    measure(
        "replace duplicate: link blob to temp + rename over + unlink",
        n,
        |i| {
            let tmp = dups[i].with_file_name(format!(".t{i}"));
            let (b, t, d) = (c(&blob(i)), c(&tmp), c(&dups[i]));
            // SAFETY: valid NUL-terminated paths.
            unsafe {
                check(libc::link(b.as_ptr(), t.as_ptr()), "link")?;
                check(libc::rename(t.as_ptr(), d.as_ptr()), "rename")?;
                libc::unlink(t.as_ptr());
            }
            Ok(())
        },
    )?;
    // SAFETY: plain sync(2): the duplicates' blocks are on disk, as after a real `npm ci`.
    unsafe { libc::sync() };
    let mut dup_fds = dup_fds.into_iter();
    measure(
        "close of the last fd of a replaced duplicate (frees it)",
        n,
        |_| {
            drop(dup_fds.next());
            Ok(())
        },
    )?;
    // ext4 without a journal skips inodes freed in the last minutes, one lookup each.
    measure("mkdir of a shard right after those frees", half, |i| {
        mkdir(half + i)
    })?;

    Ok(())
}
