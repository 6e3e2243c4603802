//! The view: resolving an absolute path against the layers, the upper dir and the real
//! filesystem; synthesizing `stat` data; listing directories.

use vrift_manifest::Kind;

use vrift_manifest::layer::{self, Hidden, Probe};

use crate::mf::Entry;

use crate::path::{self, PBuf};
use crate::state::State;
use crate::upper::{self, Mirror};
use vrift_shim_core::resolve;

pub use vrift_shim_core::resolve::Node;

pub struct Resolved<'p> {
    pub node: Node,
    /// The absolute path after following symlinks (equal to the input if none were): the
    /// caller's buffer, rewritten in place (paths are never copied around by value).
    pub path: &'p PBuf,
    /// True if any symlink was followed (so `path` differs from the caller's path).
    pub moved: bool,
}

/// The errno for a path the layers hide.
fn hidden_errno(h: Hidden) -> i32 {
    match h {
        Hidden::Deleted => libc::ENOENT,
        Hidden::NotDir => libc::ENOTDIR,
    }
}

/// Absolute path of entry `e` of layer `li`.
pub fn entry_abs(st: &State, li: usize, e: &Entry<'_>) -> Option<PBuf> {
    let mut p = PBuf::new();
    entry_abs_into(st, li, e, &mut p)?;
    Some(p)
}

/// [`entry_abs`] into the caller's buffer.
pub fn entry_abs_into(st: &State, li: usize, e: &Entry<'_>, p: &mut PBuf) -> Option<()> {
    let l = st.layers.get(li)?;
    p.clear();
    p.push(l.root)?;
    if !e.path().is_empty() {
        p.push(b"/")?;
        p.push(e.path())?;
    }
    p.finish();
    Some(())
}

/// The facts the resolution loop (`vrift_shim_core::resolve`, unit-tested there) needs, from
/// the upper layer and the manifests.
struct Facts<'s>(&'s State);

impl resolve::View for Facts<'_> {
    fn in_view(&self, abs: &[u8]) -> bool {
        self.0.in_view(abs)
    }

    fn mirror(&self, abs: &[u8]) -> Mirror {
        match &self.0.upper {
            Some(up) if up.flagged(abs) => upper::probe(up, abs),
            _ => Mirror::Nothing,
        }
    }

    /// What the layers say (the one layering implementation, shared with the link farm). A
    /// directory that only a nested root's mount point implies is left to the real
    /// filesystem, as the ancestors of every root are.
    fn look(&self, abs: &[u8]) -> resolve::Look<'_> {
        match layer::probe(&self.0.views, abs) {
            Probe::Found(li, e) => resolve::Look::Found {
                layer: li,
                idx: e.index(),
                dir: e.is_dir(),
                link: (e.kind() == Kind::Symlink).then(|| e.target()),
            },
            Probe::ViaSymlink(li, a) => match entry_abs(self.0, li, &a) {
                Some(at) => resolve::Look::ViaLink {
                    at,
                    target: a.target(),
                },
                None => resolve::Look::Hidden(libc::ENAMETOOLONG),
            },
            Probe::Hidden(h) => resolve::Look::Hidden(hidden_errno(h)),
            Probe::Implicit | Probe::Absent => resolve::Look::Absent,
        }
    }
}

const _: () = assert!(
    resolve::ENOENT == libc::ENOENT
        && resolve::ENOTDIR == libc::ENOTDIR
        && resolve::ELOOP == libc::ELOOP
);

/// Resolves `cur` (absolute, normalized) in place. `follow`: follow a symlink in the last
/// component.
pub fn resolve<'p>(st: &State, cur: &'p mut PBuf, follow: bool) -> Resolved<'p> {
    let (node, moved) = resolve::resolve(&Facts(st), cur, follow);
    Resolved {
        node,
        path: cur,
        moved,
    }
}

/// The entry behind a `Node::V`.
pub fn entry(st: &State, layer: usize, idx: usize) -> Option<Entry<'_>> {
    st.layers.get(layer)?.m.entry(idx)
}

/// The CAS path of a file entry's blob.
pub fn blob_path(st: &State, e: &Entry<'_>) -> Option<PBuf> {
    let mut p = PBuf::from(&st.blob_dir)?;
    let mut hex = [0u8; 64];
    vrift_manifest::hex_into(e.hash(), &mut hex);
    p.push(b"/")?;
    p.push(&hex[0..2])?;
    p.push(b"/")?;
    p.push(&hex[2..4])?;
    p.push(b"/")?;
    p.push(&hex)?;
    p.push(b"_")?;
    let mut digits = [0u8; 20];
    let mut n = e.size();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    p.push(&digits[i..])?;
    p.push(b".bin")?;
    Some(p)
}

/// Device number reported for virtual entries.
pub const VDEV: u64 = (0x7f << 8) | 0x76; // makedev(0x7f, 0x76): not a real block device
pub const VDEV_MAJOR: u32 = 0x7f;
pub const VDEV_MINOR: u32 = 0x76;

/// Inode number reported for a virtual entry: unique per (layer, entry), stable for a run.
pub fn vino(layer: usize, idx: usize) -> u64 {
    0x5600_0000_0000_0000 | ((layer as u64 & 0xff) << 40) | (idx as u64 + 1)
}

/// `S_IF*` type bits plus permission bits of an entry.
pub fn mode_of(e: &Entry<'_>) -> u32 {
    let perm = e.mode() & 0o7777;
    match e.kind() {
        // The recorded mode, whatever it is: a file ingested with mode 000 shows 000
        // (the builder gives the directories it synthesizes 0755).
        Kind::Dir => libc::S_IFDIR | perm,
        Kind::Symlink => libc::S_IFLNK | 0o777,
        Kind::Executable | Kind::File | Kind::Whiteout => libc::S_IFREG | perm,
    }
}

/// `d_type` of an entry.
pub fn dtype_of(e: &Entry<'_>) -> u8 {
    match e.kind() {
        Kind::Dir => libc::DT_DIR,
        Kind::Symlink => libc::DT_LNK,
        _ => libc::DT_REG,
    }
}

/// Size as `stat` reports it (4096 for directories, like ext4).
pub fn size_of(e: &Entry<'_>) -> u64 {
    match e.kind() {
        // The size recorded at ingest (manifests before it was recorded say 0).
        Kind::Dir if e.size() > 0 => e.size(),
        Kind::Dir => 4096,
        Kind::Symlink => e.target().len() as u64,
        _ => e.size(),
    }
}

fn nlink_of(st: &State, layer: usize, e: &Entry<'_>) -> u64 {
    if !e.is_dir() {
        return 1;
    }
    let Some(l) = st.layers.get(layer) else {
        return 2;
    };
    2 + l
        .m
        .children(e)
        .filter(vrift_manifest::Entry::is_dir)
        .count() as u64
}

/// Fills `out` for a virtual entry.
pub fn fill_stat(st: &State, layer: usize, e: &Entry<'_>, out: &mut libc::stat) {
    // SAFETY: libc::stat is plain old data.
    *out = unsafe { std::mem::zeroed() };
    let size = size_of(e);
    let t = e.mtime_ns();
    out.st_dev = VDEV;
    out.st_ino = vino(layer, e.index());
    out.st_nlink = nlink_of(st, layer, e) as _;
    out.st_mode = mode_of(e);
    out.st_uid = st.uid;
    out.st_gid = st.gid;
    out.st_size = size as i64;
    out.st_blksize = 4096;
    out.st_blocks = (size.div_ceil(4096) * 8) as i64;
    let (s, ns) = (t.div_euclid(1_000_000_000), t.rem_euclid(1_000_000_000));
    out.st_atime = s;
    out.st_atime_nsec = ns;
    out.st_mtime = s;
    out.st_mtime_nsec = ns;
    out.st_ctime = s;
    out.st_ctime_nsec = ns;
}

/// Fills `out` for a virtual entry.
pub fn fill_statx(st: &State, layer: usize, e: &Entry<'_>, out: &mut libc::statx) {
    // SAFETY: libc::statx is plain old data.
    *out = unsafe { std::mem::zeroed() };
    let size = size_of(e);
    let t = e.mtime_ns();
    // SAFETY: plain old data.
    let mut ts: libc::statx_timestamp = unsafe { std::mem::zeroed() };
    ts.tv_sec = t.div_euclid(1_000_000_000);
    ts.tv_nsec = t.rem_euclid(1_000_000_000) as u32;
    out.stx_mask = libc::STATX_BASIC_STATS;
    out.stx_blksize = 4096;
    out.stx_nlink = nlink_of(st, layer, e) as u32;
    out.stx_uid = st.uid;
    out.stx_gid = st.gid;
    out.stx_mode = mode_of(e) as u16;
    out.stx_ino = vino(layer, e.index());
    out.stx_size = size;
    out.stx_blocks = size.div_ceil(4096) * 8;
    out.stx_atime = ts;
    out.stx_ctime = ts;
    out.stx_mtime = ts;
    out.stx_dev_major = VDEV_MAJOR;
    out.stx_dev_minor = VDEV_MINOR;
}

/// One directory entry of a listing.
pub struct DEnt {
    pub name: Box<[u8]>,
    pub ino: u64,
    pub dtype: u8,
}

/// The merged listing of the virtual directory `abs` (`.` and `..` first): every layer's
/// children, plus the upper mirror's entries, minus whiteouts.
pub fn list_virtual(st: &State, abs: &[u8], self_ino: u64) -> Vec<DEnt> {
    let mut out: Vec<DEnt> = vec![
        DEnt {
            name: Box::from(&b"."[..]),
            ino: self_ino,
            dtype: libc::DT_DIR,
        },
        DEnt {
            name: Box::from(&b".."[..]),
            ino: 1,
            dtype: libc::DT_DIR,
        },
    ];
    for (name, li, e) in list_layers(st, abs) {
        out.push(DEnt {
            name: name.into(),
            ino: vino(li, e.index()),
            dtype: dtype_of(&e),
        });
    }
    // The upper mirror wins: whiteouts hide, files replace, new names are added. A mirror
    // directory standing for a virtual one keeps the virtual identity.
    if let Some(up) = &st.upper {
        if up.flagged(abs) {
            if let Some(mp) = up.mirror_of(abs) {
                for (name, ino, dtype, whiteout) in read_real_dir(&mp) {
                    let at = out
                        .iter()
                        .skip(2)
                        .position(|d| *d.name == *name)
                        .map(|i| i + 2);
                    match at {
                        Some(i) if whiteout => {
                            out.remove(i);
                        }
                        None if whiteout => {}
                        Some(i) if dtype == libc::DT_DIR && out[i].dtype == libc::DT_DIR => {}
                        Some(i) => out[i] = DEnt { name, ino, dtype },
                        None => {
                            if name.ends_with(b".vrift-tmp")
                                || name.windows(11).any(|w| w == b".vrift-tmp-")
                            {
                                continue;
                            }
                            out.push(DEnt { name, ino, dtype });
                        }
                    }
                }
            }
            // Below a write-through root the whiteouts live apart from the real tree.
            if up.is_through(abs) {
                if let Some(hp) = up.hidden_of(abs) {
                    for (name, _, _, whiteout) in read_real_dir(&hp) {
                        if whiteout {
                            if let Some(i) = out.iter().skip(2).position(|d| *d.name == *name) {
                                out.remove(i + 2);
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// Children of `abs` over all layers that have an entry (nested roots included: a
/// repository's `.git` ingested as a manifest of its own is a child directory here).
fn list_layers<'a>(st: &'a State, abs: &[u8]) -> Vec<(&'a [u8], usize, Entry<'a>)> {
    layer::list_dir(&st.views, abs)
        .into_iter()
        .filter_map(|(name, w)| w.map(|(li, e)| (name, li, e)))
        .collect()
}

/// Entries of a real directory: (name, ino, d_type, is_whiteout), without `.`/`..`.
pub fn read_real_dir(p: &PBuf) -> Vec<(Box<[u8]>, u64, u8, bool)> {
    let mut out = Vec::new();
    // SAFETY: real functions on valid buffers; the DIR is closed before returning.
    unsafe {
        let d = crate::real::opendir(p.as_ptr());
        if d.is_null() {
            return out;
        }
        loop {
            let e = crate::real::readdir64(d);
            if e.is_null() {
                break;
            }
            let name = path::cbytes((*e).d_name.as_ptr());
            if name == b"." || name == b".." {
                continue;
            }
            let mut wo = false;
            if (*e).d_type == libc::DT_LNK || (*e).d_type == libc::DT_UNKNOWN {
                if let Some(mut c) = PBuf::from(p.as_bytes()) {
                    if c.push(b"/").is_some() && c.push(name).is_some() {
                        let mut t = [0u8; 32];
                        let n = crate::real::readlink(c.as_ptr(), t.as_mut_ptr().cast(), t.len());
                        wo = n > 0 && &t[..n as usize] == upper::WHITEOUT;
                    }
                }
            }
            out.push((name.into(), (*e).d_ino, (*e).d_type, wo));
        }
        crate::real::closedir(d);
    }
    out
}

/// What the manifests alone (ignoring the upper dir) say about `abs`, symlinks in the last
/// component not followed: `V` if some layer shows an entry there.
pub fn resolve_manifest_only(st: &State, abs: &[u8]) -> Node {
    match layer::probe(&st.views, abs) {
        Probe::Found(li, e) => Node::V {
            layer: li,
            idx: e.index(),
        },
        Probe::Hidden(h) => Node::Gone(hidden_errno(h)),
        Probe::ViaSymlink(..) | Probe::Implicit | Probe::Absent => Node::Real,
    }
}
