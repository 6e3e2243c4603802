//! The `LD_PRELOAD` shim's decisions, as plain functions: no libc symbol is exported here, so
//! these are unit-tested like any code (the shim itself, which interposes `open`, `stat` and
//! friends, cannot host a test harness). The hooks in `shim/` are thin wrappers that gather
//! the facts (an fd's tag, an `fstat`) and act on what these functions decide.
// Every dependency in Cargo.toml is used (tests' own come from dev-dependencies).
#![cfg_attr(not(test), deny(unused_crate_dependencies))]
#![no_std]

extern crate alloc;

/// What a new process does about `vrift run`'s pid in `VRIFT_PARENT` (see the shim's
/// constructor): the command dies with its launcher, `kill -9` included.
pub mod launcher {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Check {
        /// Nothing to do: `vrift run` itself, or a descendant of the command while `vrift run`
        /// lives (shells such as bash keep the variable for their children whatever the
        /// constructor does to the environment, so its presence alone proves nothing).
        Ignore,
        /// The direct child: ask for `SIGKILL` at the launcher's death, then look again.
        Watch,
        /// `vrift run` is gone (killed between this process's start and now): die.
        Die,
    }

    pub fn check(launcher: i32, pid: i32, ppid: i32, launcher_alive: bool) -> Check {
        if pid == launcher {
            Check::Ignore
        } else if !launcher_alive {
            Check::Die
        } else if ppid == launcher {
            Check::Watch
        } else {
            Check::Ignore
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn only_a_dead_launcher_kills() {
            assert_eq!(check(10, 10, 1, true), Check::Ignore, "the launcher itself");
            assert_eq!(check(10, 11, 10, true), Check::Watch, "the command");
            assert_eq!(
                check(10, 12, 11, true),
                Check::Ignore,
                "the command's children"
            );
            assert_eq!(
                check(10, 11, 1, false),
                Check::Die,
                "reparented after a kill -9"
            );
            assert_eq!(
                check(10, 12, 11, false),
                Check::Die,
                "started after the launcher died"
            );
        }
    }
}

/// The environment contract between `vrift run` (the `vrift-run` crate, which sets these) and
/// the shim (which reads them in every process and keeps them in children): one definition
/// of every name.
pub mod env {
    /// `:`-separated manifest files to project, bottom first.
    pub const MANIFESTS: &str = "VRIFT_MANIFESTS";
    /// The store whose blobs serve the files.
    pub const STORE: &str = "VRIFT_STORE";
    /// The run's upper layer (writes, whiteouts, the shared state table).
    pub const UPPER: &str = "VRIFT_UPPER";
    /// A scratch directory, on tmpfs where there is one, in which the shim mirrors view
    /// directories of shared objects for the dynamic loader (which no preload can serve):
    /// symlinks to blobs only, no user data, so unlike the upper layer it need not share the
    /// projects' file system — and creating and removing a mirror costs little there (an
    /// upper layer on this ext4 made `import numpy, pandas, django` 40 ms slower). Without
    /// it the mirrors go to `<upper>/dl`.
    pub const LIBS: &str = "VRIFT_LIBS";
    /// `:`-separated roots whose writes land in the real tree (a project run).
    pub const THROUGH: &str = "VRIFT_THROUGH";
    /// `1` when every blob of the store is sealed: an unsealed one is damaged.
    pub const SEALED: &str = "VRIFT_SEALED";
    /// The `vrift` binary, which runs static programs on the view (`__exec-static`).
    pub const BIN: &str = "VRIFT_BIN";
    /// A file every process of the run appends its report line to.
    pub const REPORT: &str = "VRIFT_REPORT";
    /// Trace every hook call on stderr.
    pub const TRACE: &str = "VRIFT_TRACE";
    /// The virtual path of a program executed from its blob (`/proc/self/exe` answers it).
    pub const EXE: &str = "VRIFT_EXE";
    /// The pid of `vrift run`: only its direct child keeps it, and dies without it.
    pub const PARENT: &str = "VRIFT_PARENT";
    /// Where `vrift run` finds the shim library, instead of beside its binary.
    pub const SHIM: &str = "VRIFT_SHIM";
    /// The store for the shim when `VRIFT_STORE` is unset (the usage guide's name).
    pub const THE_SOURCE: &str = "VR_THE_SOURCE";
    /// What children inherit: every variable the shim needs in the next process.
    pub const PASS_ON: [&str; 9] = [
        REPORT, MANIFESTS, STORE, UPPER, LIBS, TRACE, SEALED, THROUGH, BIN,
    ];
}

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
pub const SEAL_NSEC: i64 = 999_999_000;

/// The seal of stores made before [`SEAL_NSEC`] changed (`vrift_cas::seal::LEGACY_SEAL_NSEC`).
pub const LEGACY_SEAL_NSEC: i64 = 999_999_999;

/// Whether a blob's mtime nanoseconds are a seal (either value).
#[inline]
pub fn is_seal_nsec(nsec: i64) -> bool {
    nsec == SEAL_NSEC || nsec == LEGACY_SEAL_NSEC
}

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

/// Reading the dynamic section of an ELF shared object or executable: what the dynamic
/// loader will look for (`DT_NEEDED`) and where (`DT_RUNPATH`, else `DT_RPATH`). The loader
/// opens libraries itself, by raw system calls no preload sees; to make it find a view's
/// libraries the shim mirrors them where these entries point.
pub mod elf {
    use alloc::vec::Vec;

    /// At most this many `DT_NEEDED` entries are reported (more are ignored).
    pub const MAX_NEEDED: usize = 64;

    /// The parts of a dynamic section the shim needs.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Dynamic {
        pub needed: Vec<Vec<u8>>,
        /// `DT_RUNPATH` if present, else `DT_RPATH` (the loader ignores RPATH when RUNPATH is
        /// there).
        pub search: Option<Vec<u8>>,
    }

    fn u16_at(b: &[u8], o: usize) -> Option<u16> {
        Some(u16::from_le_bytes(
            b.get(o..o.checked_add(2)?)?.try_into().ok()?,
        ))
    }
    fn u32_at(b: &[u8], o: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            b.get(o..o.checked_add(4)?)?.try_into().ok()?,
        ))
    }
    fn u64_at(b: &[u8], o: usize) -> Option<u64> {
        Some(u64::from_le_bytes(
            b.get(o..o.checked_add(8)?)?.try_into().ok()?,
        ))
    }

    /// The NUL-terminated string at `off` of the string table `strtab`.
    fn c_str(strtab: &[u8], off: u64) -> Option<&[u8]> {
        let s = strtab.get(usize::try_from(off).ok()?..)?;
        let end = s.iter().position(|&c| c == 0)?;
        Some(&s[..end])
    }

    /// Most a single read may ask for (a string table or a dynamic section is far smaller).
    const MAX_READ: u64 = 4 << 20;

    /// Whether the 64-bit little-endian ELF read through `read` has no program interpreter
    /// (`PT_INTERP`): statically linked (Go, musl-static, static-pie), so no preload is ever
    /// loaded into it. `None` for anything else (scripts, 32-bit, malformed).
    pub fn is_static(mut read: impl FnMut(u64, usize) -> Option<Vec<u8>>) -> Option<bool> {
        let h = headers(&mut read)?;
        // Executables and shared objects only (e_type 2 or 3).
        if !matches!(u16_at(&h.head, 0x10)?, 2 | 3) {
            return None;
        }
        let mut interp = false;
        for i in 0..h.phnum {
            interp |= u32_at(&h.phs, i * h.phentsize)? == 3;
        }
        Some(!interp)
    }

    /// The ELF header and program header table, read and bounds-checked.
    struct Headers {
        head: Vec<u8>,
        phs: Vec<u8>,
        phentsize: usize,
        phnum: usize,
    }

    /// [`Headers`] of a 64-bit little-endian ELF; `None` for anything else.
    fn headers(read: &mut impl FnMut(u64, usize) -> Option<Vec<u8>>) -> Option<Headers> {
        let head = read(0, 64)?;
        if head.get(..4)? != b"\x7fELF" || *head.get(4)? != 2 || *head.get(5)? != 1 {
            return None;
        }
        let phoff = u64_at(&head, 0x20)?;
        let phentsize = usize::from(u16_at(&head, 0x36)?);
        let phnum = usize::from(u16_at(&head, 0x38)?);
        if phentsize < 56 || phnum == 0 {
            return None;
        }
        let phs = read(phoff, phentsize.checked_mul(phnum)?)?;
        Some(Headers {
            head,
            phs,
            phentsize,
            phnum,
        })
    }

    /// Parses a 64-bit little-endian ELF (x86-64, aarch64) through `read(offset, len)`,
    /// which returns the bytes there (fewer at the end of the file). Reads only the header,
    /// the program headers, the dynamic section and its string table — wherever they are
    /// (patchelf and auditwheel move them to the end of big libraries). `None` for anything
    /// else or anything malformed; every offset is bounds-checked.
    pub fn dynamic_from(mut read: impl FnMut(u64, usize) -> Option<Vec<u8>>) -> Option<Dynamic> {
        let Headers {
            phs,
            phentsize,
            phnum,
            ..
        } = headers(&mut read)?;
        let ph = |i: usize| -> Option<(u32, u64, u64, u64)> {
            let o = i.checked_mul(phentsize)?;
            // (type, offset, vaddr, filesz)
            Some((
                u32_at(&phs, o)?,
                u64_at(&phs, o + 8)?,
                u64_at(&phs, o + 16)?,
                u64_at(&phs, o + 32)?,
            ))
        };
        let to_off = |vaddr: u64| -> Option<u64> {
            (0..phnum).find_map(|i| {
                let (t, off, va, sz) = ph(i)?;
                (t == 1 && vaddr >= va && vaddr - va < sz).then(|| vaddr - va + off)
            })
        };
        let (_, dyn_off, _, dyn_sz) = (0..phnum).find_map(|i| ph(i).filter(|p| p.0 == 2))?;
        if dyn_sz > MAX_READ {
            return None;
        }
        let dyns = read(dyn_off, usize::try_from(dyn_sz).ok()?)?;
        let (mut strtab, mut strsz) = (None, None);
        let (mut runpath, mut rpath) = (None, None);
        let mut needed_offs: Vec<u64> = Vec::new();
        for e in dyns.chunks_exact(16) {
            let tag = u64_at(e, 0)?;
            let val = u64_at(e, 8)?;
            match tag {
                0 => break,
                1 if needed_offs.len() < MAX_NEEDED => needed_offs.push(val),
                5 => strtab = Some(val),
                10 => strsz = Some(val),
                15 => rpath = Some(val),
                29 => runpath = Some(val),
                _ => {}
            }
        }
        let strsz = strsz?;
        if strsz > MAX_READ {
            return None;
        }
        let strs = read(to_off(strtab?)?, usize::try_from(strsz).ok()?)?;
        Some(Dynamic {
            needed: needed_offs
                .iter()
                .filter_map(|&o| c_str(&strs, o).map(<[u8]>::to_vec))
                .collect(),
            search: runpath
                .or(rpath)
                .and_then(|o| c_str(&strs, o))
                .map(<[u8]>::to_vec),
        })
    }

    /// [`dynamic_from`] over an image in memory.
    pub fn dynamic(b: &[u8]) -> Option<Dynamic> {
        dynamic_from(|off, len| {
            let start = usize::try_from(off).ok()?;
            let end = start.checked_add(len)?.min(b.len());
            b.get(start..end).map(<[u8]>::to_vec)
        })
    }

    /// Writes search-path entry `entry` with `$ORIGIN` / `${ORIGIN}` replaced by `origin`
    /// into `out`; returns the length. `None` if it does not fit, or uses `$LIB` or
    /// `$PLATFORM` (which the shim does not expand).
    pub fn expand_origin(entry: &[u8], origin: &[u8], out: &mut [u8]) -> Option<usize> {
        let mut n = 0;
        let mut i = 0;
        let mut put = |s: &[u8], n: &mut usize| -> Option<()> {
            out.get_mut(*n..*n + s.len())?.copy_from_slice(s);
            *n += s.len();
            Some(())
        };
        while i < entry.len() {
            let rest = &entry[i..];
            if rest.starts_with(b"${ORIGIN}") {
                put(origin, &mut n)?;
                i += 9;
            } else if rest.starts_with(b"$ORIGIN") {
                put(origin, &mut n)?;
                i += 7;
            } else if rest.starts_with(b"$") {
                return None;
            } else {
                put(&rest[..1], &mut n)?;
                i += 1;
            }
        }
        Some(n)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        extern crate std;
        use std::vec::Vec;

        /// A minimal ELF64 image: one PT_LOAD over everything, a PT_DYNAMIC, a string table.
        fn image(needed: &[&[u8]], runpath: Option<&[u8]>, rpath: Option<&[u8]>) -> Vec<u8> {
            let mut strs = Vec::from(&b"\0"[..]);
            let mut add = |s: &[u8]| {
                let o = strs.len() as u64;
                strs.extend_from_slice(s);
                strs.push(0);
                o
            };
            let mut dyns: Vec<(u64, u64)> = needed.iter().map(|s| (1, add(s))).collect();
            if let Some(r) = runpath {
                dyns.push((29, add(r)));
            }
            if let Some(r) = rpath {
                dyns.push((15, add(r)));
            }
            let phoff = 64u64;
            let dyn_off = phoff + 2 * 56;
            let dyn_len = (dyns.len() as u64 + 3) * 16;
            let str_off = dyn_off + dyn_len;
            let vbase = 0x1000u64;
            dyns.push((5, vbase + str_off));
            dyns.push((10, strs.len() as u64));
            dyns.push((0, 0));
            let mut b = Vec::new();
            b.extend_from_slice(b"\x7fELF\x02\x01\x01");
            b.resize(0x20, 0);
            b.extend_from_slice(&phoff.to_le_bytes());
            b.resize(0x36, 0);
            b.extend_from_slice(&56u16.to_le_bytes());
            b.extend_from_slice(&2u16.to_le_bytes());
            b.resize(64, 0);
            let total = str_off + strs.len() as u64;
            for (t, off, va, sz) in [
                (1u32, 0u64, vbase, total),
                (2, dyn_off, vbase + dyn_off, dyn_len),
            ] {
                let mut p = [0u8; 56];
                p[0..4].copy_from_slice(&t.to_le_bytes());
                p[8..16].copy_from_slice(&off.to_le_bytes());
                p[16..24].copy_from_slice(&va.to_le_bytes());
                p[32..40].copy_from_slice(&sz.to_le_bytes());
                b.extend_from_slice(&p);
            }
            for (t, v) in dyns {
                b.extend_from_slice(&t.to_le_bytes());
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&strs);
            b
        }

        #[test]
        fn needed_and_search_paths() {
            let img = image(
                &[b"libfoo.so.1", b"libc.so.6"],
                Some(b"$ORIGIN/../lib"),
                Some(b"/old"),
            );
            let d = dynamic(&img).unwrap();
            assert_eq!(d.needed, [b"libfoo.so.1".to_vec(), b"libc.so.6".to_vec()]);
            assert_eq!(
                d.search.as_deref(),
                Some(&b"$ORIGIN/../lib"[..]),
                "RUNPATH wins over RPATH"
            );
            let d2 = image(&[b"x.so"], None, Some(b"/opt/x"));
            assert_eq!(
                dynamic(&d2).unwrap().search.as_deref(),
                Some(&b"/opt/x"[..])
            );
        }

        #[test]
        fn truncated_or_foreign_images_are_refused_without_panicking() {
            let img = image(&[b"libfoo.so"], Some(b"$ORIGIN"), None);
            for n in 0..img.len() {
                let _ = dynamic(&img[..n]);
            }
            let mut bad = img.clone();
            bad[4] = 1; // ELF32
            assert!(dynamic(&bad).is_none());
            assert!(dynamic(b"#!/bin/sh\n").is_none());
            for i in 0..img.len() {
                let mut m = img.clone();
                m[i] ^= 0xff;
                let _ = dynamic(&m);
            }
        }

        #[test]
        fn static_is_no_program_interpreter() {
            let read = |img: &[u8], off: u64, len: usize| {
                let o = usize::try_from(off).ok()?;
                Some(img.get(o..)?.iter().take(len).copied().collect::<Vec<u8>>())
            };
            let mut img = image(&[b"libc.so.6"], None, None);
            assert_eq!(
                is_static(|o, l| read(&img, o, l)),
                None,
                "e_type 0 is no program"
            );
            img[0x10] = 2;
            assert_eq!(is_static(|o, l| read(&img, o, l)), Some(true));
            // The second program header becomes PT_INTERP.
            img[64 + 56] = 3;
            assert_eq!(is_static(|o, l| read(&img, o, l)), Some(false));
            assert_eq!(is_static(|o, l| read(b"#!/bin/sh\n", o, l)), None);
            for n in 0..img.len() {
                let _ = is_static(|o, l| read(&img[..n], o, l));
            }
        }

        #[test]
        fn origin_expansion() {
            let mut out = [0u8; 64];
            let n = expand_origin(b"$ORIGIN/../../numpy.libs", b"/v/np/core", &mut out).unwrap();
            assert_eq!(&out[..n], b"/v/np/core/../../numpy.libs");
            let n = expand_origin(b"${ORIGIN}/lib", b"/a", &mut out).unwrap();
            assert_eq!(&out[..n], b"/a/lib");
            assert!(expand_origin(b"$LIB/x", b"/a", &mut out).is_none());
            assert!(expand_origin(b"$ORIGIN/x", &[b'a'; 70], &mut out).is_none());
        }
    }
}

/// Running the dynamic loader by hand (`ld-linux-x86-64.so.2 [options] PROGRAM args`, as
/// `ldd` does): the loader opens PROGRAM itself, so a PROGRAM in the view must be handed to
/// it as a real file.
pub mod loader {
    /// Whether `path` names a dynamic loader (`/lib64/ld-linux-x86-64.so.2`, `ld.so`).
    pub fn is_loader(path: &[u8]) -> bool {
        let name = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => &path[i + 1..],
            None => path,
        };
        name == b"ld.so" || (name.starts_with(b"ld-") && name.windows(3).any(|w| w == b".so"))
    }

    /// Options of glibc's loader that take a value as the next argument.
    const WITH_VALUE: &[&[u8]] = &[
        b"--library-path",
        b"--inhibit-rpath",
        b"--audit",
        b"--preload",
        b"--argv0",
        b"--glibc-hwcaps-prepend",
        b"--glibc-hwcaps-mask",
    ];

    /// What an argument of the loader's command line is.
    #[derive(Debug, PartialEq, Eq, Clone, Copy)]
    pub enum Arg {
        /// `argv[0]`, an option, or an argument of the program.
        Other,
        /// The value of `--library-path` (a colon-separated list of directories).
        LibraryPath,
        /// The program the loader is to load.
        Program,
    }

    /// Classifies `args[i]` (the loader's whole argv, `args[0]` included).
    pub fn classify(args: &[&[u8]], i: usize) -> Arg {
        let mut j = 1;
        while j < args.len() {
            let a = args[j];
            if a == b"--" {
                return if i == j + 1 { Arg::Program } else { Arg::Other };
            }
            if !a.starts_with(b"--") {
                return if i == j { Arg::Program } else { Arg::Other };
            }
            if WITH_VALUE.contains(&a) {
                if i == j + 1 {
                    return if a == b"--library-path" {
                        Arg::LibraryPath
                    } else {
                        Arg::Other
                    };
                }
                j += 2;
            } else {
                j += 1;
            }
        }
        Arg::Other
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn loaders_are_recognised_by_name() {
            assert!(is_loader(b"/lib64/ld-linux-x86-64.so.2"));
            assert!(is_loader(b"/lib/ld-linux-aarch64.so.1"));
            assert!(is_loader(b"ld.so"));
            assert!(!is_loader(b"/usr/bin/ld"));
            assert!(!is_loader(b"/usr/lib/libld-foo.so"));
            assert!(!is_loader(b"/usr/bin/ldd"));
        }

        #[test]
        fn the_program_is_the_first_non_option() {
            let a: &[&[u8]] = &[b"ld.so", b"--verify", b"/p/bin/x", b"arg"];
            assert_eq!(classify(a, 2), Arg::Program);
            assert_eq!(classify(a, 3), Arg::Other);
            assert_eq!(classify(a, 1), Arg::Other);
            let a: &[&[u8]] = &[
                b"ld.so",
                b"--library-path",
                b"/p/lib",
                b"--argv0",
                b"n",
                b"x",
            ];
            assert_eq!(classify(a, 2), Arg::LibraryPath);
            assert_eq!(classify(a, 4), Arg::Other);
            assert_eq!(classify(a, 5), Arg::Program);
            let a: &[&[u8]] = &[b"ld.so", b"--", b"--weird-name"];
            assert_eq!(classify(a, 2), Arg::Program);
            let a: &[&[u8]] = &[b"ld.so", b"--list"];
            assert_eq!(classify(a, 1), Arg::Other);
        }
    }
}

/// The upper layer's `state` file: a fixed-size hash set of the paths written during a run,
/// mapped `MAP_SHARED` by every process of the run. Its blocks are allocated when the file is
/// made (`posix_fallocate`, by the launcher): a sparse file on a full tmpfs (`/dev/shm` is
/// 64 MiB in Docker) would kill the user's program with SIGBUS at its first write.
pub mod upper_state {
    /// File name inside the upper directory.
    pub const FILE: &str = "state";
    /// Slots of the open-addressing table (a power of two).
    pub const SLOTS: usize = 1 << 18;
    /// Words before the table.
    pub const HEADER_WORDS: usize = 8;
    /// Size of the file.
    pub const BYTES: usize = (HEADER_WORDS + SLOTS) * 8;
    /// Target of the symlink in the mirror (`<upper>/fs/<path>`) that marks a deleted path.
    pub const WHITEOUT: &[u8] = b"\x01vrift-whiteout";

    use core::sync::atomic::{AtomicU64, Ordering};

    /// The key of a virtual path in the table (never 0: 0 marks a free slot).
    pub fn key(path: &[u8]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &c in path {
            h ^= u64::from(c);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        if h == 0 {
            1
        } else {
            h
        }
    }

    /// The whole mapped file as words: header (count, overflowed) then the slots.
    pub type Table = [AtomicU64];

    /// True if the mirror may hold something for `path` (no false negatives).
    pub fn flagged(t: &Table, path: &[u8]) -> bool {
        if t[0].load(Ordering::Acquire) == 0 {
            return false;
        }
        if t[1].load(Ordering::Relaxed) != 0 {
            return true; // overflowed: check the mirror for everything
        }
        let h = key(path);
        let mut i = (h as usize) & (SLOTS - 1);
        for _ in 0..SLOTS {
            let v = t[HEADER_WORDS + i].load(Ordering::Acquire);
            if v == h {
                return true;
            }
            if v == 0 {
                return false;
            }
            i = (i + 1) & (SLOTS - 1);
        }
        true
    }

    /// Records that the mirror holds something for `path`. Past half full the table says
    /// "maybe" for everything (lookups then check the mirror), never a false "no".
    pub fn flag(t: &Table, path: &[u8]) {
        let h = key(path);
        let mut i = (h as usize) & (SLOTS - 1);
        for _ in 0..SLOTS / 2 {
            match t[HEADER_WORDS + i].compare_exchange(0, h, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    let n = t[0].fetch_add(1, Ordering::AcqRel) + 1;
                    if n as usize > SLOTS / 2 {
                        t[1].store(1, Ordering::Release);
                    }
                    return;
                }
                Err(v) if v == h => return,
                Err(_) => i = (i + 1) & (SLOTS - 1),
            }
        }
        t[1].store(1, Ordering::Release);
        t[0].fetch_add(1, Ordering::AcqRel);
    }

    /// [`flag`] for `path` and every ancestor up to `/`.
    pub fn flag_with_ancestors(t: &Table, path: &[u8]) {
        let mut p = path;
        loop {
            flag(t, p);
            match p.iter().rposition(|&b| b == b'/') {
                None => break,
                Some(0) if p == b"/" => break,
                Some(0) => p = b"/",
                Some(i) => p = &p[..i],
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        extern crate std;
        use std::vec::Vec;

        fn table() -> Vec<AtomicU64> {
            (0..HEADER_WORDS + SLOTS)
                .map(|_| AtomicU64::new(0))
                .collect()
        }

        #[test]
        fn flags_paths_and_ancestors() {
            let t = table();
            assert!(!flagged(&t, b"/a"));
            flag_with_ancestors(&t, b"/a/b/c");
            for p in [&b"/a/b/c"[..], b"/a/b", b"/a", b"/"] {
                assert!(flagged(&t, p), "{p:?}");
            }
            assert!(!flagged(&t, b"/a/x"));
            assert_eq!(t[0].load(Ordering::Relaxed), 4);
            flag(&t, b"/a");
            assert_eq!(t[0].load(Ordering::Relaxed), 4, "no duplicates");
        }

        #[test]
        fn overflow_says_maybe() {
            let t = table();
            t[1].store(1, Ordering::Relaxed);
            t[0].store(1, Ordering::Relaxed);
            assert!(flagged(&t, b"/anything"));
        }
    }
}

/// A fixed-size, lock-free set of path keys ([`upper_state::key`]) for work a process does
/// once: mirroring a directory's shared objects or a library's dependencies for the loader.
/// Hooks call it from any thread, after `fork`, inside `dlopen`: no allocation, no lock.
pub mod seen {
    use core::sync::atomic::{AtomicU64, Ordering};

    pub struct Seen<const N: usize> {
        slots: [AtomicU64; N],
    }

    impl<const N: usize> Default for Seen<N> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<const N: usize> Seen<N> {
        pub const fn new() -> Self {
            Seen {
                slots: [const { AtomicU64::new(0) }; N],
            }
        }

        /// Records `key` (never 0); true if it was not recorded before, so the caller does
        /// the work. A full set answers true: the work is redone, never skipped wrongly.
        pub fn first(&self, key: u64) -> bool {
            let mut i = (key as usize) % N;
            for _ in 0..N {
                match self.slots[i].compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return true,
                    Err(v) if v == key => return false,
                    Err(_) => i = (i + 1) % N,
                }
            }
            true
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn once_per_key_and_full_means_redo() {
            let s: Seen<4> = Seen::new();
            assert!(s.first(7));
            assert!(!s.first(7));
            assert!(s.first(11));
            for k in [1, 2] {
                assert!(s.first(k));
            }
            assert!(!s.first(11));
            assert!(s.first(99), "full: do the work");
            assert!(s.first(99), "still full: do it again");
            assert!(!s.first(2));
        }
    }
}

/// Paths without allocation: a fixed NUL-terminated buffer and lexical normalization, what
/// every hook does to an argument before it asks the view anything.
// The C-string path buffer hands out its initialized prefix and raw pointers.
#[allow(unsafe_code)]
pub mod path {
    use core::ffi::c_char;
    use core::mem::MaybeUninit;

    /// Longest path the shim handles itself (longer ones pass through untouched).
    pub const MAX: usize = 4096;

    /// A NUL-terminated path in a fixed buffer. Only `buf[..=len]` is ever initialized or
    /// read (no 4 KiB memset per hook); hooks pass these by reference, never by value.
    pub struct PBuf {
        buf: [MaybeUninit<u8>; MAX + 1],
        len: usize,
    }

    impl Default for PBuf {
        fn default() -> Self {
            Self::new()
        }
    }

    impl PBuf {
        #[inline]
        pub fn new() -> PBuf {
            let mut p = PBuf {
                buf: [MaybeUninit::uninit(); MAX + 1],
                len: 0,
            };
            p.buf[0] = MaybeUninit::new(0);
            p
        }

        pub fn from(bytes: &[u8]) -> Option<PBuf> {
            let mut p = PBuf::new();
            p.push(bytes)?;
            Some(p)
        }

        #[inline]
        pub fn as_bytes(&self) -> &[u8] {
            // SAFETY: bytes 0..=len are always initialized (every writer keeps that invariant).
            unsafe { core::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), self.len) }
        }

        /// Pointer to the NUL-terminated path.
        #[inline]
        pub fn as_ptr(&self) -> *const c_char {
            self.buf.as_ptr().cast()
        }

        /// Mutable pointer to the NUL-terminated path (for functions that fill in a template).
        pub fn as_mut_ptr(&mut self) -> *mut c_char {
            self.buf.as_mut_ptr().cast()
        }

        pub fn clear(&mut self) {
            self.len = 0;
            self.buf[0] = MaybeUninit::new(0);
        }

        pub fn len(&self) -> usize {
            self.len
        }

        pub fn is_empty(&self) -> bool {
            self.len == 0
        }

        pub fn truncate(&mut self, n: usize) {
            if n <= self.len {
                self.len = n;
                self.buf[n] = MaybeUninit::new(0);
            }
        }

        /// Appends raw bytes; `None` if the result would be too long.
        #[inline]
        pub fn push(&mut self, b: &[u8]) -> Option<()> {
            let end = self.len.checked_add(b.len())?;
            if end > MAX {
                return None;
            }
            for (d, &c) in self.buf[self.len..end].iter_mut().zip(b) {
                *d = MaybeUninit::new(c);
            }
            self.len = end;
            self.buf[end] = MaybeUninit::new(0);
            Some(())
        }

        /// Appends one path component lexically: `.` and empty do nothing, `..` pops.
        fn push_component(&mut self, c: &[u8]) -> Option<()> {
            match c {
                b"" | b"." => Some(()),
                b".." => {
                    let cut = self
                        .as_bytes()
                        .iter()
                        .rposition(|&b| b == b'/')
                        .unwrap_or(0);
                    self.truncate(cut);
                    Some(())
                }
                _ => {
                    self.push(b"/")?;
                    self.push(c)
                }
            }
        }

        /// Appends `rel`'s components (lexically normalized). The buffer holds an absolute
        /// path without trailing slash, or is empty (meaning `/`).
        pub fn join_normalized(&mut self, rel: &[u8]) -> Option<()> {
            for c in rel.split(|&b| b == b'/') {
                self.push_component(c)?;
            }
            Some(())
        }

        /// Turns the empty buffer into `/` (the normal form keeps `/` as empty while joining).
        pub fn finish(&mut self) {
            if self.len == 0 {
                self.buf[0] = MaybeUninit::new(b'/');
                self.len = 1;
                self.buf[1] = MaybeUninit::new(0);
            }
        }
    }

    /// Normalizes an absolute path lexically (`//`, `.`, `..`), as the kernel would if no
    /// component were a symlink.
    pub fn normalize_abs(abs: &[u8]) -> Option<PBuf> {
        let mut p = PBuf::new();
        p.join_normalized(abs)?;
        p.finish();
        Some(p)
    }

    /// `base` (absolute) joined with `rel`, normalized.
    pub fn join(base: &[u8], rel: &[u8]) -> Option<PBuf> {
        let mut p = PBuf::new();
        if !rel.starts_with(b"/") {
            p.join_normalized(base)?;
        }
        p.join_normalized(rel)?;
        p.finish();
        Some(p)
    }

    /// Parent of a normalized absolute path (`/` for `/`).
    #[inline]
    pub fn parent(abs: &[u8]) -> &[u8] {
        match abs.iter().rposition(|&b| b == b'/') {
            Some(0) | None => b"/",
            Some(i) => &abs[..i],
        }
    }

    /// Last component of a normalized absolute path.
    #[inline]
    pub fn file_name(abs: &[u8]) -> &[u8] {
        match abs.iter().rposition(|&b| b == b'/') {
            Some(i) => &abs[i + 1..],
            None => abs,
        }
    }

    /// `abs` relative to `root` (root without trailing slash, `""` meaning `/`), if `abs` is
    /// `root` or below it.
    #[inline]
    pub fn under<'p>(root: &[u8], abs: &'p [u8]) -> Option<&'p [u8]> {
        let rest = abs.strip_prefix(root)?;
        if rest.is_empty() {
            return Some(rest);
        }
        let rest = rest.strip_prefix(b"/")?;
        Some(rest)
    }

    /// True if walking `raw` from `base` (absolute, normalized; `raw` may be absolute, then
    /// `base` is ignored) meets a `..` while at a directory `inside` says yes to. The kernel
    /// resolves `..` through the directories it walks, so a path like `view/..` fails for it
    /// when `view` exists only in a manifest: such a path must reach the kernel normalized.
    pub fn dotdot_from(base: &[u8], raw: &[u8], inside: impl Fn(&[u8]) -> bool) -> bool {
        if !raw.split(|&b| b == b'/').any(|c| c == b"..") {
            return false;
        }
        let mut cur = PBuf::new();
        if !raw.starts_with(b"/") && base != b"/" && cur.push(base).is_none() {
            return false;
        }
        for c in raw.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    let here: &[u8] = if cur.is_empty() { b"/" } else { cur.as_bytes() };
                    if inside(here) {
                        return true;
                    }
                    let p = parent(here).len();
                    cur.truncate(if p == 1 { 0 } else { p });
                }
                _ => {
                    if cur.push(b"/").is_none() || cur.push(c).is_none() {
                        return false;
                    }
                }
            }
        }
        false
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        extern crate std;
        use alloc::string::String;
        use alloc::vec::Vec;
        use proptest::prelude::*;

        #[test]
        fn dotdot_through_a_directory() {
            let view = |p: &[u8]| p == b"/w/nm" || p.starts_with(b"/w/nm/");
            assert!(dotdot_from(b"/", b"/w/nm/..", view));
            assert!(dotdot_from(b"/", b"/w/nm/a/../b", view));
            assert!(dotdot_from(b"/w", b"nm/../x", view));
            assert!(dotdot_from(b"/w/nm/a", b"../..", view));
            assert!(!dotdot_from(b"/", b"/w/nm/a", view), "no `..`");
            assert!(
                !dotdot_from(b"/", b"/w/x/../nm/a", view),
                "`..` outside the view"
            );
            assert!(!dotdot_from(b"/w", b"../w/nm", view));
            assert!(!dotdot_from(b"/", b"/../..", view));
        }

        /// An independent normalizer: components in a vector, as a reader would do it.
        fn oracle(base: &str, rel: &str) -> String {
            let mut parts: Vec<&str> = Vec::new();
            let all = if rel.starts_with('/') {
                rel.split('/').collect::<Vec<_>>()
            } else {
                base.split('/').chain(rel.split('/')).collect()
            };
            for c in all {
                match c {
                    "" | "." => {}
                    ".." => {
                        parts.pop();
                    }
                    c => parts.push(c),
                }
            }
            let mut out = String::new();
            for p in &parts {
                out.push('/');
                out.push_str(p);
            }
            if out.is_empty() {
                out.push('/');
            }
            out
        }

        #[test]
        fn normal_forms() {
            for (i, want) in [
                ("/", "/"),
                ("//a//b/", "/a/b"),
                ("/a/./b/../c", "/a/c"),
                ("/../..", "/"),
                ("/a/b/..", "/a"),
            ] {
                assert_eq!(
                    normalize_abs(i.as_bytes()).unwrap().as_bytes(),
                    want.as_bytes(),
                    "{i}"
                );
            }
            assert_eq!(join(b"/w/x", b"../y").unwrap().as_bytes(), b"/w/y");
            assert_eq!(join(b"/w/x", b"/abs/./z").unwrap().as_bytes(), b"/abs/z");
            assert_eq!(parent(b"/a/b"), b"/a");
            assert_eq!(parent(b"/a"), b"/");
            assert_eq!(parent(b"/"), b"/");
            assert_eq!(file_name(b"/a/b"), b"b");
            assert_eq!(under(b"/r", b"/r/x/y"), Some(&b"x/y"[..]));
            assert_eq!(under(b"/r", b"/r"), Some(&b""[..]));
            assert_eq!(under(b"/r", b"/rx/y"), None);
            assert_eq!(under(b"", b"/any"), Some(&b"any"[..]));
        }

        #[test]
        fn too_long_is_refused_not_truncated() {
            let long = alloc::vec![b'a'; MAX];
            let mut p = PBuf::new();
            assert!(p.push(b"/").is_some());
            assert!(p.push(&long).is_none());
            assert_eq!(
                p.as_bytes(),
                b"/",
                "a refused push leaves the buffer as it was"
            );
            // SAFETY: the buffer is NUL-terminated at len.
            assert_eq!(unsafe { *p.as_ptr().add(1) }, 0);
        }

        proptest! {
            #[test]
            fn join_matches_the_oracle(
                base in proptest::collection::vec("[a-c.]{0,3}", 0..6),
                rel in proptest::collection::vec("[a-c.]{0,3}", 0..6),
                abs in any::<bool>(),
            ) {
                let base = alloc::format!("/{}", base.join("/"));
                let rel = if abs { alloc::format!("/{}", rel.join("/")) } else { rel.join("/") };
                let got = join(base.as_bytes(), rel.as_bytes()).unwrap();
                prop_assert_eq!(core::str::from_utf8(got.as_bytes()).unwrap(), oracle(&base, &rel));
                // NUL right after the bytes, for the C side.
                // SAFETY: the buffer is NUL-terminated at len.
                prop_assert_eq!(unsafe { *got.as_ptr().add(got.len()) }, 0);
            }
        }
    }
}

/// Resolving an absolute path against the view: the writable upper layer first, then the
/// manifests' layers (asked through [`resolve::View`]), symlinks followed as the kernel would
/// (a link in the last component only when asked, at most 40 links), falling through to the
/// real filesystem outside the view. The layering rules themselves are
/// `vrift_manifest::layer`'s; this is the loop around them.
pub mod resolve {
    use crate::path::{join, parent, PBuf};

    /// `ENOENT`, `ENOTDIR`, `ELOOP` on Linux (the shim checks them against libc).
    pub const ENOENT: i32 = 2;
    pub const ENOTDIR: i32 = 20;
    pub const ELOOP: i32 = 40;

    /// Where a resolved path lives.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub enum Node {
        /// A manifest entry (never a whiteout): layer index, entry index.
        V { layer: usize, idx: usize },
        /// A real file or directory in the upper layer (directories here are in no manifest;
        /// merged ones resolve to `V`).
        Upper,
        /// Does not exist in the view (deleted, or below a non-directory): this errno.
        Gone(i32),
        /// Not ours: the real filesystem answers at the resolved path.
        Real,
    }

    /// What the manifests' layers say about one path (symlinks in the last component not
    /// followed). The path buffer lives inline on purpose: hooks do not allocate.
    #[allow(clippy::large_enum_variant)]
    pub enum Look<'a> {
        /// An entry; `link` is a symlink's target.
        Found {
            layer: usize,
            idx: usize,
            dir: bool,
            link: Option<&'a [u8]>,
        },
        /// Below a symlink at the absolute path `at`, whose target is `target`.
        ViaLink {
            at: PBuf,
            target: &'a [u8],
        },
        /// Covered but hidden: this errno.
        Hidden(i32),
        Absent,
    }

    /// What the upper layer holds at a path (the symlink target inline: hooks do not
    /// allocate).
    #[allow(clippy::large_enum_variant)]
    pub enum Mirror {
        Nothing,
        Whiteout,
        /// A directory (merged with a manifest's directory if there is one).
        Dir,
        /// A symlink with this target.
        Symlink(PBuf),
        /// A file or anything else.
        Other,
    }

    /// The facts [`resolve`] needs.
    pub trait View {
        /// `abs` is at or below some layer's root.
        fn in_view(&self, abs: &[u8]) -> bool;
        /// The upper layer at `abs` ([`Mirror::Nothing`] without one).
        fn mirror(&self, abs: &[u8]) -> Mirror;
        /// The manifests' layers at `abs`.
        fn look(&self, abs: &[u8]) -> Look<'_>;
    }

    /// Resolves `cur` (absolute, normalized) in place; `follow`: follow a symlink in the last
    /// component. Returns where it lives and whether any symlink was followed (then `cur` is
    /// the path after following).
    pub fn resolve<V: View + ?Sized>(v: &V, cur: &mut PBuf, follow: bool) -> (Node, bool) {
        let mut moved = false;
        for _ in 0..40 {
            if !v.in_view(cur.as_bytes()) {
                return (Node::Real, moved);
            }
            let mut upper_dir = false;
            match v.mirror(cur.as_bytes()) {
                Mirror::Nothing => {}
                Mirror::Whiteout => return (Node::Gone(ENOENT), moved),
                Mirror::Dir => upper_dir = true,
                Mirror::Other => return (Node::Upper, moved),
                Mirror::Symlink(_) if !follow => return (Node::Upper, moved),
                Mirror::Symlink(t) => match join(parent(cur.as_bytes()), t.as_bytes()) {
                    Some(n) => {
                        *cur = n;
                        moved = true;
                        continue;
                    }
                    None => break,
                },
            }
            match v.look(cur.as_bytes()) {
                Look::Found { link: Some(t), .. } if follow && !upper_dir => {
                    match join(parent(cur.as_bytes()), t) {
                        Some(n) => {
                            *cur = n;
                            moved = true;
                        }
                        None => break,
                    }
                }
                Look::Found {
                    layer, idx, dir, ..
                } => {
                    // A file or symlink of the manifest under a directory of the upper layer
                    // that replaced it.
                    let node = if upper_dir && !dir {
                        Node::Upper
                    } else {
                        Node::V { layer, idx }
                    };
                    return (node, moved);
                }
                Look::ViaLink { at, target } => {
                    // Replace the link's prefix of `cur` by its target and go on.
                    let rest = &cur.as_bytes()[at.len().min(cur.len())..];
                    let Some(mut n) = join(parent(at.as_bytes()), target) else {
                        break;
                    };
                    if n.as_bytes() == b"/" {
                        n.clear();
                    }
                    if n.push(rest).is_none() {
                        break;
                    }
                    n.finish();
                    *cur = n;
                    moved = true;
                }
                Look::Hidden(_) if upper_dir => return (Node::Upper, moved),
                Look::Hidden(ENOTDIR) if replaced_above(v, cur.as_bytes()) => {
                    // The file above was replaced by a directory during the run: the path is
                    // simply missing from it.
                    return (Node::Gone(ENOENT), moved);
                }
                Look::Hidden(e) => return (Node::Gone(e), moved),
                Look::Absent => return (if upper_dir { Node::Upper } else { Node::Real }, moved),
            }
        }
        (Node::Gone(ELOOP), moved)
    }

    /// Whether some ancestor of `abs` inside the view is a directory of the upper layer.
    fn replaced_above<V: View + ?Sized>(v: &V, abs: &[u8]) -> bool {
        let mut p = abs;
        while p.len() > 1 {
            p = parent(p);
            if !v.in_view(p) {
                return false;
            }
            if matches!(v.mirror(p), Mirror::Dir) {
                return true;
            }
        }
        false
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use alloc::collections::BTreeMap;
        use alloc::string::String;
        use alloc::vec::Vec;

        /// One layer at `/v`: path → symlink target (`Some`) or directory/file (`None`, a
        /// trailing `/` in the key marks a directory); the upper layer: path → mirror kind.
        struct Fake {
            entries: BTreeMap<&'static str, Option<&'static str>>,
            upper: BTreeMap<&'static str, &'static str>,
        }

        fn fake(entries: &[(&'static str, Option<&'static str>)]) -> Fake {
            Fake {
                entries: entries.iter().copied().collect(),
                upper: BTreeMap::new(),
            }
        }

        impl Fake {
            fn key(&self, abs: &[u8]) -> Option<(&'static str, usize)> {
                let s = core::str::from_utf8(abs).ok()?;
                self.entries
                    .keys()
                    .enumerate()
                    .find(|(_, k)| k.trim_end_matches('/') == s)
                    .map(|(i, k)| (*k, i))
            }
        }

        impl View for Fake {
            fn in_view(&self, abs: &[u8]) -> bool {
                abs == b"/v" || abs.starts_with(b"/v/")
            }
            fn mirror(&self, abs: &[u8]) -> Mirror {
                match core::str::from_utf8(abs)
                    .ok()
                    .and_then(|s| self.upper.get(s))
                {
                    Some(&"whiteout") => Mirror::Whiteout,
                    Some(&"dir") => Mirror::Dir,
                    Some(&"file") => Mirror::Other,
                    Some(t) => Mirror::Symlink(PBuf::from(t.as_bytes()).unwrap()),
                    None => Mirror::Nothing,
                }
            }
            fn look(&self, abs: &[u8]) -> Look<'_> {
                if let Some((k, idx)) = self.key(abs) {
                    let link = self.entries[k].map(str::as_bytes);
                    return Look::Found {
                        layer: 0,
                        idx,
                        dir: k.ends_with('/'),
                        link,
                    };
                }
                // The deepest ancestor decides.
                let mut p = abs;
                while let Some(i) = p.iter().rposition(|&b| b == b'/') {
                    p = &p[..i];
                    if let Some((k, _)) = self.key(p) {
                        return match self.entries[k] {
                            Some(t) => Look::ViaLink {
                                at: PBuf::from(p).unwrap(),
                                target: t.as_bytes(),
                            },
                            None if k.ends_with('/') => Look::Absent,
                            None => Look::Hidden(ENOTDIR),
                        };
                    }
                }
                Look::Absent
            }
        }

        fn run(v: &Fake, p: &str, follow: bool) -> (Node, String, bool) {
            let mut b = PBuf::from(p.as_bytes()).unwrap();
            let (n, moved) = resolve(v, &mut b, follow);
            (n, String::from_utf8(b.as_bytes().to_vec()).unwrap(), moved)
        }

        fn idx(v: &Fake, k: &str) -> Node {
            let idx = v.entries.keys().position(|x| *x == k).unwrap();
            Node::V { layer: 0, idx }
        }

        fn tree() -> Fake {
            fake(&[
                ("/v/", None),
                ("/v/a/", None),
                ("/v/a/f", None),
                ("/v/a/up", Some("..")),
                ("/v/l", Some("a/f")),
                ("/v/d", Some("a")),
                ("/v/abs", Some("/v/a")),
                ("/v/out", Some("/etc")),
                ("/v/loop1", Some("loop2")),
                ("/v/loop2", Some("loop1")),
            ])
        }

        #[test]
        fn plain_entries_and_misses() {
            let v = tree();
            assert_eq!(
                run(&v, "/v/a/f", true),
                (idx(&v, "/v/a/f"), "/v/a/f".into(), false)
            );
            assert_eq!(
                run(&v, "/v/zz", true).0,
                Node::Real,
                "absent: the real tree answers"
            );
            assert_eq!(run(&v, "/v/a/f/x", true).0, Node::Gone(ENOTDIR));
            assert_eq!(run(&v, "/elsewhere", true).0, Node::Real);
        }

        #[test]
        fn symlinks_last_and_inner() {
            let v = tree();
            assert_eq!(
                run(&v, "/v/l", true),
                (idx(&v, "/v/a/f"), "/v/a/f".into(), true)
            );
            assert_eq!(
                run(&v, "/v/l", false),
                (idx(&v, "/v/l"), "/v/l".into(), false)
            );
            // An inner symlink is always followed, relative and absolute targets alike.
            assert_eq!(
                run(&v, "/v/d/f", false),
                (idx(&v, "/v/a/f"), "/v/a/f".into(), true)
            );
            assert_eq!(run(&v, "/v/abs/f", false).1, "/v/a/f");
            // `..` in a target is taken from the link's directory.
            assert_eq!(run(&v, "/v/a/up/l", true).1, "/v/a/f");
            // A link out of the view lands on the real filesystem, at its target.
            assert_eq!(
                run(&v, "/v/out/passwd", true),
                (Node::Real, "/etc/passwd".into(), true)
            );
        }

        #[test]
        fn loops_end_with_eloop() {
            let v = tree();
            assert_eq!(run(&v, "/v/loop1", true).0, Node::Gone(ELOOP));
            assert_eq!(run(&v, "/v/loop1", false).0, idx(&v, "/v/loop1"));
            assert_eq!(run(&v, "/v/loop1/x", false).0, Node::Gone(ELOOP));
        }

        #[test]
        fn the_upper_layer_wins() {
            let mut v = tree();
            v.upper.insert("/v/a/f", "whiteout");
            v.upper.insert("/v/a", "dir");
            v.upper.insert("/v/new", "file");
            v.upper.insert("/v/ul", "/v/a");
            assert_eq!(
                run(&v, "/v/a/f", true).0,
                Node::Gone(ENOENT),
                "deleted in the run"
            );
            assert_eq!(
                run(&v, "/v/a", true).0,
                idx(&v, "/v/a/"),
                "merged directory"
            );
            assert_eq!(run(&v, "/v/new", true).0, Node::Upper);
            assert_eq!(run(&v, "/v/ul", false).0, Node::Upper);
            assert_eq!(
                run(&v, "/v/ul", true),
                (idx(&v, "/v/a/"), "/v/a".into(), true)
            );
            // A directory made in the run where the manifest has a file or link.
            v.upper.insert("/v/l", "dir");
            assert_eq!(run(&v, "/v/l", true), (Node::Upper, "/v/l".into(), false));
            v.upper.insert("/v/a/f", "dir");
            assert_eq!(
                run(&v, "/v/a/f/x", true).0,
                Node::Gone(ENOENT),
                "missing from it"
            );
            v.upper.insert("/v/a/f/x", "file");
            assert_eq!(run(&v, "/v/a/f/x", true).0, Node::Upper, "made in it");
        }

        #[test]
        fn long_chains_stop() {
            let names: Vec<String> = (0..45).map(|i| alloc::format!("/v/c{i}")).collect();
            let targets: Vec<String> = (1..46).map(|i| alloc::format!("c{i}")).collect();
            let leaked: Vec<(&'static str, Option<&'static str>)> = names
                .iter()
                .zip(&targets)
                .map(|(n, t)| {
                    let n: &'static str = alloc::boxed::Box::leak(n.clone().into_boxed_str());
                    let t: &'static str = alloc::boxed::Box::leak(t.clone().into_boxed_str());
                    (n, Some(t))
                })
                .chain([("/v/", None), ("/v/c45", None)])
                .collect();
            let v = fake(&leaked);
            assert_eq!(
                run(&v, "/v/c10", true).0,
                idx(&v, "/v/c45"),
                "35 links: fine"
            );
            assert_eq!(
                run(&v, "/v/c0", true).0,
                Node::Gone(ELOOP),
                "45 links: too many"
            );
        }
    }
}
