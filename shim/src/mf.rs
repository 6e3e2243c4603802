//! A manifest as the shim reads it: mmapped (not pre-faulted) and opened in O(1).
//!
//! `vrift_manifest::Manifest::open` validates every entry (O(n): ~1 ms and every page of the
//! file faulted in for 64k entries), which every process started under `vrift run` would pay
//! again. The shim instead checks only the header and that the three arrays of the archive
//! (root path, entries, string table) lie inside the mapping, then reads them through
//! `vrift_manifest::View` — the same entry access, lookup and listing code as a validated
//! `Manifest`, written to bounds-check every string range and index itself. Every bit
//! pattern of an entry's integer fields is a valid value, so a damaged file can give wrong
//! answers but never an out-of-bounds read. `vrift run` has already run the full validation
//! (checksum included) on the file.

use std::path::Path;

use vrift_manifest::format::{Header, HEADER_LEN};
use vrift_manifest::schema::ArchivedManifestData;
use vrift_manifest::{Children, Kind, View};

pub use vrift_manifest::Entry;

use crate::path::PBuf;
use crate::real;

pub struct Mf {
    base: *const u8,
    map_len: usize,
    root: &'static [u8],
    view: View<'static>,
}

// SAFETY: a read-only private mapping owned for the life of the process.
unsafe impl Send for Mf {}
// SAFETY: as above; nothing writes through it.
unsafe impl Sync for Mf {}

/// A slice `len` elements long at `ptr`, if it lies inside `[lo, hi)` and is aligned.
fn checked<'a, T>(ptr: *const T, len: usize, lo: usize, hi: usize) -> Option<&'a [T]> {
    let start = ptr as usize;
    let bytes = len.checked_mul(std::mem::size_of::<T>())?;
    let end = start.checked_add(bytes)?;
    if start < lo || end > hi || !start.is_multiple_of(std::mem::align_of::<T>()) {
        return None;
    }
    // SAFETY: in bounds of the mapping, aligned, and T is plain data (any bit pattern valid).
    Some(unsafe { std::slice::from_raw_parts(ptr, len) })
}

impl Mf {
    /// Maps the manifest at `path`. Errors are one-line reasons.
    pub fn open(path: &[u8]) -> Result<Mf, String> {
        let p = PBuf::from(path).ok_or("path too long")?;
        // SAFETY: real syscalls on our own fd and buffers; the fd is closed before returning.
        unsafe {
            let fd = real::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error().to_string());
            }
            let mut st: libc::stat = std::mem::zeroed();
            if real::fstat(fd, &mut st) != 0 {
                let e = std::io::Error::last_os_error().to_string();
                real::close(fd);
                return Err(e);
            }
            let len = st.st_size as usize;
            if len < HEADER_LEN + std::mem::size_of::<ArchivedManifestData>() {
                real::close(fd);
                return Err("too short for a manifest".into());
            }
            let m = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                fd,
                0,
            );
            real::close(fd);
            if m == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error().to_string());
            }
            let base = m as *const u8;
            let all = std::slice::from_raw_parts(base, len);
            let fail = |why: String| {
                libc::munmap(m, len);
                Err(why)
            };
            let h = match Header::parse(all, Path::new("manifest")) {
                Ok(h) => h,
                Err(e) => return fail(e.to_string()),
            };
            if h.payload_len.checked_add(HEADER_LEN as u64) != Some(len as u64) {
                return fail("length does not match its header".into());
            }
            let lo = base as usize + HEADER_LEN;
            let hi = base as usize + len;
            let root_at = hi - std::mem::size_of::<ArchivedManifestData>();
            if !root_at.is_multiple_of(std::mem::align_of::<ArchivedManifestData>()) {
                return fail("misaligned archive root".into());
            }
            let data = &*(root_at as *const ArchivedManifestData);
            let (Some(root), Some(entries), Some(strings)) = (
                checked(data.root.as_ptr(), data.root.len(), lo, hi),
                checked(data.entries.as_ptr(), data.entries.len(), lo, hi),
                checked(data.strings.as_ptr(), data.strings.len(), lo, hi),
            ) else {
                return fail("archive arrays out of bounds".into());
            };
            if entries.is_empty() || entries[0].kind != Kind::Dir as u8 {
                return fail("no root directory entry".into());
            }
            Ok(Mf {
                base,
                map_len: len,
                root,
                view: View::new(entries, strings),
            })
        }
    }

    /// Absolute directory the tree was ingested from.
    pub fn root(&self) -> &[u8] {
        self.root
    }

    pub fn entry(&self, index: usize) -> Option<Entry<'_>> {
        self.view.entry(index)
    }

    /// Direct children of a directory entry (hopping over subtrees).
    pub fn children(&self, dir: &Entry<'_>) -> Children<'_> {
        self.view.children(dir)
    }

    /// The entries, for the shared layering code (`vrift_manifest::layer`).
    pub fn view(&self) -> View<'static> {
        self.view
    }
}

impl Drop for Mf {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.map_len) };
    }
}
