//! `vrift run` with the shim: the manifests' trees served by `libvrift_shim.so` to the
//! command and every process it starts.
//!
//! * The shim is found in `VRIFT_SHIM` or next to the `vrift` binary (or in `../lib`).
//! * It maps a validated private copy of each manifest (`view_copy`), never the user's file.
//! * Writes land in an upper directory: `VRIFT_UPPER` if set (kept), else a temporary one
//!   removed when the command ends; a project run writes into the project itself
//!   ([`Launch::through`]).
//! * The command is started through the shim's own exec logic (the library is `dlopen`ed
//!   here), so a command that is itself a virtual file (`node_modules/.bin/tsc`) works.
//! * Signals are forwarded to it ([`crate::signals`]); its wait status is returned.
//!
//! The names of the environment variables shared with the shim are `vrift_shim_core::env`.
// Spawns the command with the shim; code between fork and exec.
#![allow(unsafe_code)]

use std::ffi::{CString, OsString};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use vrift_manifest::Manifest;
use vrift_shim_core::env;

use crate::error::{bail, Context, Result, RunError};

const SHIM_FILE: &str = "libvrift_shim.so";

/// Where the shim library is: `VRIFT_SHIM`, else beside the running `vrift` (a build tree, or
/// a release archive's `lib/`), else the copy `embedded` in the binary, written out once (see
/// [`write_out`]).
pub fn find_shim(store: &Path, embedded: Option<&[u8]>) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env::SHIM).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("{}={}: no such file", env::SHIM, p.display());
        }
        return absolute(&p);
    }
    let exe = std::env::current_exe().context("cannot locate the vrift binary")?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let p = dir.join(SHIM_FILE);
    if p.is_file() {
        return Ok(p);
    }
    // `cargo test` runs the binary from target/<profile>/; the library sits there too, but
    // an installed vrift may keep it in ../lib.
    let lib = dir.join("../lib").join(SHIM_FILE);
    if lib.is_file() {
        return absolute(&lib);
    }
    if let Some(bytes) = embedded {
        return write_out(bytes, store);
    }
    bail!(
        "shim library {SHIM_FILE} not found next to {} (build the workspace: `cargo build --release`), or set {}",
        exe.display(),
        env::SHIM
    )
}

/// The embedded shim as a file the dynamic loader can open:
/// `$XDG_CACHE_HOME/vrift/shim/<BLAKE3 prefix>/libvrift_shim.so` (or under `~/.cache`, or
/// the store's `shim/` without a home), written once per version of its bytes.
///
/// `LD_PRELOAD` names a path that the loader opens later, in every child: a file someone else
/// could replace would run their code in the user's programs. So the file and its directory
/// are this user's own and writable by nobody else (a shared store's directory is not used
/// then), and an existing file is used only if it holds exactly `bytes`; anything else is
/// written anew, atomically (temp file, rename).
pub fn write_out(bytes: &[u8], store: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| Path::new(p).is_absolute())
        .map(|p| PathBuf::from(p).join("vrift"))
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|p| Path::new(p).is_absolute())
                .map(|h| PathBuf::from(h).join(".cache/vrift"))
        })
        .unwrap_or_else(|| store.to_path_buf());
    let hash = blake3::hash(bytes).to_hex();
    let dir = base.join("shim").join(&hash.as_str()[..16]);
    let path = dir.join(SHIM_FILE);
    if private_copy_of(&path, bytes) {
        return Ok(path);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    if !private(&std::fs::symlink_metadata(&dir).with_context(|| format!("{}", dir.display()))?) {
        bail!(
            "{}: not a directory of this user's that only it may write; the shim library is not              written there (set {} to a copy of libvrift_shim.so)",
            dir.display(),
            env::SHIM
        );
    }
    let tmp = dir.join(format!(".{SHIM_FILE}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o500)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e)
            .with_context(|| format!("cannot write the shim library to {}", path.display()));
    }
    Ok(path)
}

/// A file or directory owned by this user that nobody else may write.
fn private(md: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    md.uid() == rustix::process::geteuid().as_raw() && md.mode() & 0o022 == 0
}

/// Whether `path` (not a symlink) is a private file (see [`private`]) in a private directory
/// and holds exactly `bytes`.
fn private_copy_of(path: &Path, bytes: &[u8]) -> bool {
    use std::io::Read;
    let dir_ok = path
        .parent()
        .and_then(|d| std::fs::symlink_metadata(d).ok())
        .is_some_and(|md| md.is_dir() && private(&md));
    if !dir_ok {
        return false;
    }
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    else {
        return false;
    };
    let ok = f
        .metadata()
        .is_ok_and(|md| md.is_file() && private(&md) && md.len() == bytes.len() as u64);
    let mut have = Vec::with_capacity(bytes.len());
    ok && f.read_to_end(&mut have).is_ok() && have == bytes
}

pub fn absolute(p: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(p).with_context(|| format!("{}: cannot resolve path", p.display()))
}

/// Removes its directory on drop.
pub struct TempDir(pub Option<PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = make_writable_and_remove(&p);
        }
    }
}

fn make_writable_and_remove(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(_) => {
            // Read-only directories inside (a program chmod'ed them): open them up and retry.
            for e in walk_dirs(p) {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&e, std::fs::Permissions::from_mode(0o700));
            }
            std::fs::remove_dir_all(p)
        }
    }
}

fn walk_dirs(p: &Path) -> Vec<PathBuf> {
    let mut out = vec![p.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(rd) = std::fs::read_dir(&out[i]) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

/// A fresh directory under `base` (default: the system temp dir).
fn temp_dir_in(base: &Path, what: &str) -> Result<PathBuf> {
    let base = base.to_path_buf();
    for n in 0..1000u32 {
        let p = base.join(format!("vrift-{what}-{}-{n}", std::process::id()));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", p.display())),
        }
    }
    bail!("cannot create a temporary directory in {}", base.display())
}

/// A sealed in-memory copy of the manifest at `p` (no one can shrink, grow or write it),
/// reached by the run's processes as `/proc/<launcher>/fd/N`: for a store that cannot hold
/// the copy of [`view_copy`].
fn sealed_copy(p: &Path) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let mut src = std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
    // SAFETY: a NUL-terminated name; the returned fd is ours.
    let fd = unsafe {
        libc::memfd_create(
            c"vrift-manifest".as_ptr(),
            libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("memfd_create");
    }
    // SAFETY: a fresh fd nobody else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut dst = std::fs::File::from(fd.try_clone()?);
    std::io::copy(&mut src, &mut dst).with_context(|| format!("cannot copy {}", p.display()))?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on our own fd.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(std::io::Error::last_os_error()).context("sealing a manifest copy");
    }
    Ok(fd)
}

/// Makes the upper layer's `state` file with its blocks allocated (see
/// `vrift_shim_core::upper_state`): on a full tmpfs this fails here, and another place is
/// tried, instead of SIGBUS in the user's program at its first write.
fn upper_state(dir: &Path) -> std::io::Result<()> {
    use vrift_shim_core::upper_state::{BYTES, FILE};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join(FILE))?;
    if f.metadata()?.len() >= BYTES as u64 {
        return Ok(());
    }
    // SAFETY: a valid fd we own.
    match unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, BYTES as libc::off_t) } {
        0 => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}

/// A fresh upper directory in `base`, state file allocated; removed again if there is no room.
fn upper_in(base: &Path) -> Result<PathBuf> {
    let d = temp_dir_in(base, "upper")?;
    if let Err(e) = upper_state(&d) {
        let _ = std::fs::remove_dir_all(&d);
        return Err(e).with_context(|| format!("no room for an upper layer in {}", base.display()));
    }
    Ok(d)
}

pub fn temp_dir(what: &str) -> Result<PathBuf> {
    temp_dir_in(&std::env::temp_dir(), what)
}

/// The usual scratch places, in order of preference: `$XDG_RUNTIME_DIR`, `$TMPDIR`, `/tmp`,
/// `/var/tmp`, the store's parent.
fn scratch_places(store: &Path) -> Vec<PathBuf> {
    let mut places: Vec<PathBuf> = ["XDG_RUNTIME_DIR", "TMPDIR"]
        .iter()
        .filter_map(|k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .collect();
    places.extend(["/tmp", "/var/tmp"].map(PathBuf::from));
    if let Some(parent) = store.parent() {
        places.push(parent.to_path_buf());
    }
    places
}

/// Removes the throwaway layers of `vrift run`s that were killed (`vrift-upper-<pid>-<n>`
/// and `vrift-libs-<pid>-<n>` whose pid is gone) from the places `temp_upper` and
/// `temp_libs` use.
fn sweep_dead_scratch(store: &Path) {
    let mut places = scratch_places(store);
    places.push(PathBuf::from("/dev/shm"));
    for dir in places {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(rest) = name.to_str().and_then(|n| {
                n.strip_prefix("vrift-upper-")
                    .or_else(|| n.strip_prefix("vrift-libs-"))
            }) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if !vrift_cas::lock::pid_alive(pid) {
                let _ = make_writable_and_remove(&e.path());
            }
        }
    }
}

/// The device of `p`, or of its nearest existing ancestor (a phantom tree's root may be gone).
fn device_of(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    p.ancestors()
        .find_map(|a| std::fs::metadata(a).ok().map(|m| m.dev()))
}

/// The throw-away upper layer. On the file system of the projects' roots when one of the
/// usual scratch places is there (`$XDG_RUNTIME_DIR`, `$TMPDIR`, `/tmp`, `/var/tmp`, the
/// store's parent): a temp file written beside the project and renamed over a view file (the
/// atomic save of editors, npm and pip) is then a plain rename. Else `/dev/shm` (removing it
/// costs next to nothing, which matters for `vrift run` start-up; the shim copies across), else
/// the system temp dir.
fn temp_upper(roots: &[PathBuf], store: &Path) -> Result<PathBuf> {
    let mut devs: Vec<u64> = roots.iter().filter_map(|r| device_of(r)).collect();
    devs.sort_unstable();
    devs.dedup();
    if let [dev] = devs[..] {
        let candidates = scratch_places(store);
        for c in candidates {
            if device_of(&c) == Some(dev) && c.is_dir() {
                if let Ok(d) = upper_in(&c) {
                    return Ok(d);
                }
            }
        }
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = upper_in(shm) {
            return Ok(d);
        }
    }
    upper_in(&std::env::temp_dir())
}

/// The run's directory for the loader's mirrors ([`env::LIBS`]): in `/dev/shm`, where its
/// symlinks and directories cost next to nothing to make and remove (on this machine's ext4
/// the same mirrors under the upper layer cost `import numpy, pandas, django` 40 ms a run).
/// `None` without a usable `/dev/shm`: the shim then uses `<upper>/dl`.
fn temp_libs() -> Option<PathBuf> {
    let shm = Path::new("/dev/shm");
    shm.is_dir()
        .then(|| temp_dir_in(shm, "libs").ok())
        .flatten()
}

/// What the shim maps for each of `list`: a validated private copy (see [`view_copy`]), with
/// the names joined for `VRIFT_MANIFESTS` and the roots they project. Sealed in-memory copies
/// (kept open in `fds`) where the store cannot hold one.
fn view_manifests(
    store: &Path,
    list: &[PathBuf],
) -> Result<(Vec<std::os::fd::OwnedFd>, OsString, Vec<PathBuf>)> {
    let mut fds = Vec::new();
    let mut var = OsString::new();
    let mut roots = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let (name, root) = match view_copy(store, p) {
            Ok(c) => c,
            Err(CopyError::Invalid(e)) => return Err(e),
            Err(CopyError::Store) => {
                let fd = sealed_copy(p)?;
                let name = PathBuf::from(format!(
                    "/proc/{}/fd/{}",
                    std::process::id(),
                    fd.as_raw_fd()
                ));
                fds.push(fd);
                let m = Manifest::open(&name)
                    .with_context(|| format!("cannot use manifest {}", p.display()))?;
                check_blobs(store, &m, p)?;
                let root = PathBuf::from(std::ffi::OsStr::from_bytes(m.root()));
                (name, root)
            }
        };
        if i > 0 {
            var.push(":");
        }
        var.push(&name);
        roots.push(root);
    }
    Ok((fds, var, roots))
}

/// Files sampled per manifest by [`check_blobs`]: a few dozen `fstatat`s.
const BLOB_SAMPLE: usize = 32;

/// A view whose blobs are not in this store (a manifest made with another store, run from a
/// new shell without `VR_THE_SOURCE`) lists files the program then fails to open, with
/// `ENOENT`, deep inside it. When the store first takes its copy of manifest `p` (so not on
/// every run: the copy is reused), a sample of its files is looked up; when one has no blob,
/// all are counted and the run stops, naming the store used and the count.
fn check_blobs(store: &Path, m: &Manifest, p: &Path) -> Result<()> {
    // A store with no blob directory yet holds none of them.
    let cas = vrift_cas::Cas::open_existing(store).ok();
    let has = |e: &vrift_manifest::Entry<'_>| {
        cas.as_ref().is_some_and(|c| c.has_blob(e.hash(), e.size()))
    };
    let step = (m.len() / BLOB_SAMPLE).max(1);
    let sample_complete = (0..m.len())
        .step_by(step)
        .filter_map(|i| m.entry(i))
        .filter(|e| e.kind().has_content())
        .all(|e| has(&e));
    if sample_complete {
        return Ok(());
    }
    let (mut files, mut missing) = (0u64, 0u64);
    for e in m.iter().filter(|e| e.kind().has_content()) {
        files += 1;
        if !has(&e) {
            missing += 1;
        }
    }
    bail!(
        "{}: {missing} of {files} files have no blob in the store {} (was it made with \
         another store? give that one with --the-source-root or VR_THE_SOURCE)",
        p.display(),
        store.display()
    );
}

enum CopyError {
    /// The manifest itself is unusable (unreadable, invalid): the run stops.
    Invalid(RunError),
    /// The store cannot hold the copy (read-only, full): another way is taken.
    Store,
}

/// Directory of the shim's manifest copies in the store.
const VIEW_COPIES: &str = "shim";

/// The shim maps manifests for the whole run, in every process: one rewritten in place
/// meanwhile (`cp new.vrm m.vrm` truncates the file) would kill them with SIGBUS, and one
/// changed after validation would be used unvalidated. So it maps a private copy in
/// `<store>/shim/`, made from the descriptor that was `fstat`ed, validated once, read-only,
/// renamed into place, and named by the file's identity (path, device, inode, size, mtime,
/// ctime): the next run of an unchanged manifest reuses it without copying or validating
/// again (start-up stays flat with the manifest's size), and an edited one gets a new copy
/// (the previous copy of that path is removed). Returns the copy and the root it projects.
fn view_copy(store: &Path, p: &Path) -> std::result::Result<(PathBuf, PathBuf), CopyError> {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let invalid = CopyError::Invalid;
    let mut f = std::fs::File::open(p)
        .with_context(|| format!("cannot open manifest {}", p.display()))
        .map_err(invalid)?;
    let md = f.metadata().context("fstat").map_err(invalid)?;
    let tag = blake3::hash(p.as_os_str().as_bytes()).to_hex();
    let tag = &tag[..16];
    let name = format!(
        "{tag}-{:x}-{:x}-{}-{}.{}-{}.{}",
        md.dev(),
        md.ino(),
        md.len(),
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec()
    );
    let dir = store.join(VIEW_COPIES);
    let copy = dir.join(format!("{name}.vrm"));
    let root_file = dir.join(format!("{name}.root"));
    if let (true, Ok(root)) = (copy.is_file(), std::fs::read(&root_file)) {
        return Ok((copy, PathBuf::from(OsString::from_vec(root))));
    }
    let store_err = |_: std::io::Error| CopyError::Store;
    std::fs::create_dir_all(&dir).map_err(store_err)?;
    let tmp = dir.join(format!(".tmp-{name}-{}", std::process::id()));
    let made = (|| {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&tmp)
            .map_err(store_err)?;
        std::io::copy(&mut f, &mut out).map_err(store_err)?;
        out.flush().map_err(store_err)?;
        let m = Manifest::open(&tmp)
            .with_context(|| format!("cannot use manifest {}", p.display()))
            .map_err(invalid)?;
        check_blobs(store, &m, p).map_err(invalid)?;
        let root = m.root().to_vec();
        drop(m);
        std::fs::write(&root_file, &root).map_err(store_err)?;
        std::fs::rename(&tmp, &copy).map_err(store_err)?;
        Ok(PathBuf::from(OsString::from_vec(root)))
    })();
    let root = match made {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    // Earlier copies of this path (an older version of the manifest) go.
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.starts_with(tag) && !n.starts_with(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok((copy, root))
}

type SpawnFn = unsafe extern "C" fn(
    *mut libc::pid_t,
    *const libc::c_char,
    *const *const libc::c_char,
    *const *const libc::c_char,
) -> libc::c_int;

/// Loads the shim into this process (its constructor reads the VRIFT_* variables set just
/// before) and returns its spawn entry point.
fn load_shim(shim: &Path) -> Result<SpawnFn> {
    let c = CString::new(shim.as_os_str().as_bytes())?;
    // SAFETY: dlopen/dlsym with valid strings; the handle is kept for the process lifetime.
    unsafe {
        let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if h.is_null() {
            let err = libc::dlerror();
            let msg = if err.is_null() {
                String::from("unknown error")
            } else {
                std::ffi::CStr::from_ptr(err).to_string_lossy().into_owned()
            };
            bail!("cannot load the shim {}: {msg}", shim.display());
        }
        let f = libc::dlsym(h, c"vrift_shim_spawnp".as_ptr());
        if f.is_null() {
            bail!(
                "{} is not a vrift shim (no vrift_shim_spawnp)",
                shim.display()
            );
        }
        Ok(std::mem::transmute::<*mut libc::c_void, SpawnFn>(f))
    }
}

/// One run of a command on the manifests' trees, through the shim.
pub struct Launch<'a> {
    /// The store holding the blobs.
    pub store: &'a Path,
    /// Manifests to project, bottom first (absolute).
    pub manifests: &'a [PathBuf],
    /// The command and its arguments.
    pub cmd: &'a [OsString],
    /// A project run: writes under this directory land in it (else in a throwaway layer).
    pub through: Option<PathBuf>,
    /// Cleaned up when the command has ended (a transient manifest's directory).
    pub cleanup: Vec<TempDir>,
    /// The shim library built into the calling binary, used when none is installed beside it.
    pub embedded_shim: Option<&'static [u8]>,
}

/// Runs the command of `l` and returns its wait status once it ended. The environment of
/// this process is set up for the shim on the way (it is `dlopen`ed here).
pub fn launch(l: Launch<'_>) -> Result<libc::c_int> {
    let Launch {
        store,
        manifests: list,
        cmd,
        through,
        mut cleanup,
        embedded_shim,
    } = l;
    let shim = find_shim(store, embedded_shim)?;
    std::fs::create_dir_all(store)
        .with_context(|| format!("cannot create store {}", store.display()))?;
    let store = absolute(store)?;
    let (_sealed, manifests_var, roots) = view_manifests(&store, list)?;
    sweep_dead_scratch(&store);
    let upper = match std::env::var_os(env::UPPER).filter(|u| !u.is_empty()) {
        Some(u) => {
            let u = PathBuf::from(u);
            std::fs::create_dir_all(&u)
                .with_context(|| format!("cannot create {} {}", env::UPPER, u.display()))?;
            upper_state(&u).with_context(|| {
                format!("no room for the upper layer's state in {}", u.display())
            })?;
            absolute(&u)?
        }
        None => {
            let d = temp_upper(&roots, &store)?;
            cleanup.push(TempDir(Some(d.clone())));
            d
        }
    };

    match temp_libs() {
        Some(d) => {
            std::env::set_var(env::LIBS, &d);
            cleanup.push(TempDir(Some(d)));
        }
        None => std::env::remove_var(env::LIBS),
    }

    let mut preload = shim.clone().into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    // VRIFT_REPORT=FILE: every process of the run appends its line (see the shim's report
    // module); the file starts empty and is named absolutely (children change directory).
    if let Some(r) = std::env::var_os(env::REPORT).filter(|v| !v.is_empty()) {
        let r = std::path::absolute(Path::new(&r))?;
        std::fs::write(&r, b"")
            .with_context(|| format!("cannot write {} {}", env::REPORT, r.display()))?;
        std::env::set_var(env::REPORT, &r);
    }
    // The shim's constructor (at dlopen below) and the child read these.
    std::env::set_var(env::MANIFESTS, &manifests_var);
    std::env::set_var(env::STORE, &store);
    std::env::set_var(env::UPPER, &upper);
    match &through {
        Some(d) => std::env::set_var(env::THROUGH, d),
        None => std::env::remove_var(env::THROUGH),
    }
    // In a store whose every blob is sealed, an unsealed blob is damaged: the shim refuses to
    // serve it (EIO). An older store gets that once `vrift verify` has sealed it.
    if store.join(vrift_cas::store::SEALED_MARKER).exists() {
        std::env::set_var(env::SEALED, "1");
    } else {
        std::env::remove_var(env::SEALED);
        eprintln!(
            "note: the store {} predates blob seals: the view cannot tell a damaged blob from an old one; run `vrift verify` once",
            store.display()
        );
    }
    // Static programs that touch the view are run through this binary in a namespace.
    match std::env::current_exe() {
        Ok(exe) => std::env::set_var(env::BIN, exe),
        Err(_) => std::env::remove_var(env::BIN),
    }
    std::env::set_var("LD_PRELOAD", &preload);
    // The command dies with us, even by kill -9 (see the shim's constructor).
    std::env::set_var(env::PARENT, std::process::id().to_string());
    // libuv (Node.js) must not bypass libc through io_uring.
    std::env::set_var("UV_USE_IO_URING", "0");

    let spawn = load_shim(&shim)?;
    let argv: Vec<CString> = cmd
        .iter()
        .map(|s| CString::new(s.clone().into_vec()))
        .collect::<Result<_, _>>()
        .context("a command argument contains a NUL byte")?;
    let envv: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv).ok()
        })
        .collect();
    let mut argp: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argp.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = envv.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());

    crate::signals::set_forwarding(true);
    let mut pid: libc::pid_t = 0;
    // SAFETY: NULL-terminated arrays of valid C strings that outlive the call.
    let rc = unsafe { spawn(&mut pid, argp[0], argp.as_ptr(), envp.as_ptr()) };
    if rc != 0 {
        drop(cleanup);
        return Err(RunError::Spawn {
            program: PathBuf::from(&cmd[0]),
            errno: rc,
        });
    }
    crate::signals::set_target(pid);
    let status = crate::signals::wait_for(pid);
    crate::signals::set_target(0);
    cleanup.clear();
    Ok(status)
}
