//! Process-wide configuration, read once from the environment at load time.

use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};

use crate::mf::Mf;
use crate::path::{self, PBuf};
use crate::upper::Upper;

/// Environment variables `vrift run` sets (and the shim keeps in children): the one
/// definition is `vrift_shim_core::env`.
use vrift_shim_core::env::{
    BIN as ENV_BIN, EXE as ENV_EXE, LIBS as ENV_LIBS, MANIFESTS as ENV_MANIFESTS, PASS_ON,
    SEALED as ENV_SEALED, STORE as ENV_STORE, THE_SOURCE, THROUGH as ENV_THROUGH,
    TRACE as ENV_TRACE, UPPER as ENV_UPPER,
};

pub struct Layer {
    pub m: Mf,
    /// The manifest's root, no trailing slash (`""` for `/`). Lives as long as the process
    /// (so [`State::views`] can borrow it).
    pub root: &'static [u8],
}

pub struct State {
    /// Bottom first; later layers win.
    pub layers: Vec<Layer>,
    /// The same layers as the shared layering code takes them (`vrift_manifest::layer`).
    pub views: Vec<vrift_manifest::layer::Layer<'static>>,
    /// `<store>/blake3`.
    pub blob_dir: Box<[u8]>,
    /// Device of the blob directory (0 if unknown): an fd on another device is no blob.
    pub store_dev: u64,
    /// Every blob of the store is sealed ([`ENV_SEALED`]): refuse to serve one that is not.
    pub all_sealed: bool,
    pub upper: Option<Upper>,
    /// Where the loader's mirrors go ([`ENV_LIBS`]), else `<upper>/dl`; `None` without either.
    pub libs: Option<PBuf>,
    /// Real empty directory opened behind every virtual directory fd (NUL-terminated).
    pub placeholder: PBuf,
    /// Proper ancestors of every root (`/` included), normalized.
    pub ancestors: Vec<Box<[u8]>>,
    /// `KEY=VALUE` of the variables children must inherit (see [`PASS_ON`]).
    pub env_pass: Vec<Box<[u8]>>,
    /// This library's own path, for `LD_PRELOAD` in children.
    pub shim_path: Box<[u8]>,
    pub uid: u32,
    pub gid: u32,
    /// Virtual path of this process's executable, if it was started from a virtual file.
    pub exe: Option<Box<[u8]>>,
    /// [`ENV_BIN`], NUL-terminated.
    pub vrift_bin: Option<Box<[u8]>>,
}

const UNINIT: u8 = 0;
const RUNNING: u8 = 1;
const READY: u8 = 2;
const INACTIVE: u8 = 3;

static PHASE: AtomicU8 = AtomicU8::new(UNINIT);
static STATE: AtomicPtr<State> = AtomicPtr::new(std::ptr::null_mut());
/// `VRIFT_TRACE` set: every hook logs its call on stderr (used to measure what programs call).
pub static TRACE: AtomicBool = AtomicBool::new(false);

/// The state if the shim is active and loaded, else `None` (pass through).
#[inline]
pub fn get() -> Option<&'static State> {
    match PHASE.load(Ordering::Acquire) {
        READY => {
            // SAFETY: set once before READY is published, never freed.
            unsafe { STATE.load(Ordering::Acquire).as_ref() }
        }
        // Before the library constructor has loaded the configuration, hooks pass through:
        // loading allocates, and a call this early may come from inside the allocator's own
        // start-up (jemalloc, which rustc and cargo link, `readlink`s /etc/malloc.conf in its
        // first malloc) — initializing there deadlocks on the allocator's lock. What runs
        // before our constructor is the loader's and libc's start-up, never a view path.
        _ => None,
    }
}

/// Loads the configuration. Called from the library constructor; hooks that run during
/// it (our own `open` of the manifests) see `RUNNING` and pass through.
pub fn init() {
    if PHASE
        .compare_exchange(UNINIT, RUNNING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    crate::real::resolve_all();
    // A panic inside a hook is caught and the real function answers instead; keep the host
    // program's stderr clean unless tracing (this only affects this library's own std).
    if std::env::var_os(ENV_TRACE).is_none() {
        std::panic::set_hook(Box::new(|_| {}));
    }
    let st = std::panic::catch_unwind(load).ok().flatten();
    match st {
        Some(st) => {
            crate::report::init(env(crate::report::ENV_REPORT));
            STATE.store(Box::into_raw(Box::new(st)), Ordering::Release);
            PHASE.store(READY, Ordering::Release);
            // Learn whether we start inside a mirror directory (a virtual cwd inherited
            // from the parent), so getcwd reports the virtual path from the first call.
            let mut cwd = PBuf::new();
            let _ = path::cwd_into(&mut cwd);
        }
        None => PHASE.store(INACTIVE, Ordering::Release),
    }
}

fn env(name: &str) -> Option<Vec<u8>> {
    std::env::var_os(name).map(|v| v.as_bytes().to_vec())
}

fn load() -> Option<State> {
    TRACE.store(
        env(ENV_TRACE).is_some_and(|v| !v.is_empty() && v != b"0"),
        Ordering::Relaxed,
    );
    let list = env(ENV_MANIFESTS)?;
    let mut layers = Vec::new();
    for p in list.split(|&b| b == b':').filter(|p| !p.is_empty()) {
        match Mf::open(p) {
            Ok(m) => {
                let root = path::normalize_abs(m.root())?;
                let root: &'static [u8] = if root.as_bytes() == b"/" {
                    b""
                } else {
                    Box::leak(root.as_bytes().into())
                };
                layers.push(Layer { m, root });
            }
            Err(e) => {
                let msg = format!(
                    "vrift-shim: cannot open manifest {}: {e}\n",
                    String::from_utf8_lossy(p)
                );
                // SAFETY: writing a buffer to stderr.
                unsafe { crate::real::write(2, msg.as_ptr().cast(), msg.len()) };
            }
        }
    }
    if layers.is_empty() {
        return None;
    }
    let store = env(ENV_STORE).or_else(|| {
        env(THE_SOURCE).or_else(|| {
            env("HOME").map(|mut h| {
                h.extend_from_slice(b"/.vrift/the_source");
                h
            })
        })
    })?;
    let mut blob_dir = path::normalize_abs(&store)?;
    blob_dir.push(b"/blake3")?;
    let through: Vec<Box<[u8]>> = env(ENV_THROUGH)
        .map(|v| {
            v.split(|&b| b == b':')
                .filter(|r| r.starts_with(b"/"))
                .filter_map(path::normalize_abs)
                .map(|p| p.as_bytes().into())
                .collect()
        })
        .unwrap_or_default();
    let upper = env(ENV_UPPER).and_then(|u| Upper::open(&u, through));
    let libs = env(ENV_LIBS)
        .filter(|v| v.starts_with(b"/"))
        .and_then(|v| path::normalize_abs(&v))
        .or_else(|| upper.as_ref().and_then(|u| u.sub(b"dl")));
    let placeholder = match &upper {
        Some(u) => u.sub(b"empty")?,
        None => {
            // No upper dir: a private empty directory of our own.
            let mut p = PBuf::from(b"/tmp/vrift-empty-")?;
            // SAFETY: getuid never fails.
            p.push(unsafe { libc::getuid() }.to_string().as_bytes())?;
            crate::upper::mkdir_p(p.as_bytes());
            p
        }
    };
    let mut ancestors: Vec<Box<[u8]>> = Vec::new();
    for l in &layers {
        let mut r: &[u8] = l.root;
        while !r.is_empty() {
            r = path::parent(r);
            let a: &[u8] = if r == b"/" { b"/" } else { r };
            if !ancestors.iter().any(|x| **x == *a) {
                ancestors.push(a.into());
            }
            if r == b"/" {
                break;
            }
        }
    }
    let mut env_pass = Vec::new();
    for k in PASS_ON {
        if let Some(v) = env(k) {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(&v);
            kv.push(0);
            env_pass.push(kv.into_boxed_slice());
        }
    }
    let shim_path = own_path().unwrap_or_default();
    // SAFETY: valid buffer and out pointer.
    let store_dev = unsafe {
        let mut s: libc::stat = std::mem::zeroed();
        if crate::real::stat(blob_dir.as_ptr(), &mut s) == 0 {
            s.st_dev
        } else {
            0
        }
    };
    let views = layers
        .iter()
        .map(|l| vrift_manifest::layer::Layer::new(l.root, l.m.view()))
        .collect();
    let mut st = State {
        layers,
        views,
        blob_dir: blob_dir.as_bytes().into(),
        store_dev,
        all_sealed: env(ENV_SEALED).is_some_and(|v| v.as_slice() == b"1"),
        upper,
        libs,
        placeholder,
        ancestors,
        env_pass,
        shim_path,
        // SAFETY: never fails, touches no memory.
        uid: unsafe { libc::getuid() },
        // SAFETY: as getuid.
        gid: unsafe { libc::getgid() },
        exe: None,
        vrift_bin: env(ENV_BIN).filter(|v| v.starts_with(b"/")).map(|mut v| {
            v.push(0);
            v.into_boxed_slice()
        }),
    };
    st.exe = env(ENV_EXE).filter(|v| exe_matches(&st, v)).map(Into::into);
    Some(st)
}

/// The path this library was loaded from.
fn own_path() -> Option<Box<[u8]>> {
    // SAFETY: dladdr on an address inside this library; the returned name is owned by the loader.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(own_path as *const libc::c_void, &mut info) == 0 || info.dli_fname.is_null()
        {
            return None;
        }
        Some(path::cbytes(info.dli_fname).into())
    }
}

/// `VRIFT_EXE` is only believed if `/proc/self/exe` really is the blob of that virtual file
/// (a non-virtual program started by a virtual one inherits the variable).
fn exe_matches(st: &State, virt: &[u8]) -> bool {
    let Some(mut abs) = path::normalize_abs(virt) else {
        return false;
    };
    let r = crate::vfs::resolve(st, &mut abs, true);
    let crate::vfs::Node::V { layer, idx } = r.node else {
        return false;
    };
    let Some(e) = st.layers.get(layer).and_then(|l| l.m.entry(idx)) else {
        return false;
    };
    let Some(blob) = crate::vfs::blob_path(st, &e) else {
        return false;
    };
    let mut buf = [0u8; path::MAX];
    // SAFETY: valid buffers.
    let n = unsafe {
        crate::real::readlink(
            c"/proc/self/exe".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n > 0 && &buf[..n as usize] == blob.as_bytes()
}

impl State {
    /// True if `abs` is at or below some layer's root.
    #[inline]
    pub fn in_view(&self, abs: &[u8]) -> bool {
        self.layers
            .iter()
            .any(|l| path::under(l.root, abs).is_some())
    }

    /// Index of `abs` in [`State::ancestors`], if it is a proper ancestor of a root.
    #[inline]
    pub fn ancestor_id(&self, abs: &[u8]) -> Option<usize> {
        self.ancestors.iter().position(|a| **a == *abs)
    }

    /// Names of roots that are direct children of the real directory `abs`.
    pub fn root_children(&self, abs: &[u8]) -> Vec<&[u8]> {
        let mut out: Vec<&[u8]> = Vec::new();
        for l in &self.layers {
            if l.root.is_empty() {
                continue;
            }
            if path::parent(l.root) == abs {
                let n = path::file_name(l.root);
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }
}
