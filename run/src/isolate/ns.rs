//! The namespaces: a rootless user + mount + pid + ipc + uts sandbox around CMD.
//!
//! Processes:
//! * `vrift` (the parent, in the host's namespaces) `clone`s **init** into new namespaces,
//!   writes init's uid/gid maps (its own uid and gid map to themselves: one line each, which
//!   an unprivileged process may write; `setgroups` is denied first), then lets it go on.
//! * **init** (pid 1 of the new pid namespace, full capabilities in the new user namespace
//!   only) builds the root under the run directory's `root/` and `pivot_root`s into it:
//!   - host mode (no `--base`): a recursive bind of `/` made read-only and nosuid, a fresh
//!     `/proc` (with `/proc/sys` read-only), tmpfs `/tmp` and `/dev/shm`, and an overlay
//!     (lower = the link farm, upper = throwaway) at each manifest root;
//!   - base mode: one overlay of the link farm as `/`, a fresh `/proc`, a minimal `/dev`
//!     (tmpfs with `null zero full random urandom tty` bind-mounted from the host, `pts`,
//!     `shm`, the usual symlinks), a tmpfs `/tmp` unless a layer ships files under `/tmp`;
//!   - the old root is then detached: in base mode nothing of the host is reachable;
//!   - init forks CMD, forwards signals to it, reaps every orphan, and exits with CMD's
//!     status (128+N if a signal N killed it). When init exits the kernel kills whatever is
//!     left in the pid namespace, and with the last process the mount namespace and all its
//!     mounts go.
//! * **CMD** runs as the caller's own uid/gid, with no capabilities but `CAP_DAC_OVERRIDE`
//!   (none at all when a host directory is bound writable; see `sys::restrict_for_exec`),
//!   no-new-privs, and cannot mount, remount or unmount.
//!
//! Setup errors travel back to the parent over a close-on-exec pipe (errno + message); the
//! pipe reaching EOF without a message means CMD was exec'd.
// Namespaces: clone, setns, uid maps, pre_exec code after fork.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use crate::error::{err, Result};

use super::sys::{self, cstr};
use crate::signals::{exit_code, set_forwarding, set_target, wait_for};

/// One overlay to mount: the directories `lowers` (topmost first; for a sandbox, the farm
/// directory) appear merged at `at` (absolute, inside the new root), writes go to `upper`.
pub struct Overlay {
    pub at: PathBuf,
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

pub struct Plan {
    /// Empty directory where the new root is assembled.
    pub staging: PathBuf,
    /// Writable scratch directory of this run (upper layers of made-up mount points).
    pub scratch: PathBuf,
    /// Base mode: `overlays` is exactly one overlay at `/`.
    pub base: bool,
    pub overlays: Vec<Overlay>,
    pub tmpfs_tmp: bool,
    /// Host directories (canonical paths) bound writable at the same path inside: what CMD
    /// writes there stays (`--bind`, and the project directory of a project run).
    pub binds: Vec<PathBuf>,
    /// `--read-only`: the manifests' trees are mounted read-only (writes fail with EROFS):
    /// in host mode the farm is bound directly, without an overlay.
    pub read_only_view: bool,
    /// Where CMD starts (falls back to `/` if it does not exist inside).
    pub cwd: PathBuf,
    pub cmd: Vec<OsString>,
    /// Share the host's network (`--network host`); otherwise a network namespace of its own
    /// with only a loopback interface: code run for isolation cannot reach services on the
    /// host's 127.0.0.1 or the network.
    pub network_host: bool,
}

/// Why the kernel may refuse user namespaces, with this machine's values of the sysctls.
pub fn userns_hint() -> String {
    let mut vals = Vec::new();
    for (name, path) in [
        (
            "kernel.unprivileged_userns_clone",
            "/proc/sys/kernel/unprivileged_userns_clone",
        ),
        (
            "user.max_user_namespaces",
            "/proc/sys/user/max_user_namespaces",
        ),
        (
            "kernel.apparmor_restrict_unprivileged_userns",
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        ),
    ] {
        if let Ok(v) = std::fs::read_to_string(path) {
            vals.push(format!("{name}={}", v.trim()));
        }
    }
    let here = if vals.is_empty() {
        String::new()
    } else {
        format!(" (here: {})", vals.join(", "))
    };
    format!(
        "the kernel does not let this user create user namespaces: check the sysctls \
         kernel.unprivileged_userns_clone (must be 1 where it exists), \
         user.max_user_namespaces (must be > 0) and \
         kernel.apparmor_restrict_unprivileged_userns (must be 0, or give vrift an AppArmor \
         profile that allows userns){here}; in a container, its seccomp profile may also forbid \
         them"
    )
}

/// Lets the cloned child `pid` go on (one byte on `ready_w`), forwards our signals to it
/// while it runs and waits for it: its wait status, and the `(errno, what)` a failed setup
/// step reported on `err_r` (see [`Fail`]) before its `exec`.
pub(super) fn release_and_wait(
    pid: libc::pid_t,
    ready_w: libc::c_int,
    err_r: libc::c_int,
) -> (libc::c_int, Option<(i32, String)>) {
    sys::write_all_fd(ready_w, b"1");
    sys::close(ready_w);
    set_target(pid);
    set_forwarding(true);
    let msg = sys::read_to_end(err_r);
    sys::close(err_r);
    let status = wait_for(pid);
    set_target(0);
    set_forwarding(false);
    let failed = (msg.len() >= 4).then(|| {
        (
            i32::from_le_bytes([msg[0], msg[1], msg[2], msg[3]]),
            String::from_utf8_lossy(&msg[4..]).into_owned(),
        )
    });
    (status, failed)
}

/// Maps the user and group of the process that made the user namespace of `pid` to
/// themselves inside it (one line each, which an unprivileged process may write, after
/// denying `setgroups`). The file that could not be written, and why.
pub(super) fn write_id_maps(
    pid: libc::pid_t,
    uid: libc::uid_t,
    gid: libc::gid_t,
) -> Result<(), (String, io::Error)> {
    let maps = [
        ("setgroups", "deny".to_string()),
        ("uid_map", format!("{uid} {uid} 1\n")),
        ("gid_map", format!("{gid} {gid} 1\n")),
    ];
    for (file, content) in &maps {
        let p = format!("/proc/{pid}/{file}");
        std::fs::write(&p, content).map_err(|e| (p, e))?;
    }
    Ok(())
}

fn userns_error(what: &str, e: &io::Error) -> crate::error::RunError {
    err!(
        "--isolate: cannot set up a user namespace ({what}: {e}): {}",
        userns_hint()
    )
}

/// A failed setup step inside the child.
#[derive(Debug)]
pub(super) struct Fail {
    pub(super) errno: i32,
    pub(super) what: String,
}

impl Fail {
    pub(super) fn new(what: impl Into<String>, e: io::Error) -> Fail {
        Fail {
            errno: e.raw_os_error().unwrap_or(0),
            what: format!("{}: {e}", what.into()),
        }
    }
}

trait Step<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, Fail>;
}

impl<T> Step<T> for io::Result<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, Fail> {
        self.map_err(|e| Fail::new(what(), e))
    }
}

/// Runs `plan.cmd` in the sandbox and returns its exit code (128+N when killed by signal N).
/// Returns only once every process of the sandbox is gone.
pub fn run(plan: &Plan) -> Result<i32> {
    let (ready_r, ready_w) = sys::pipe().map_err(|e| err!("pipe: {e}"))?;
    let (err_r, err_w) = match sys::pipe() {
        Ok(p) => p,
        Err(e) => {
            sys::close(ready_r);
            sys::close(ready_w);
            return Err(err!("pipe: {e}"));
        }
    };
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    if !plan.network_host {
        flags |= libc::CLONE_NEWNET;
    }
    let pid = match sys::clone_fork(flags) {
        Ok(p) => p,
        Err(e) => {
            for fd in [ready_r, ready_w, err_r, err_w] {
                sys::close(fd);
            }
            return Err(userns_error("clone", &e));
        }
    };
    if pid == 0 {
        sys::close(ready_w);
        sys::close(err_r);
        init_main(plan, ready_r, err_w);
    }
    sys::close(ready_r);
    sys::close(err_w);
    if let Err((p, e)) = write_id_maps(pid, uid, gid) {
        // SAFETY: killing and reaping our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        sys::close(ready_w);
        sys::close(err_r);
        wait_for(pid);
        return Err(userns_error(&format!("writing {p}"), &e));
    }
    let (status, failed) = release_and_wait(pid, ready_w, err_r);
    if let Some((errno, text)) = failed {
        if matches!(errno, libc::EPERM | libc::EACCES) && text.starts_with("[userns]") {
            return Err(err!(
                "--isolate: {}: {}",
                text.trim_start_matches("[userns] "),
                userns_hint()
            ));
        }
        return Err(err!("--isolate: {text}"));
    }
    Ok(exit_code(status))
}

/// pid 1 of the sandbox. Never returns.
fn init_main(plan: &Plan, ready_r: libc::c_int, err_w: libc::c_int) -> ! {
    let _ = sys::die_with_parent();
    // Wait until the parent has written our uid/gid maps.
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into a valid buffer.
    let n = unsafe { libc::read(ready_r, b.as_mut_ptr().cast(), 1) };
    sys::close(ready_r);
    if n != 1 {
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(1) };
    }
    // Nobody inside may look into init (`/proc/1/fd`, ptrace): it was cloned from vrift and
    // holds descriptors of the host's file system until `close_own_fds` below. (Not before
    // the maps are written: the parent writes them through /proc/<init>/, which becomes
    // root's once init is not dumpable.)
    let _ = sys::not_dumpable();
    match setup(plan) {
        Ok(()) => {}
        Err(f) => {
            let mut msg = f.errno.to_le_bytes().to_vec();
            msg.extend_from_slice(f.what.as_bytes());
            sys::write_all_fd(err_w, &msg);
            // SAFETY: as above.
            unsafe { libc::_exit(1) };
        }
    }
    let argv: Vec<CString> = match plan
        .cmd
        .iter()
        .map(|s| CString::new(s.clone().into_vec()))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(v) if !v.is_empty() => v,
        _ => {
            let mut msg = 0i32.to_le_bytes().to_vec();
            msg.extend_from_slice(b"a command argument is empty or contains a NUL byte");
            sys::write_all_fd(err_w, &msg);
            // SAFETY: as above.
            unsafe { libc::_exit(1) };
        }
    };
    let mut argp: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argp.push(std::ptr::null());
    // vrift's own descriptors (store, farm, scratch directory: all close-on-exec, all on the
    // host's mounts) must not outlive setup in init; descriptors vrift inherited without
    // close-on-exec are the caller's to pass on to CMD.
    sys::close_own_fds(err_w);
    // Handlers before the fork, so no signal can slip by between fork and install (pid 1
    // ignores signals it has no handler for); exec resets them in CMD.
    set_forwarding(true);
    // SAFETY: this process is single-threaded (a fresh clone of a single-threaded parent).
    let cmd = unsafe { libc::fork() };
    if cmd < 0 {
        let e = io::Error::last_os_error();
        let mut msg = e.raw_os_error().unwrap_or(0).to_le_bytes().to_vec();
        msg.extend_from_slice(format!("fork: {e}").as_bytes());
        sys::write_all_fd(err_w, &msg);
        // SAFETY: as above.
        unsafe { libc::_exit(1) };
    }
    if cmd == 0 {
        exec_cmd(&argv, &argp, plan.binds.is_empty());
    }
    set_target(cmd);
    // Setup succeeded: CMD's copy of the pipe closes when it execs, ours now; the parent
    // then reads EOF.
    sys::close(err_w);
    // init needs no privilege any more (signalling CMD, same uid, needs none).
    let _ = sys::set_caps(0);
    let mut code = 1;
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: reaping any child of ours (pid 1 inherits every orphan).
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r == cmd {
            code = exit_code(status);
            break;
        }
        if r < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                _ => break,
            }
        }
    }
    // SAFETY: leaving; the kernel kills what is left of the pid namespace.
    unsafe { libc::_exit(code) }
}

fn exec_cmd(argv: &[CString], argp: &[*const libc::c_char], dac_override: bool) -> ! {
    // SAFETY: resetting the signal mask and handlers in the fresh child.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
    set_forwarding(false);
    if let Err(e) = sys::restrict_for_exec(dac_override) {
        eprintln!("vrift: cannot drop privileges: {e}");
        // SAFETY: leaving the child.
        unsafe { libc::_exit(126) };
    }
    // SAFETY: NULL-terminated argv of valid C strings; execvp searches PATH of our environ.
    unsafe { libc::execvp(argp[0], argp.as_ptr()) };
    let e = io::Error::last_os_error();
    eprintln!("vrift: cannot run {}: {e}", argv[0].to_string_lossy());
    let code = if e.raw_os_error() == Some(libc::ENOENT) {
        127
    } else {
        126
    };
    // SAFETY: leaving the child.
    unsafe { libc::_exit(code) }
}

/// A directory, not a symlink to one.
pub(super) fn is_real_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

/// `root` + absolute `inner` as one path.
fn under(root: &Path, inner: &Path) -> PathBuf {
    let rel = inner.strip_prefix("/").unwrap_or(inner);
    if rel.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

fn c(p: &Path) -> Result<CString, Fail> {
    cstr(p).map_err(|e| Fail::new(p.display().to_string(), e))
}

/// Makes `target` (under the read-only new root `root`) a directory to mount on. Where it
/// is gone from the host (the usual case: a tree ingested, then deleted), it is made in a
/// throwaway layer over its nearest existing ancestor ([`make_mount_point`], the `n`-th).
fn mount_point(root: &Path, target: &Path, scratch: &Path, n: &mut usize) -> Result<(), Fail> {
    match dir_below(root, target, Some(0o755)) {
        Err(f) if f.errno == libc::EROFS => {
            *n += 1;
            make_mount_point(root, target, scratch, *n)
        }
        r => r.map(drop),
    }
}

/// Makes `target` (under the read-only new root `root`) exist: an overlay over its nearest
/// existing ancestor, whose throwaway upper layer (in `scratch`) holds the missing
/// directories. The ancestor keeps its content; only mounts below it are not carried over.
pub(super) fn make_mount_point(
    root: &Path,
    target: &Path,
    scratch: &Path,
    n: usize,
) -> Result<(), Fail> {
    let upper = scratch.join(format!("{n}/upper"));
    let work = scratch.join(format!("{n}/work"));
    for d in [&upper, &work] {
        std::fs::create_dir_all(d).map_err(|e| Fail::new(d.display().to_string(), e))?;
    }
    make_mount_point_with(root, target, &upper, &work)
}

/// [`make_mount_point`] on the host's root (`/`), with the throwaway layer in `upper`/`work`.
pub(super) fn make_mount_point_in(target: &Path, upper: &Path, work: &Path) -> Result<(), Fail> {
    make_mount_point_with(Path::new("/"), target, upper, work)
}

fn make_mount_point_with(
    root: &Path,
    target: &Path,
    upper: &Path,
    work: &Path,
) -> Result<(), Fail> {
    let mut anc = target.parent();
    while let Some(a) = anc {
        if is_real_dir(a) {
            break;
        }
        anc = a.parent();
    }
    let Some(anc) = anc.filter(|a| *a != root) else {
        return Err(Fail {
            errno: libc::EROFS,
            what: format!("cannot create mount point {}", target.display()),
        });
    };
    // The merged directory shows the upper directory's mode: give it the ancestor's.
    if let Ok(md) = std::fs::metadata(anc) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(
            upper,
            std::fs::Permissions::from_mode(md.permissions().mode() & 0o7777),
        );
    }
    // The ancestor is both the lower layer and the mount point: one descriptor, opened
    // without following a symlink, serves as both.
    let anc_fd = dir_below(root, anc, None)?;
    let what = || format!("cannot mount a throwaway layer over {}", anc.display());
    overlay_onto(&[&anc_fd], &open_layer(upper)?, &open_layer(work)?, &anc_fd).step(what)?;
    dir_below(root, target, Some(0o755)).map(drop)
}

/// Makes sure `p` is a directory to mount on: creates it (and missing parents, `mode` for
/// the last) if absent; refuses symlinks (a mount would follow them out of the new root).
pub(super) fn mount_point_dir(p: &Path, mode: libc::mode_t) -> Result<(), Fail> {
    let cp = c(p)?;
    match sys::file_type(&cp) {
        Ok(t) if t == libc::S_IFDIR => Ok(()),
        Ok(_) => Err(Fail {
            errno: libc::ENOTDIR,
            what: format!("{}: not a directory, cannot mount on it", p.display()),
        }),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            if let Some(parent) = p.parent() {
                if parent != p {
                    mount_point_dir(parent, 0o755)?;
                }
            }
            sys::mkdir(&cp, mode).step(|| format!("cannot create mount point {}", p.display()))?;
            let _ = sys::chmod(&cp, mode);
            Ok(())
        }
        Err(e) => Err(Fail::new(p.display().to_string(), e)),
    }
}

/// Opens the directory `target` (below `root`, or `root` itself) without following a
/// symlink anywhere below `root`, for a mount to go onto the directory itself: a path
/// looked up again at mount time could meanwhile lead elsewhere (a directory swapped for a
/// symlink by a host process). With `create`, missing directories are made on the way,
/// each relative to its parent's descriptor, the last with that mode (`EROFS` where the
/// file system is read-only, for the caller's throwaway layer).
fn dir_below(root: &Path, target: &Path, create: Option<libc::mode_t>) -> Result<OwnedFd, Fail> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let Ok(rel) = target.strip_prefix(root) else {
        return Err(Fail {
            errno: libc::EINVAL,
            what: format!("{} is not below {}", target.display(), root.display()),
        });
    };
    let how = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let root_fd = rustix::fs::open(root, how, Mode::empty())
        .map_err(|e| Fail::new(root.display().to_string(), e.into()))?;
    if rel.as_os_str().is_empty() {
        return Ok(root_fd);
    }
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | ResolveFlags::BENEATH;
    match rustix::fs::openat2(&root_fd, rel, how, Mode::empty(), resolve) {
        Ok(fd) => Ok(fd),
        // Name the symlink as CMD would see it.
        Err(rustix::io::Errno::LOOP) => Err(no_symlink_below(root, target).err().unwrap_or(Fail {
            errno: libc::ELOOP,
            what: format!("cannot mount at {}: a symlink on the way", target.display()),
        })),
        Err(rustix::io::Errno::NOTDIR) => Err(Fail {
            errno: libc::ENOTDIR,
            what: format!("{}: not a directory, cannot mount on it", target.display()),
        }),
        Err(rustix::io::Errno::NOENT) if create.is_some() => {
            let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
                return Err(Fail::new(
                    target.display().to_string(),
                    io::ErrorKind::NotFound.into(),
                ));
            };
            let parent = dir_below(root, parent, Some(0o755))?;
            let mode = create.unwrap_or(0o755);
            let made = match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(mode)) {
                Ok(()) => true,
                Err(rustix::io::Errno::EXIST) => false,
                Err(e) => {
                    return Err(Fail::new(
                        format!("cannot create mount point {}", target.display()),
                        e.into(),
                    ))
                }
            };
            let fd = rustix::fs::openat2(
                &parent,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
                resolve,
            )
            .map_err(|e| Fail::new(target.display().to_string(), e.into()))?;
            if made {
                // The mode asked for, whatever the umask.
                let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode));
            }
            Ok(fd)
        }
        Err(e) => Err(Fail::new(target.display().to_string(), e.into())),
    }
}

/// Attaches the detached mount `mnt` onto the directory `onto`.
fn attach(mnt: &OwnedFd, onto: &OwnedFd) -> io::Result<()> {
    use rustix::mount::MoveMountFlags;
    rustix::mount::move_mount(
        mnt,
        c"",
        onto,
        c"",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(io::Error::from)
}

/// Mounts the overlay `o` on `target` (below `root`; made if missing), held open from the
/// lookup to the mount (see [`dir_below`]). The layers are opened first and named to
/// overlayfs by descriptor (`/proc/self/fd/N`): `fsconfig` takes at most 255 bytes per value,
/// which a farm's path under a deep manifest root exceeds, and a name resolved once cannot
/// be redirected in between.
pub(super) fn mount_overlay(o: &Overlay, root: &Path, target: &Path) -> Result<(), Fail> {
    let onto = dir_below(root, target, Some(0o755))?;
    let lowers = o
        .lowers
        .iter()
        .map(|l| open_layer(l))
        .collect::<Result<Vec<_>, _>>()?;
    let lowers: Vec<&OwnedFd> = lowers.iter().collect();
    overlay_onto(
        &lowers,
        &open_layer(&o.upper)?,
        &open_layer(&o.work)?,
        &onto,
    )
    .step(|| {
        format!(
            "cannot mount the overlay of {} at {}",
            o.lowers[0].display(),
            o.at.display()
        )
    })
}

/// A layer of an overlay (vrift's own directories: the farm, the run's upper and work),
/// opened `O_PATH`.
fn open_layer(p: &Path) -> Result<OwnedFd, Fail> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(
        p,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Fail::new(format!("cannot open {}", p.display()), e.into()))
}

/// An overlay of `lowers` (topmost first), `upper` and `work`, all named by descriptor,
/// attached onto `onto`. `volatile`: the upper layer is thrown away, so overlayfs need not
/// sync it — without it, unmounting (the namespace's teardown) syncs the whole upper file
/// system, which costs tens to hundreds of milliseconds on a busy disk.
fn overlay_onto(
    lowers: &[&OwnedFd],
    upper: &OwnedFd,
    work: &OwnedFd,
    onto: &OwnedFd,
) -> io::Result<()> {
    use rustix::mount::{
        fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, FsMountFlags,
        FsOpenFlags, MountAttrFlags,
    };
    use std::os::fd::AsRawFd;
    let name = |fd: &OwnedFd| format!("/proc/self/fd/{}", fd.as_raw_fd());
    let lowerdir: Vec<String> = lowers.iter().map(|l| name(l)).collect();
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    fsconfig_set_string(&fs, "source", "vrift")?;
    fsconfig_set_string(&fs, "lowerdir", lowerdir.join(":").as_str())?;
    fsconfig_set_string(&fs, "upperdir", name(upper).as_str())?;
    fsconfig_set_string(&fs, "workdir", name(work).as_str())?;
    fsconfig_set_flag(&fs, "userxattr")?;
    fsconfig_set_flag(&fs, "volatile")?;
    fsconfig_create(&fs)?;
    let mnt = fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID,
    )?;
    attach(&mnt, onto)
}

/// Binds the directory `src` onto `target` (below `root`; made if missing), with the mounts
/// below `src`, nosuid, read-only if asked. Both ends are held open from lookup to mount;
/// `src` is looked up without following symlinks unless `follow_src` (vrift's own link
/// farm, whose path may pass through a symlinked home).
fn bind_below(
    src: &Path,
    follow_src: bool,
    root: &Path,
    target: &Path,
    read_only: bool,
) -> Result<(), Fail> {
    use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
    use rustix::mount::OpenTreeFlags;
    let onto = dir_below(root, target, Some(0o755))?;
    let how = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let resolve = if follow_src {
        ResolveFlags::empty()
    } else {
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
    };
    let from = rustix::fs::openat2(CWD, src, how, Mode::empty(), resolve).map_err(|e| {
        if e == rustix::io::Errno::LOOP {
            Fail {
                errno: libc::ELOOP,
                what: format!(
                    "cannot bind {}: it now passes through a symlink (changed since the run began?)",
                    src.display()
                ),
            }
        } else {
            Fail::new(format!("cannot bind {}", src.display()), e.into())
        }
    })?;
    let mut attrs = sys::MOUNT_ATTR_NOSUID;
    if read_only {
        attrs |= sys::MOUNT_ATTR_RDONLY;
    }
    (|| -> io::Result<()> {
        let tree = rustix::mount::open_tree(
            &from,
            c"",
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_EMPTY_PATH
                | OpenTreeFlags::AT_RECURSIVE,
        )?;
        // Set on the detached tree, before anything can see it attached.
        sys::mount_setattr_fd(&tree, true, attrs, 0)?;
        attach(&tree, &onto)
    })()
    .step(|| format!("cannot bind {} to {}", src.display(), target.display()))
}

fn tmpfs(target: &Path, opts: &CStr) -> Result<(), Fail> {
    sys::mount(
        Some(c"tmpfs"),
        &c(target)?,
        Some(c"tmpfs"),
        (libc::MS_NOSUID | libc::MS_NODEV) as libc::c_ulong,
        Some(opts),
    )
    .step(|| format!("cannot mount a tmpfs at {}", target.display()))
}

fn bind(src: &Path, target: &Path, recursive: bool) -> Result<(), Fail> {
    let mut flags = libc::MS_BIND;
    if recursive {
        flags |= libc::MS_REC;
    }
    sys::mount(
        Some(&c(src)?),
        &c(target)?,
        None,
        flags as libc::c_ulong,
        None,
    )
    .step(|| format!("cannot bind {} to {}", src.display(), target.display()))
}

/// Refuses a mount target below `root` whose path passes through a symlink: the kernel
/// would follow it (an absolute one out of the new root, onto the host) before the mount or
/// the `mkdir` of a missing mount point. A view's symlinks come from manifests, which are
/// not trusted to steer mounts.
fn no_symlink_below(root: &Path, target: &Path) -> Result<(), Fail> {
    let Ok(rel) = target.strip_prefix(root) else {
        return Ok(());
    };
    let mut at = root.to_path_buf();
    for comp in rel.components() {
        at.push(comp);
        match sys::file_type(&c(&at)?) {
            Ok(t) if t == libc::S_IFLNK => {
                // Named as CMD would see them.
                let inside = |p: &Path| Path::new("/").join(p.strip_prefix(root).unwrap_or(p));
                return Err(Fail {
                    errno: libc::ELOOP,
                    what: format!(
                        "cannot mount at {}: {} is a symlink inside the sandbox",
                        inside(target).display(),
                        inside(&at).display()
                    ),
                });
            }
            Ok(_) => {}
            // Missing from here on: made as directories, no symlink to follow.
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Names the `--bind` a mount failure was for (its message names the staging path).
fn for_bind(f: Fail, b: &Path) -> Fail {
    Fail {
        what: format!("{} (for --bind {})", f.what, b.display()),
        ..f
    }
}

/// Binds the host directory `src` (still reachable at its own path: this runs before
/// `pivot_root`) writable at `target`, with the mounts below it; nosuid like the rest.
fn bind_at(root: &Path, src: &Path, target: &Path) -> Result<(), Fail> {
    bind_below(src, false, root, target, false)
}

fn read_only(target: &Path, recursive: bool) -> Result<(), Fail> {
    sys::mount_setattr(
        &c(target)?,
        recursive,
        sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID,
        0,
    )
    .step(|| format!("cannot make {} read-only", target.display()))
}

/// A fresh `/proc` for the new pid namespace at `target`, `/proc/sys` and
/// `/proc/sysrq-trigger` read-only. Where the kernel refuses (a container that masks parts
/// of the host's `/proc`), the host's is used instead, with a warning.
fn proc_at(target: &Path, base: bool) -> Result<(), Fail> {
    let t = c(target)?;
    match sys::mount(
        Some(c"proc"),
        &t,
        Some(c"proc"),
        (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC) as libc::c_ulong,
        None,
    ) {
        Ok(()) => {
            for sub in ["sys", "sysrq-trigger"] {
                let p = target.join(sub);
                if p.exists() {
                    bind(&p, &p, true)?;
                    read_only(&p, true)?;
                }
            }
            Ok(())
        }
        Err(e) => {
            eprintln!(
                "vrift: warning: cannot mount a fresh /proc ({e}); using the host's (it lists host processes)"
            );
            if base {
                bind(Path::new("/proc"), target, true)?;
                read_only(target, true)?;
            }
            Ok(())
        }
    }
}

/// The minimal `/dev` of a base root.
fn dev_at(dev: &Path) -> Result<(), Fail> {
    mount_point_dir(dev, 0o755)?;
    tmpfs(dev, c"mode=0755,size=1m")?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let p = dev.join(name);
        sys::touch(&c(&p)?, 0o666).step(|| format!("cannot create {}", p.display()))?;
        bind(&host, &p, false)?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let p = dev.join(name);
        let t = CString::new(target).unwrap_or_default();
        sys::symlink(&t, &c(&p)?).step(|| format!("cannot create {}", p.display()))?;
    }
    let pts = dev.join("pts");
    mount_point_dir(&pts, 0o755)?;
    let devpts = sys::mount(
        Some(c"devpts"),
        &c(&pts)?,
        Some(c"devpts"),
        (libc::MS_NOSUID | libc::MS_NOEXEC) as libc::c_ulong,
        Some(c"newinstance,ptmxmode=0666,mode=0620"),
    );
    if devpts.is_ok() {
        let p = dev.join("ptmx");
        sys::symlink(c"pts/ptmx", &c(&p)?).step(|| format!("cannot create {}", p.display()))?;
    }
    let shm = dev.join("shm");
    mount_point_dir(&shm, 0o1777)?;
    tmpfs(&shm, c"mode=1777")?;
    // Nothing may be added to /dev itself any more (its submounts stay as they are).
    sys::mount_setattr(&c(dev)?, false, sys::MOUNT_ATTR_RDONLY, 0)
        .step(|| format!("cannot make {} read-only", dev.display()))
}

/// Everything init does before forking CMD.
/// Brings up `lo` in the sandbox's own network namespace (it starts down), so programs that
/// talk to themselves over 127.0.0.1 still work.
fn loopback_up() -> Result<(), Fail> {
    // SAFETY: a plain socket and two ioctls on a zeroed, correctly sized ifreq.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(Fail::new(
                "cannot open a socket",
                io::Error::last_os_error(),
            ));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let r = if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr) == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr)
        } else {
            -1
        };
        let e = io::Error::last_os_error();
        libc::close(s);
        if r != 0 {
            return Err(Fail::new("cannot bring up the loopback interface", e));
        }
    }
    Ok(())
}

fn setup(plan: &Plan) -> Result<(), Fail> {
    if !plan.network_host {
        loopback_up()?;
    }
    sys::mount(
        None,
        c"/",
        None,
        (libc::MS_REC | libc::MS_PRIVATE) as libc::c_ulong,
        None,
    )
    .map_err(|e| Fail::new("[userns] cannot make the mounts private", e))?;
    let root = &plan.staging;
    if plan.base {
        let o = &plan.overlays[0];
        mount_overlay(o, root, root)?;
        mount_point_dir(&root.join("proc"), 0o555)?;
        proc_at(&root.join("proc"), true)?;
        dev_at(&root.join("dev"))?;
        if plan.tmpfs_tmp {
            let tmp = root.join("tmp");
            mount_point_dir(&tmp, 0o1777)?;
            tmpfs(&tmp, c"mode=1777")?;
        }
        // Shallowest first, so a bind inside another bound directory lands on it.
        let mut binds: Vec<&PathBuf> = plan.binds.iter().collect();
        binds.sort_by_key(|p| p.components().count());
        for b in binds {
            let target = under(root, b);
            bind_at(root, b, &target).map_err(|f| for_bind(f, b))?;
        }
        if plan.read_only_view {
            // The root overlay itself, once every mount point is made; /proc, /dev, /tmp and
            // the binds are mounts of their own and stay as they are.
            sys::mount_setattr(&c(root)?, false, sys::MOUNT_ATTR_RDONLY, 0)
                .step(|| format!("cannot make {} read-only", root.display()))?;
        }
    } else {
        bind(Path::new("/"), root, true).map_err(|f| Fail {
            what: format!("[userns] {}", f.what),
            ..f
        })?;
        read_only(root, true)?;
        // Mount in path order, so a manifest root under /tmp lands on the new tmpfs.
        enum M<'a> {
            Proc,
            Tmpfs,
            Ovl(&'a Overlay),
            Bind,
        }
        let mut todo: Vec<(PathBuf, u8, M<'_>)> = Vec::new();
        todo.push((PathBuf::from("/proc"), 0, M::Proc));
        if plan.tmpfs_tmp {
            todo.push((PathBuf::from("/tmp"), 0, M::Tmpfs));
        }
        todo.push((PathBuf::from("/dev/shm"), 0, M::Tmpfs));
        for o in &plan.overlays {
            todo.push((o.at.clone(), 1, M::Ovl(o)));
        }
        // At the same path a bind comes last: it covers a manifest root's overlay (a project
        // run's directory) or the fresh /tmp (`--bind /tmp`).
        for b in &plan.binds {
            todo.push((b.clone(), 2, M::Bind));
        }
        todo.sort_by(|a, b| {
            let depth = |p: &Path| p.components().count();
            (depth(&a.0), a.1, &a.0).cmp(&(depth(&b.0), b.1, &b.0))
        });
        // Mount points first, all of them: a manifest root gone from the host gets one in a
        // throwaway overlay over its nearest existing ancestor, and that overlay would hide
        // whatever was mounted below the ancestor before it (a `--bind` of a sibling).
        // Paths under the fresh /tmp or /dev/shm get theirs on the tmpfs, later.
        let mut made = 0usize;
        let on_tmpfs =
            |p: &Path| (plan.tmpfs_tmp && p.starts_with("/tmp")) || p.starts_with("/dev/shm");
        for (at, _, m) in &todo {
            if matches!(m, M::Ovl(_) | M::Bind) && !on_tmpfs(at) {
                let target = under(root, at);
                mount_point(root, &target, &plan.scratch, &mut made).map_err(|f| Fail {
                    what: format!("{} (for {})", f.what, at.display()),
                    ..f
                })?;
            }
        }
        for (at, _, m) in todo {
            let target = under(root, &at);
            match m {
                M::Proc => {
                    if is_real_dir(&target) {
                        proc_at(&target, false)?;
                    }
                }
                M::Tmpfs => {
                    if is_real_dir(&target) {
                        tmpfs(&target, c"mode=1777")?;
                    }
                }
                // Below a manifest root or the fresh /tmp the mount point may be missing:
                // `bind_at` makes it there (those are writable).
                M::Bind => bind_at(root, &at, &target).map_err(|f| for_bind(f, &at))?,
                M::Ovl(o) => {
                    if plan.read_only_view {
                        // No overlay: lookups in a fresh overlay cost several microseconds
                        // each on first touch, and nothing is written here anyway.
                        bind_below(&o.lowers[0], true, root, &target, true)?;
                    } else {
                        mount_overlay(o, root, &target)?;
                    }
                }
            }
        }
    }
    // Into the new root; the old one is detached, so nothing of it stays reachable.
    sys::chdir(&c(root)?).step(|| format!("cannot enter {}", root.display()))?;
    sys::pivot_root(c".", c".").step(|| "pivot_root".to_string())?;
    sys::umount_detach(c".").step(|| "cannot detach the old root".to_string())?;
    sys::chdir(c"/").step(|| "chdir /".to_string())?;
    let cwd = c(&plan.cwd)?;
    if sys::chdir(&cwd).is_err() {
        if !plan.base {
            eprintln!(
                "vrift: warning: {} is not visible inside the sandbox; starting in /",
                plan.cwd.display()
            );
        }
        let _ = sys::chdir(c"/");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// What `dir_below` opened, by its descriptor (not a path looked up again).
    fn ino(fd: &OwnedFd) -> u64 {
        rustix::fs::fstat(fd).unwrap().st_ino
    }

    #[test]
    fn dir_below_opens_the_directory_itself_and_refuses_any_symlink_below_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("elsewhere/b")).unwrap();
        std::os::unix::fs::symlink("elsewhere", root.join("link")).unwrap();
        std::os::unix::fs::symlink("/", root.join("abs")).unwrap();
        std::fs::write(root.join("file"), b"").unwrap();

        let fd = dir_below(root, &root.join("a/b"), None).unwrap();
        let want = std::fs::metadata(root.join("a/b")).unwrap();
        assert_eq!(ino(&fd), std::os::unix::fs::MetadataExt::ino(&want));
        assert_eq!(
            ino(&dir_below(root, root, None).unwrap()),
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(root).unwrap())
        );
        // A symlink anywhere on the way, relative or absolute, last or not: refused,
        // naming it as CMD would see it; with `create`, nothing is made through it.
        for p in ["link/b", "link", "abs/tmp", "abs"] {
            let f = dir_below(root, &root.join(p), Some(0o755)).unwrap_err();
            assert_eq!(f.errno, libc::ELOOP, "{p}: {}", f.what);
            assert!(
                f.what.contains("is a symlink inside the sandbox"),
                "{}",
                f.what
            );
        }
        assert!(!root.join("elsewhere/b/c").exists());
        let f = dir_below(root, &root.join("file"), Some(0o755)).unwrap_err();
        assert_eq!(f.errno, libc::ENOTDIR, "{}", f.what);
        let f = dir_below(root, Path::new("/etc"), None).unwrap_err();
        assert_eq!(f.errno, libc::EINVAL, "{}", f.what);
    }

    #[test]
    fn dir_below_makes_missing_directories_with_the_mode_asked_whatever_the_umask() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let f = dir_below(root, &root.join("x/y"), None).unwrap_err();
        assert_eq!(f.errno, libc::ENOENT, "{}", f.what);
        let fd = dir_below(root, &root.join("x/y/z"), Some(0o1777)).unwrap();
        let md = std::fs::metadata(root.join("x/y/z")).unwrap();
        assert_eq!(ino(&fd), std::os::unix::fs::MetadataExt::ino(&md));
        assert_eq!(md.permissions().mode() & 0o7777, 0o1777);
        let parent = std::fs::metadata(root.join("x")).unwrap();
        assert_eq!(parent.permissions().mode() & 0o7777, 0o755);
        // Made already: opened as it is.
        dir_below(root, &root.join("x/y/z"), Some(0o700)).unwrap();
        let md = std::fs::metadata(root.join("x/y/z")).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o1777);
    }
}
