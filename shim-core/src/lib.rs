//! The `LD_PRELOAD` shim's decisions, as plain functions: no libc symbol is exported here, so
//! these are unit-tested like any code (the shim itself, which interposes `open`, `stat` and
//! friends, cannot host a test harness). The hooks in `shim/` are thin wrappers that gather
//! the facts (an fd's tag, an `fstat`) and act on what these functions decide.
#![no_std]

/// The fd a `/proc/self/fd/N`, `/proc/thread-self/fd/N`, `/proc/<our pid>/fd/N` or
/// `/dev/fd/N` path names (opening it reopens fd `N`'s file), else `None`.
pub fn proc_fd(raw: &[u8], pid: u32) -> Option<i32> {
    let rest = if let Some(r) = raw.strip_prefix(b"/dev/fd/") {
        r
    } else {
        let r = raw.strip_prefix(b"/proc/")?;
        let (who, r) = split_once(r, b'/')?;
        let ours = who == b"self" || who == b"thread-self" || parse_u32(who) == Some(pid);
        if !ours {
            return None;
        }
        r.strip_prefix(b"fd/")?
    };
    let n = parse_u32(rest)?;
    i32::try_from(n).ok()
}

fn split_once(s: &[u8], c: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == c)?;
    Some((&s[..i], &s[i + 1..]))
}

fn parse_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')))
}

/// What the shim knows of an fd from its own table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdTag {
    /// A view file it opened (entry `idx` of layer `layer`), read-only as its blob.
    File { layer: usize, idx: usize },
    /// A virtual directory (the fd is a shared, empty placeholder directory).
    Dir,
    /// Anything else, or not tagged.
    Other,
}

/// What to do with a metadata change (`fchmod`, `fchown`, `futimens`, `f*xattr`) or a
/// write-mode reopen (`/proc/self/fd/N`) aimed at an fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// A view file's blob: copy it up, re-point the fd, then apply the change to the copy.
    CopyUp { layer: usize, idx: usize },
    /// A virtual directory: keep the manifest's metadata, never touch the placeholder.
    Ignore,
    /// A blob the shim cannot copy up (an inherited fd, or a view with no upper layer):
    /// `EROFS`, never a change to the store.
    Refuse,
    /// Not the view's: the real call.
    Pass,
}

/// The decision for an fd with tag `tag` (already checked against the inode it points at:
/// a stale tag is `Other`), `is_blob` whether it is a blob of the store, `has_upper`
/// whether writes have somewhere to go.
pub fn plan(tag: FdTag, is_blob: bool, has_upper: bool) -> Plan {
    match tag {
        FdTag::File { layer, idx } if has_upper => Plan::CopyUp { layer, idx },
        FdTag::File { .. } => Plan::Refuse,
        FdTag::Dir => Plan::Ignore,
        FdTag::Other if is_blob => Plan::Refuse,
        FdTag::Other => Plan::Pass,
    }
}

/// `/proc/self/fd/<fd>` into `out`; returns its length.
pub fn fmt_proc_fd(fd: i32, out: &mut [u8; 32]) -> usize {
    let prefix = b"/proc/self/fd/";
    out[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 10];
    let mut n = fd.unsigned_abs();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let d = &digits[i..];
    out[prefix.len()..prefix.len() + d.len()].copy_from_slice(d);
    prefix.len() + d.len()
}

/// The nanoseconds field of a sealed blob's mtime (`vrift_cas::seal::SEAL_NSEC`: the shim
/// cannot depend on the store crate, so the value is repeated here and checked by a test of
/// the store crate).
pub const SEAL_NSEC: i64 = 999_999_999;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fd_paths() {
        assert_eq!(proc_fd(b"/proc/self/fd/7", 42), Some(7));
        assert_eq!(proc_fd(b"/proc/thread-self/fd/12", 42), Some(12));
        assert_eq!(proc_fd(b"/proc/42/fd/3", 42), Some(3));
        assert_eq!(proc_fd(b"/dev/fd/0", 42), Some(0));
        assert_eq!(proc_fd(b"/proc/43/fd/3", 42), None, "another process");
        for bad in [
            &b"/proc/self/fd/"[..],
            b"/proc/self/fd/3x",
            b"/proc/self/fdinfo/3",
            b"/proc/self/fd/3/x",
            b"/tmp/fd/3",
            b"/proc/self/fd/99999999999",
        ] {
            assert_eq!(proc_fd(bad, 42), None, "{bad:?}");
        }
    }

    #[test]
    fn plans() {
        let f = FdTag::File { layer: 0, idx: 3 };
        assert_eq!(plan(f, true, true), Plan::CopyUp { layer: 0, idx: 3 });
        assert_eq!(
            plan(f, true, false),
            Plan::Refuse,
            "no upper: read-only view"
        );
        assert_eq!(plan(FdTag::Dir, false, true), Plan::Ignore);
        assert_eq!(
            plan(FdTag::Other, true, true),
            Plan::Refuse,
            "inherited blob fd"
        );
        assert_eq!(plan(FdTag::Other, false, true), Plan::Pass);
    }

    #[test]
    fn proc_fd_names() {
        let mut b = [0u8; 32];
        let n = fmt_proc_fd(1234, &mut b);
        assert_eq!(&b[..n], b"/proc/self/fd/1234");
        let n = fmt_proc_fd(0, &mut b);
        assert_eq!(&b[..n], b"/proc/self/fd/0");
    }
}
