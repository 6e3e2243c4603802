//! Static programs inside a `vrift run` view.
//!
//! A statically linked program (Go's esbuild, busybox-static, musl builds) never loads the
//! shim, so it cannot see a view the shim serves. When one starts where the view matters —
//! its working directory or an argument in a manifest root, or the program itself a file of
//! the view — the shim executes `vrift __exec-static VCWD EXE ARGV...` in its place, and this
//! module gives the program the same tree through the kernel:
//!
//! 1. the link farm of the run's layers (the one `--isolate` builds and caches);
//! 2. a private mount namespace (inside a user namespace unless we are root) where each
//!    top-level manifest root is an overlay of, topmost first: the project directory of a
//!    write-through root, the run's upper mirror (its whiteouts translated to overlayfs
//!    whiteouts), the farm, and, for other roots, the real directory (the shim too shows it
//!    below what the manifests hold); a root gone from disk gets its mount point in a
//!    throwaway layer over its nearest existing ancestor;
//! 3. when the program exits, what it wrote (the overlay's upper layer) is moved into the
//!    run's upper layer just as the shim writes: files into the mirror or, below a
//!    write-through root, into the project; deletions as whiteouts; every path flagged in the
//!    shared state table. The rest of the run sees it, and the program's status is ours.
//!
//! The program sees the tree as it was when it started: what other processes of the run
//! write meanwhile reaches it only where it lands on disk (the project, the mirror's files).
//! Where namespaces cannot be made, one line names the program and `vrift run --isolate`,
//! exit 126.
// Re-executes static binaries inside namespaces (fork/exec paths).
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use crate::error::{bail, err, Context, Result};
use vrift_cas::Cas;
use vrift_manifest::Manifest;
use vrift_shim_core::upper_state;

use super::farm::{self, Layer};
use super::ns::{self, Fail};
use super::sys;
use crate::signals::wait_for;
use vrift_shim_core::env;

/// The hidden first argument the shim passes.
pub const SUBCOMMAND: &str = "__exec-static";

/// One overlay: a top-level manifest root.
struct Top {
    /// The virtual root (absolute, normalized).
    at: PathBuf,
    /// Its subtree in the farm.
    farm: PathBuf,
    /// The run's mirror of it (`<upper>/fs/<at>`).
    mirror: PathBuf,
    /// Below a write-through root: the project directory is the topmost lower layer and
    /// receives what is written.
    through: bool,
    /// Scratch directories of this overlay (upper, work, translated mirror).
    upper: PathBuf,
    work: PathBuf,
    mirror_lower: PathBuf,
}

/// The run's upper layer, as the shim lays it out (see the shim's `upper` module).
struct RunUpper {
    /// `<upper>/fs`.
    fs: PathBuf,
    through: Vec<PathBuf>,
    table: StateMap,
}

impl RunUpper {
    fn is_through(&self, v: &Path) -> bool {
        self.through.iter().any(|r| v.starts_with(r))
    }

    /// `<upper>/fs/<v>`: where the shim keeps what the run wrote, and every whiteout.
    fn hidden(&self, v: &Path) -> PathBuf {
        self.fs.join(v.strip_prefix("/").unwrap_or(v))
    }

    /// Where a write to `v` lands: the path itself below a write-through root whose real
    /// parent exists (as the shim's `mirror_of`), else the mirror.
    fn dest(&self, v: &Path) -> PathBuf {
        if self.is_through(v) && v.parent().is_some_and(std::path::Path::is_dir) {
            v.to_path_buf()
        } else {
            self.hidden(v)
        }
    }
}

/// The shared `state` table, mapped like the shim maps it.
struct StateMap {
    ptr: *mut libc::c_void,
}

impl StateMap {
    fn open(upper: &Path) -> Result<StateMap> {
        let p = upper.join(upper_state::FILE);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .with_context(|| format!("cannot open {}", p.display()))?;
        if f.metadata()?.len() < upper_state::BYTES as u64 {
            bail!("{}: too short", p.display());
        }
        // SAFETY: mapping a file we opened, of at least that size; unmapped on drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                upper_state::BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error()).context("mmap of the upper layer's state");
        }
        Ok(StateMap { ptr })
    }

    fn table(&self) -> &upper_state::Table {
        // SAFETY: the mapping holds BYTES bytes = HEADER_WORDS + SLOTS aligned words, shared
        // with other processes only through atomics.
        unsafe {
            std::slice::from_raw_parts(
                self.ptr as *const AtomicU64,
                upper_state::HEADER_WORDS + upper_state::SLOTS,
            )
        }
    }

    fn flag(&self, v: &Path) {
        upper_state::flag_with_ancestors(self.table(), v.as_os_str().as_bytes());
    }
}

impl Drop for StateMap {
    fn drop(&mut self) {
        // SAFETY: our own mapping of that size.
        unsafe { libc::munmap(self.ptr, upper_state::BYTES) };
    }
}

fn var(name: &str) -> Result<OsString> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| err!("{name} is not set (not started by `vrift run`)"))
}

/// `vrift __exec-static VCWD EXE ARGV0 ARGS...` (`args` after the subcommand): runs the
/// program as the module docs say and returns its wait status.
pub fn run(args: &[OsString]) -> Result<libc::c_int> {
    let [vcwd, exe, argv @ ..] = args else {
        bail!("usage: vrift {SUBCOMMAND} VCWD EXE ARGV0 [ARGS...]");
    };
    if argv.is_empty() {
        bail!("no argv[0]");
    }
    let store = PathBuf::from(var(env::STORE)?);
    let upper_dir = PathBuf::from(var(env::UPPER)?);
    let paths: Vec<PathBuf> = std::env::split_paths(&var(env::MANIFESTS)?).collect();
    let through: Vec<PathBuf> = std::env::var_os(env::THROUGH)
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();

    let cas = Cas::open_existing(&store)
        .with_context(|| format!("no vrift store at {}", store.display()))?;
    let opened: Vec<Manifest> = paths
        .iter()
        .map(|p| Manifest::open(p).with_context(|| format!("cannot use manifest {}", p.display())))
        .collect::<Result<_>>()?;
    let mut layers = Vec::with_capacity(opened.len());
    for (m, p) in opened.iter().zip(&paths) {
        let at = super::manifest_root(m, p)?;
        if at == b"/" {
            bail!(
                "{}: a layer with root / cannot be mounted here",
                p.display()
            );
        }
        layers.push(Layer { manifest: m, at });
    }
    // Held (shared flock) until the program is gone: `gc --farms` leaves the farm alone.
    let farm = farm::ensure(&cas, &layers, &paths, None)?;

    let scratch = upper_dir
        .join("static")
        .join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let cleanup = Cleanup(scratch.clone());
    let run_upper = RunUpper {
        fs: upper_dir.join("fs"),
        through,
        table: StateMap::open(&upper_dir)?,
    };
    let mut tops = Vec::new();
    for (i, at) in super::top_roots(&layers).into_iter().enumerate() {
        let at = super::os(&at);
        let rel = at.strip_prefix("/").unwrap_or(&at);
        let s = scratch.join(i.to_string());
        let t = Top {
            farm: farm.root.join(rel),
            mirror: run_upper.hidden(&at),
            through: run_upper.is_through(&at),
            upper: s.join("upper"),
            work: s.join("work"),
            mirror_lower: s.join("mirror"),
            at,
        };
        for d in [&t.upper, &t.work] {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        if let Ok(md) = std::fs::metadata(&t.farm) {
            let _ = std::fs::set_permissions(
                &t.upper,
                std::fs::Permissions::from_mode(md.mode() & 0o7777),
            );
        }
        translate_mirror(&t.mirror, &t.mirror_lower)?;
        tops.push(t);
    }

    let plan = child_plan(&tops, vcwd, exe, argv, &scratch)?;
    let status = spawn(&plan)?;
    drop(plan);
    for t in &tops {
        sync_back(&run_upper, t).with_context(|| {
            format!(
                "moving what it wrote below {} into the run's layer",
                t.at.display()
            )
        })?;
    }
    drop(cleanup);
    drop(farm);
    Ok(status)
}

/// Removes the per-exec scratch directory on drop.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies the shim's mirror `src` to `dst` as an overlay lower layer: directories made,
/// files hard-linked (copied where a link is impossible), symlinks copied, and the shim's
/// whiteouts (symlinks to [`upper_state::WHITEOUT`]) made overlayfs whiteouts (character
/// device 0/0, which an unprivileged process may create). Nothing to do without a mirror.
fn translate_mirror(src: &Path, dst: &Path) -> Result<()> {
    let md = match std::fs::symlink_metadata(src) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", src.display())),
    };
    std::fs::create_dir(dst).with_context(|| format!("cannot create {}", dst.display()))?;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
    for e in std::fs::read_dir(src).with_context(|| format!("cannot read {}", src.display()))? {
        let e = e?;
        let (s, d) = (e.path(), dst.join(e.file_name()));
        let ft = e.file_type()?;
        if ft.is_dir() {
            translate_mirror(&s, &d)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&s)?;
            if target.as_os_str().as_bytes() == upper_state::WHITEOUT {
                mknod_whiteout(&d)?;
            } else {
                std::os::unix::fs::symlink(&target, &d)?;
            }
        } else if ft.is_file() && std::fs::hard_link(&s, &d).is_err() {
            std::fs::copy(&s, &d).with_context(|| format!("cannot copy {}", s.display()))?;
        }
    }
    Ok(())
}

fn mknod_whiteout(p: &Path) -> Result<()> {
    let c = sys::cstr(p)?;
    // SAFETY: a valid path; device 0/0 is the whiteout every user may create.
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("cannot make a whiteout at {}", p.display()));
    }
    Ok(())
}

/// Everything the child needs, made before `clone`.
struct ChildPlan {
    mounts: Vec<ChildMount>,
    vcwd: CString,
    exe: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

struct ChildMount {
    at: PathBuf,
    /// Topmost first.
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    /// For a root gone from disk: the throwaway layer of its mount point (upper, work).
    mount_point: (PathBuf, PathBuf),
}

fn child_plan(
    tops: &[Top],
    vcwd: &OsStr,
    exe: &OsStr,
    argv: &[OsString],
    scratch: &Path,
) -> Result<ChildPlan> {
    let mut mounts = Vec::new();
    for (i, t) in tops.iter().enumerate() {
        let real = ns::is_real_dir(&t.at).then(|| t.at.clone());
        let mut lowers = Vec::new();
        if t.through {
            lowers.extend(real.clone());
        }
        if t.mirror_lower.is_dir() {
            lowers.push(t.mirror_lower.clone());
        }
        lowers.push(t.farm.clone());
        if !t.through {
            lowers.extend(real);
        }
        let mp = scratch.join(format!("mp{i}"));
        let (mu, mw) = (mp.join("upper"), mp.join("work"));
        for d in [&mu, &mw] {
            std::fs::create_dir_all(d)?;
        }
        mounts.push(ChildMount {
            at: t.at.clone(),
            lowers,
            upper: t.upper.clone(),
            work: t.work.clone(),
            mount_point: (mu, mw),
        });
    }
    let c = |s: &OsStr| CString::new(s.as_bytes()).context("an argument contains a NUL byte");
    // The program's children see the tree as it does: none of the shim's variables.
    let drop_vars = [
        env::MANIFESTS,
        env::STORE,
        env::UPPER,
        env::THROUGH,
        env::SEALED,
        env::REPORT,
        env::BIN,
        "VRIFT_EXE",
        "VRIFT_PARENT",
    ];
    let envp = std::env::vars_os()
        .filter(|(k, _)| !drop_vars.iter().any(|d| OsStr::new(d) == k))
        .filter_map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv).ok()
        })
        .collect();
    Ok(ChildPlan {
        mounts,
        vcwd: c(vcwd)?,
        exe: c(exe)?,
        argv: argv.iter().map(|a| c(a)).collect::<Result<_>>()?,
        envp,
    })
}

/// `p` opened (`O_PATH`) in the child's mount namespace and named `/proc/self/fd/N`: overlayfs
/// takes layers only from its own namespace, and a name resolved now is not redirected by a
/// mount made later (a mount point over a shared ancestor). The descriptor stays open until
/// exec.
fn fd_name(p: &Path) -> Result<PathBuf, Fail> {
    let c = sys::cstr(p).map_err(|e| Fail::new(p.display().to_string(), e))?;
    // SAFETY: a valid path; the descriptor is close-on-exec and deliberately kept.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Fail::new(
            format!("cannot open {}", p.display()),
            io::Error::last_os_error(),
        ));
    }
    Ok(PathBuf::from(format!("/proc/self/fd/{fd}")))
}

/// The overlay of `m` with every layer named by descriptor, plus the throwaway layer of its
/// mount point for a root gone from disk.
fn open_top(m: &ChildMount) -> Result<(ns::Overlay, Option<(PathBuf, PathBuf)>), Fail> {
    let lowers: Vec<PathBuf> = m
        .lowers
        .iter()
        .map(|l| fd_name(l))
        .collect::<Result<_, _>>()?;
    let o = ns::Overlay {
        at: m.at.clone(),
        lowers,
        upper: fd_name(&m.upper)?,
        work: fd_name(&m.work)?,
    };
    let mp = if ns::is_real_dir(&m.at) {
        None
    } else {
        Some((fd_name(&m.mount_point.0)?, fd_name(&m.mount_point.1)?))
    };
    Ok((o, mp))
}

/// Starts the program in its namespaces and waits for it; its raw wait status.
fn spawn(plan: &ChildPlan) -> Result<libc::c_int> {
    // SAFETY: no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    // Root needs no user namespace (and one would hide other users' files from it).
    let userns = uid != 0;
    let flags = if userns {
        libc::CLONE_NEWUSER | libc::CLONE_NEWNS
    } else {
        libc::CLONE_NEWNS
    };
    let (ready_r, ready_w) = sys::pipe()?;
    let (err_r, err_w) = sys::pipe()?;
    let mut argp: Vec<*const libc::c_char> = plan.argv.iter().map(|c| c.as_ptr()).collect();
    argp.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.envp.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    let pid = match sys::clone_fork(flags) {
        Ok(p) => p,
        Err(e) => {
            for fd in [ready_r, ready_w, err_r, err_w] {
                sys::close(fd);
            }
            return Err(err!(
                "cannot create a mount namespace: {e}; {}",
                ns::userns_hint()
            ));
        }
    };
    if pid == 0 {
        sys::close(ready_w);
        sys::close(err_r);
        child(plan, userns, &argp, &envp, ready_r, err_w);
    }
    sys::close(ready_r);
    sys::close(err_w);
    if userns {
        if let Err((p, e)) = ns::write_id_maps(pid, uid, gid) {
            // SAFETY: killing and reaping our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            sys::close(ready_w);
            sys::close(err_r);
            wait_for(pid);
            return Err(err!("writing {p}: {e}; {}", ns::userns_hint()));
        }
    }
    let (status, failed) = ns::release_and_wait(pid, ready_w, err_r);
    if let Some((_, text)) = failed {
        return Err(err!("{text}"));
    }
    Ok(status)
}

/// The program's side of the clone: mounts, working directory, exec. Never returns.
fn child(
    plan: &ChildPlan,
    userns: bool,
    argp: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    ready_r: libc::c_int,
    err_w: libc::c_int,
) -> ! {
    let _ = sys::die_with_parent();
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into a valid buffer.
    let n = unsafe { libc::read(ready_r, b.as_mut_ptr().cast(), 1) };
    sys::close(ready_r);
    if n != 1 {
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(1) };
    }
    let fail = |f: Fail| -> ! {
        let mut msg = f.errno.to_le_bytes().to_vec();
        msg.extend_from_slice(f.what.as_bytes());
        sys::write_all_fd(err_w, &msg);
        // SAFETY: as above.
        unsafe { libc::_exit(1) }
    };
    if let Err(e) = sys::mount(
        None,
        c"/",
        None,
        (libc::MS_REC | libc::MS_PRIVATE) as libc::c_ulong,
        None,
    ) {
        fail(Fail::new("cannot make the mounts private", e));
    }
    // Every layer is opened before the first mount (see `fd_name`).
    let mut opened = Vec::with_capacity(plan.mounts.len());
    for m in &plan.mounts {
        match open_top(m) {
            Ok(o) => opened.push(o),
            Err(f) => fail(f),
        }
    }
    for (o, mp) in &opened {
        // Mounts go onto directories opened without following symlinks: resolve the ones
        // the host has on the way first (a symlinked home), as a mount by path would.
        let at = super::real_path(&o.at);
        if let Some((u, w)) = mp {
            if let Err(f) = ns::make_mount_point_in(&at, u, w) {
                fail(f);
            }
        }
        if let Err(f) = ns::mount_overlay(o, Path::new("/"), &at) {
            fail(f);
        }
    }
    // The working directory was the shim's stand-in (or the real one under the mount):
    // enter the virtual one, now a real path.
    let _ = sys::chdir(&plan.vcwd);
    // SAFETY: resetting the signal mask in the fresh child.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
    // In a user namespace the program runs as the user it was, so it would lose every
    // capability at exec and could not write a file of the view whose blob carries no write
    // bits (the view shows the manifest's mode; the write goes to the upper layer): keep
    // `CAP_DAC_OVERRIDE` within the namespace, as `--isolate` does, and nothing else.
    if userns {
        if let Err(e) = sys::restrict_for_exec(true) {
            fail(Fail::new("cannot set the program's capabilities", e));
        }
    }
    // SAFETY: NULL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(plan.exe.as_ptr(), argp.as_ptr(), envp.as_ptr()) };
    let e = io::Error::last_os_error();
    fail(Fail::new(
        format!("cannot execute {}", plan.exe.to_string_lossy()),
        e,
    ))
}

/// Moves what the program wrote below `t` (the overlay's upper layer) into the run's layer.
fn sync_back(up: &RunUpper, t: &Top) -> Result<()> {
    sync_dir(up, t, &t.upper, Path::new(""))
}

fn sync_dir(up: &RunUpper, t: &Top, dir: &Path, rel: &Path) -> Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    for e in rd {
        let e = e?;
        let src = e.path();
        let r = rel.join(e.file_name());
        let v = t.at.join(&r);
        let md = std::fs::symlink_metadata(&src)?;
        let ft = md.file_type();
        if ft.is_char_device() && md.rdev() == 0 {
            delete(up, t, &r, &v)?;
        } else if ft.is_dir() {
            let dest = up.dest(&v);
            match std::fs::symlink_metadata(&dest) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    remove_any(&dest)?;
                    make_dir(&dest, md.mode())?;
                }
                Err(_) => make_dir(&dest, md.mode())?,
            }
            if up.is_through(&v) {
                clear_whiteout(up, &v);
            }
            if opaque(&src) {
                // Created over a deleted directory: what the layers below held is gone.
                let mut names = std::collections::BTreeSet::new();
                for d in [t.farm.join(&r), t.mirror_lower.join(&r), v.clone()] {
                    if let Ok(rd) = std::fs::read_dir(&d) {
                        names.extend(rd.flatten().map(|e| e.file_name()));
                    }
                }
                for n in names {
                    if std::fs::symlink_metadata(src.join(&n)).is_err() {
                        delete(up, t, &r.join(&n), &v.join(&n))?;
                    }
                }
            }
            up.table.flag(&v);
            sync_dir(up, t, &src, &r)?;
        } else {
            let dest = up.dest(&v);
            if let Ok(m) = std::fs::symlink_metadata(&dest) {
                if m.is_dir() {
                    remove_any(&dest)?;
                }
            }
            move_file(&src, &dest, &md)?;
            if up.is_through(&v) {
                clear_whiteout(up, &v);
            }
            up.table.flag(&v);
        }
    }
    Ok(())
}

/// `v` was deleted: gone from the project (below a write-through root) or the real tree,
/// gone from the mirror, and hidden by a whiteout if a layer holds it.
fn delete(up: &RunUpper, t: &Top, rel: &Path, v: &Path) -> Result<()> {
    let in_layers = std::fs::symlink_metadata(t.farm.join(rel)).is_ok();
    if t.through || !in_layers {
        remove_any(v)?;
    }
    let hidden = up.hidden(v);
    remove_any(&hidden)?;
    if in_layers {
        if let Some(p) = hidden.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::os::unix::fs::symlink(OsStr::from_bytes(upper_state::WHITEOUT), &hidden)
            .with_context(|| format!("cannot write a whiteout at {}", hidden.display()))?;
    }
    up.table.flag(v);
    Ok(())
}

/// Below a write-through root a whiteout in the mirror wins over the project: one for a
/// path written again goes.
fn clear_whiteout(up: &RunUpper, v: &Path) {
    let h = up.hidden(v);
    if std::fs::read_link(&h).is_ok_and(|t| t.as_os_str().as_bytes() == upper_state::WHITEOUT) {
        let _ = std::fs::remove_file(&h);
    }
}

fn remove_any(p: &Path) -> Result<()> {
    let r = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    r.with_context(|| format!("cannot remove {}", p.display()))
}

fn make_dir(p: &Path, mode: u32) -> Result<()> {
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::create_dir(p).with_context(|| format!("cannot create {}", p.display()))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode & 0o7777))?;
    Ok(())
}

/// Renames `src` over `dest`; across file systems a copy beside `dest` renamed over it.
fn move_file(src: &Path, dest: &Path, md: &std::fs::Metadata) -> Result<()> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match std::fs::rename(src, dest) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
        Err(e) => return Err(e).with_context(|| format!("cannot move to {}", dest.display())),
    }
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dest.with_file_name(format!(".{name}.vrift-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    if md.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, &tmp)?;
    } else {
        std::fs::copy(src, &tmp).with_context(|| format!("cannot copy to {}", dest.display()))?;
        let f = std::fs::File::open(&tmp)?;
        let times = std::fs::FileTimes::new().set_modified(md.modified()?);
        let _ = f.set_times(times);
    }
    std::fs::rename(&tmp, dest).with_context(|| format!("cannot move to {}", dest.display()))?;
    let _ = std::fs::remove_file(src);
    Ok(())
}

/// Whether overlayfs marked the directory opaque (made over a deleted one).
fn opaque(p: &Path) -> bool {
    let Ok(c) = sys::cstr(p) else {
        return false;
    };
    let mut v = [0u8; 4];
    // SAFETY: valid path, name and buffer.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"user.overlay.opaque".as_ptr(),
            v.as_mut_ptr().cast(),
            v.len(),
        )
    };
    n == 1 && v[0] == b'y'
}
