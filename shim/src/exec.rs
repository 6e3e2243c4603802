//! Starting programs: `execve`, `execv`, `execvp`, `execvpe`, `posix_spawn`, `posix_spawnp`.
//!
//! * The shim stays in children: the environment handed to the kernel always carries
//!   `LD_PRELOAD` with this library and the `VRIFT_*` configuration, even if the program
//!   built a fresh environment.
//! * A virtual script (`#!`) is started the way the kernel would, but with its *virtual*
//!   path as the script argument (`#!/usr/bin/env node` → `/usr/bin/env node
//!   /proj/node_modules/.bin/tsc ...`), so the interpreter resolves modules next to the
//!   virtual path, not inside the store. The interpreter may itself be virtual.
//! * A virtual binary is executed from its blob (or an executable copy of it when the blob
//!   lacks the x bit) with `VRIFT_EXE` naming its virtual path, which the child's shim
//!   reports for `readlink("/proc/self/exe")`.
//!
//! These hooks may run between `vfork` and `exec`: everything they allocate comes from the
//! thread's exec region, never from `malloc` ([`crate::exec_alloc::exec_scope`]).

use libc::{c_char, c_int, c_void, pid_t};

use crate::path::{self, cbytes, PBuf};
use crate::state::State;
use crate::vfs::{self, Node};
use crate::{abs_of, guarded, real, trace};
use vrift_shim_core::env::EXE as ENV_EXE;

extern "C" {
    static environ: *const *const c_char;
}

/// Room for the rewritten argv and environment of one exec, bump-allocated; inside an exec
/// hook the buffer itself comes from the thread's exec region ([`crate::exec_alloc`]), never
/// from `malloc`.
struct Arena {
    base: *mut u8,
    cap: usize,
    used: usize,
}

impl Arena {
    fn new(cap: usize) -> Option<Arena> {
        let cap = cap.next_multiple_of(4096);
        let layout = std::alloc::Layout::from_size_align(cap, 8).ok()?;
        // SAFETY: a non-zero size.
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            return None;
        }
        Some(Arena {
            base: p,
            cap,
            used: 0,
        })
    }

    fn alloc(&mut self, n: usize) -> Option<*mut u8> {
        let start = self.used.next_multiple_of(8);
        let end = start.checked_add(n)?;
        if end > self.cap {
            return None;
        }
        self.used = end;
        // SAFETY: in bounds of the mapping.
        Some(unsafe { self.base.add(start) })
    }

    /// The concatenation of `parts`, NUL-terminated.
    fn cstr(&mut self, parts: &[&[u8]]) -> Option<*const c_char> {
        let n: usize = parts.iter().map(|p| p.len()).sum();
        let p = self.alloc(n + 1)?;
        let mut off = 0;
        for part in parts {
            // SAFETY: `p` has n + 1 bytes.
            unsafe { std::ptr::copy_nonoverlapping(part.as_ptr(), p.add(off), part.len()) };
            off += part.len();
        }
        // SAFETY: as above.
        unsafe { *p.add(n) = 0 };
        Some(p.cast())
    }

    fn ptrs(&mut self, v: &[*const c_char]) -> Option<*const *const c_char> {
        let p = self.alloc(std::mem::size_of_val(v) + 8)? as *mut *const c_char;
        // SAFETY: room for v.len() + 1 pointers.
        unsafe {
            std::ptr::copy_nonoverlapping(v.as_ptr(), p, v.len());
            *p.add(v.len()) = std::ptr::null();
        }
        Some(p)
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe {
            std::alloc::dealloc(
                self.base,
                std::alloc::Layout::from_size_align_unchecked(self.cap, 8),
            );
        };
    }
}

/// The entries of a NULL-terminated string array (bounded).
unsafe fn vec_of<'a>(a: *const *const c_char) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    if a.is_null() {
        return out;
    }
    let mut i = 0;
    while i < 1 << 20 {
        let p = *a.add(i);
        if p.is_null() {
            break;
        }
        out.push(cbytes(p));
        i += 1;
    }
    out
}

unsafe fn ptrs_of(a: *const *const c_char) -> Vec<*const c_char> {
    let mut out = Vec::new();
    if a.is_null() {
        return out;
    }
    let mut i = 0;
    while i < 1 << 20 {
        let p = *a.add(i);
        if p.is_null() {
            break;
        }
        out.push(p);
        i += 1;
    }
    out
}

fn key_of(kv: &[u8]) -> &[u8] {
    match kv.iter().position(|&b| b == b'=') {
        Some(i) => &kv[..i],
        None => kv,
    }
}

/// The value of an environment entry: empty for a bare `NAME` without `=` (programs do pass
/// such entries; slicing past the key would panic and lose the shim for the child).
fn value_of(kv: &[u8]) -> &[u8] {
    match kv.iter().position(|&b| b == b'=') {
        Some(i) => &kv[i + 1..],
        None => &[],
    }
}

/// `envp` with our variables guaranteed (and `VRIFT_EXE` set to `exe` or removed).
/// Returns the original pointer when nothing needs to change.
unsafe fn fix_env(
    st: &State,
    envp: *const *const c_char,
    exe: Option<&[u8]>,
    ar: &mut Arena,
) -> Option<*const *const c_char> {
    let ptrs = ptrs_of(envp);
    let shim: &[u8] = &st.shim_path;
    let mut ok = exe.is_none();
    let mut have_preload = shim.is_empty();
    let mut have = 0usize;
    let mut libpath: Option<*const c_char> = None;
    for &p in &ptrs {
        let kv = cbytes(p);
        let k = key_of(kv);
        if k == b"LD_LIBRARY_PATH" {
            libpath = library_path(st, value_of(kv), ar, b"LD_LIBRARY_PATH=");
            ok &= libpath.is_none();
        } else if k == b"LD_PRELOAD" {
            have_preload = have_preload
                || value_of(kv)
                    .split(|&b| b == b':' || b == b' ')
                    .any(|x| x == shim);
        } else if k == ENV_EXE.as_bytes() {
            ok = false;
        } else if st
            .env_pass
            .iter()
            .any(|e| key_of(e) == k && e[..e.len() - 1] == *kv)
        {
            have += 1;
        }
    }
    if ok && have_preload && have == st.env_pass.len() {
        return Some(envp);
    }
    let mut out: Vec<*const c_char> = Vec::with_capacity(ptrs.len() + 8);
    let mut old_preload: &[u8] = &[];
    for &p in &ptrs {
        let kv = cbytes(p);
        let k = key_of(kv);
        if k == b"LD_PRELOAD" {
            old_preload = value_of(kv);
            continue;
        }
        if k == ENV_EXE.as_bytes() || st.env_pass.iter().any(|e| key_of(e) == k) {
            continue;
        }
        match libpath {
            Some(l) if k == b"LD_LIBRARY_PATH" => out.push(l),
            _ => out.push(p),
        }
    }
    if !shim.is_empty() {
        let has = old_preload
            .split(|&b| b == b':' || b == b' ')
            .any(|x| x == shim);
        let v = if has || old_preload.is_empty() {
            if has {
                ar.cstr(&[b"LD_PRELOAD=", old_preload])?
            } else {
                ar.cstr(&[b"LD_PRELOAD=", shim])?
            }
        } else {
            ar.cstr(&[b"LD_PRELOAD=", shim, b":", old_preload])?
        };
        out.push(v);
    } else if !old_preload.is_empty() {
        out.push(ar.cstr(&[b"LD_PRELOAD=", old_preload])?);
    }
    for e in &st.env_pass {
        out.push(e.as_ptr().cast());
    }
    if let Some(x) = exe {
        out.push(ar.cstr(&[ENV_EXE.as_bytes(), b"=", x])?);
    }
    ar.ptrs(&out)
}

/// `<prefix><value>` (`LD_LIBRARY_PATH=…`) for a child when an entry of `value` is in the view: the
/// loader, which opens libraries itself, gets the real directory mirroring it
/// ([`crate::misc::library_dir`]). `None` when no entry is in the view.
unsafe fn library_path(
    st: &State,
    value: &[u8],
    ar: &mut Arena,
    prefix: &[u8],
) -> Option<*const c_char> {
    let mapped: Vec<(&[u8], Option<PBuf>)> = value
        .split(|&b| b == b':')
        .map(|e| (e, crate::misc::library_dir(st, e)))
        .collect();
    if mapped.iter().all(|(_, d)| d.is_none()) {
        return None;
    }
    let mut parts: Vec<&[u8]> = Vec::with_capacity(mapped.len() * 2 + 1);
    parts.push(prefix);
    for (i, (entry, dir)) in mapped.iter().enumerate() {
        if i > 0 {
            parts.push(b":");
        }
        parts.push(dir.as_ref().map_or(*entry, |d| d.as_bytes()));
    }
    ar.cstr(&parts)
}

/// `argv` for exec of `exe`; when `exe` is the dynamic loader run by hand (`ldd`:
/// `ld-linux… --verify PROGRAM`), with a PROGRAM in the view replaced by a real file holding
/// it and `--library-path` entries in the view by their mirrors.
unsafe fn loader_argv(
    st: &State,
    exe: &[u8],
    argv: *const *const c_char,
    ar: &mut Arena,
) -> *const *const c_char {
    if !vrift_shim_core::loader::is_loader(exe) {
        return argv;
    }
    loader_argv_rewritten(st, argv, ar).unwrap_or(argv)
}

unsafe fn loader_argv_rewritten(
    st: &State,
    argv: *const *const c_char,
    ar: &mut Arena,
) -> Option<*const *const c_char> {
    use vrift_shim_core::loader::{classify, Arg};
    let args = vec_of(argv);
    let mut out = ptrs_of(argv);
    let mut changed = false;
    for i in 1..args.len() {
        match classify(&args, i) {
            Arg::Program => {
                let Some(f) = real_file_of(st, args[i]) else {
                    continue;
                };
                out[i] = ar.cstr(&[f.as_bytes()])?;
                changed = true;
            }
            Arg::LibraryPath => {
                let Some(v) = library_path(st, args[i], ar, b"") else {
                    continue;
                };
                out[i] = v;
                changed = true;
            }
            Arg::Other => {}
        }
    }
    if changed {
        ar.ptrs(&out)
    } else {
        None
    }
}

/// A real file with the content of the view file `raw` (for programs that open it with no
/// preload in between: the loader), placed so its `$ORIGIN` dependencies resolve.
fn real_file_of(st: &State, raw: &[u8]) -> Option<PBuf> {
    let mut a = abs_of(st, libc::AT_FDCWD, raw)?;
    let r = vfs::resolve(st, &mut a.p, true);
    match r.node {
        Node::V { layer, idx } => {
            let e = vfs::entry(st, layer, idx)?;
            if e.is_dir() {
                return None;
            }
            let blob = vfs::blob_path(st, &e)?;
            let file = exec_file(st, &blob)?;
            Some(crate::misc::exec_mirror(st, r.path.as_bytes(), &blob, &file).unwrap_or(file))
        }
        Node::Upper => st.upper.as_ref()?.mirror_of(r.path.as_bytes()),
        Node::Real if r.moved => PBuf::from(r.path.as_bytes()),
        _ => None,
    }
}

/// Space for rewriting one exec: environment and arguments plus slack.
unsafe fn arena_for(argv: *const *const c_char, envp: *const *const c_char) -> Option<Arena> {
    let mut n = 16384usize;
    for s in vec_of(argv).iter().chain(vec_of(envp).iter()) {
        n += s.len() + 1 + 16;
    }
    Arena::new(n)
}

/// What to hand the kernel for exec of (`path`, `argv`, `envp`).
struct Prepared {
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
}

fn read_head(p: &PBuf, buf: &mut [u8]) -> usize {
    // SAFETY: real functions on valid buffers; fd closed before returning.
    unsafe {
        let fd = real::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0);
        if fd < 0 {
            return 0;
        }
        let n = real::read(fd, buf.as_mut_ptr().cast(), buf.len());
        real::close(fd);
        n.max(0) as usize
    }
}

/// Parses `#!interp arg` from the head of a file.
fn shebang(head: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let rest = head.strip_prefix(b"#!")?;
    let line = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => &rest[..i],
        None => rest,
    };
    let is_ws = |b: &u8| *b == b' ' || *b == b'\t' || *b == b'\r';
    let start = line.iter().position(|b| !is_ws(b))?;
    let line = &line[start..];
    let end = line.iter().position(is_ws).unwrap_or(line.len());
    let interp = &line[..end];
    let arg = &line[end..];
    let arg = match arg.iter().position(|b| !is_ws(b)) {
        Some(s) => {
            let a = &arg[s..];
            let e = a.iter().rposition(|b| !is_ws(b)).map_or(0, |i| i + 1);
            Some(&a[..e])
        }
        None => None,
    };
    if interp.is_empty() {
        None
    } else {
        Some((interp, arg))
    }
}

/// An executable real file with the blob's content: the blob itself, or a copy with the
/// x bit in `<upper>/exec/` when the blob has none.
fn exec_file(st: &State, blob: &PBuf) -> Option<PBuf> {
    // SAFETY: valid buffer.
    if unsafe { real::access(blob.as_ptr(), libc::X_OK) } == 0 {
        return PBuf::from(blob.as_bytes());
    }
    let up = st.upper.as_ref()?;
    let mut dst = up.sub(b"exec")?;
    crate::upper::mkdir_p(dst.as_bytes());
    dst.push(b"/")?;
    dst.push(path::file_name(blob.as_bytes()))?;
    // SAFETY: a valid buffer.
    if unsafe { real::access(dst.as_ptr(), libc::X_OK) } == 0 {
        return Some(dst);
    }
    crate::misc::copy_file(blob, &dst).then_some(dst)
}

/// Starts a script the way the kernel would — `interp [arg] path args...` — but through
/// `prepare` again, so an interpreter that is itself in the view is served.
#[allow(clippy::too_many_arguments)]
unsafe fn by_interpreter(
    st: &State,
    interp: &[u8],
    arg: Option<&[u8]>,
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    ar: &mut Arena,
    depth: u32,
) -> Result<Prepared, c_int> {
    if depth > 4 {
        return Err(libc::ELOOP);
    }
    let old = ptrs_of(argv);
    let mut v: Vec<*const c_char> = Vec::with_capacity(old.len() + 3);
    let ip = ar.cstr(&[interp]).ok_or(libc::E2BIG)?;
    v.push(ip);
    if let Some(x) = arg {
        v.push(ar.cstr(&[x]).ok_or(libc::E2BIG)?);
    }
    v.push(path);
    v.extend(old.iter().skip(1));
    let nargv = ar.ptrs(&v).ok_or(libc::E2BIG)?;
    prepare(st, ip, nargv, envp, ar, depth + 1)
}

/// A real script (on disk, or written during the run into the upper layer — `pip install`'s
/// console scripts) whose `#!` names an interpreter in the view (`#!/proj/venv/bin/python`
/// of an offloaded venv): the kernel cannot open that interpreter, so the script is started
/// through it here. `None` when the file is no script or its interpreter is on disk.
unsafe fn virtual_interpreter(
    st: &State,
    file: &PBuf,
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    ar: &mut Arena,
    depth: u32,
) -> Option<Result<Prepared, c_int>> {
    let mut head = [0u8; 512];
    let n = read_head(file, &mut head);
    let (interp, arg) = shebang(&head[..n])?;
    let mut a = abs_of(st, libc::AT_FDCWD, interp)?;
    let r = vfs::resolve(st, &mut a.p, true);
    // A venv's `bin/python` is a virtual symlink to a real interpreter: reachable for us,
    // not for the kernel, which sees no `bin/` at all.
    if matches!(r.node, Node::Real) && !r.moved {
        return None;
    }
    Some(by_interpreter(st, interp, arg, path, argv, envp, ar, depth))
}

unsafe fn prepare(
    st: &State,
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    ar: &mut Arena,
    depth: u32,
) -> Result<Prepared, c_int> {
    let raw = cbytes(path);
    let Some(mut a) = abs_of(st, libc::AT_FDCWD, raw) else {
        let envp = fix_env(st, envp, None, ar).ok_or(libc::E2BIG)?;
        let argv = loader_argv(st, raw, argv, ar);
        return Ok(Prepared { path, argv, envp });
    };
    let r = vfs::resolve(st, &mut a.p, true);
    match r.node {
        Node::V { layer, idx } => {
            let e = vfs::entry(st, layer, idx).ok_or(libc::ENOENT)?;
            if e.is_dir() || vfs::mode_of(&e) & 0o111 == 0 {
                return Err(libc::EACCES);
            }
            let blob = vfs::blob_path(st, &e).ok_or(libc::ENAMETOOLONG)?;
            let mut head = [0u8; 512];
            let n = read_head(&blob, &mut head);
            if let Some((interp, arg)) = shebang(&head[..n]) {
                return by_interpreter(st, interp, arg, path, argv, envp, ar, depth);
            }
            let file = exec_file(st, &blob).ok_or(libc::EACCES)?;
            let file =
                crate::misc::exec_mirror(st, r.path.as_bytes(), &blob, &file).unwrap_or(file);
            let p = ar.cstr(&[file.as_bytes()]).ok_or(libc::E2BIG)?;
            let envp = fix_env(st, envp, Some(r.path.as_bytes()), ar).ok_or(libc::E2BIG)?;
            Ok(Prepared {
                path: p,
                argv,
                envp,
            })
        }
        Node::Gone(e) => Err(e),
        Node::Upper => {
            let mp = st
                .upper
                .as_ref()
                .and_then(|u| u.mirror_of(r.path.as_bytes()))
                .ok_or(libc::ENOENT)?;
            if let Some(p) = virtual_interpreter(st, &mp, path, argv, envp, ar, depth) {
                return p;
            }
            let p = ar.cstr(&[mp.as_bytes()]).ok_or(libc::E2BIG)?;
            let envp = fix_env(st, envp, None, ar).ok_or(libc::E2BIG)?;
            Ok(Prepared {
                path: p,
                argv,
                envp,
            })
        }
        Node::Real => {
            if let Some(p) = virtual_interpreter(st, r.path, path, argv, envp, ar, depth) {
                return p;
            }
            let argv = loader_argv(st, r.path.as_bytes(), argv, ar);
            let p = if !r.moved && a.orig_ok {
                path
            } else {
                ar.cstr(&[r.path.as_bytes()]).ok_or(libc::E2BIG)?
            };
            let envp = fix_env(st, envp, None, ar).ok_or(libc::E2BIG)?;
            Ok(Prepared {
                path: p,
                argv,
                envp,
            })
        }
    }
}

/// [`prepare`], then what no preload can do later: a statically linked program (Go's
/// esbuild, busybox-static, musl builds) never loads the shim, so one started where the view
/// matters — its working directory in a manifest root, the program or a path argument only
/// in the view — would see nothing there and go wrong silently. It runs instead through
/// `vrift __exec-static`, which gives it the same layers in a mount namespace and brings what
/// it writes back into the run's upper layer (cli/src/isolate/static_exec.rs). Without the
/// `vrift` binary (`VRIFT_BIN`) it is refused with one line naming it and `--isolate`.
/// Static programs that do not touch the view (a helper given real paths) run as usual.
unsafe fn prepare_checked(
    st: &State,
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    ar: &mut Arena,
) -> Result<Prepared, c_int> {
    let p = prepare(st, path, argv, envp, ar, 0)?;
    let exe = PBuf::from(cbytes(p.path)).ok_or(libc::ENAMETOOLONG)?;
    if !is_static_file(&exe) {
        return Ok(p);
    }
    let mut vcwd = PBuf::new();
    let _ = path::cwd_into(&mut vcwd);
    let args = vec_of(p.argv);
    let touched: Option<&[u8]> = if path::cwd_mirrored() || st.in_view(vcwd.as_bytes()) {
        Some(b".")
    } else if only_in_view(st, cbytes(path)) {
        Some(cbytes(path))
    } else {
        args.iter().skip(1).find_map(|a| mentions_view(st, a))
    };
    let Some(what) = touched else {
        crate::report::exec_static(cbytes(path), false, false);
        return Ok(p);
    };
    if let Some(bin) = &st.vrift_bin {
        if let Some(h) = through_vrift(st, bin, &vcwd, &p, &args, ar) {
            crate::report::exec_static(cbytes(path), true, false);
            return Ok(h);
        }
    }
    crate::report::exec_static(cbytes(path), true, true);
    let mut msg = PBuf::new();
    for part in [
        &b"vrift: "[..],
        cbytes(path),
        b" is statically linked, so it cannot see the view (",
        what,
        b" is served from the store); run it with `vrift run --isolate`\n",
    ] {
        if msg.push(part).is_none() {
            break;
        }
    }
    real::write(2, msg.as_ptr().cast(), msg.len());
    Err(libc::EPERM)
}

/// The exec of `vrift __exec-static VCWD EXE ARGV...` in place of the static program `p`,
/// with the shim taken out of `LD_PRELOAD` (`vrift` itself must not run on the view).
unsafe fn through_vrift(
    st: &State,
    bin: &[u8],
    vcwd: &PBuf,
    p: &Prepared,
    args: &[&[u8]],
    ar: &mut Arena,
) -> Option<Prepared> {
    let bin = bin.strip_suffix(b"\0").unwrap_or(bin);
    let mut argv: Vec<*const c_char> = Vec::with_capacity(args.len() + 4);
    argv.push(ar.cstr(&[bin])?);
    argv.push(ar.cstr(&[b"__exec-static"])?);
    argv.push(ar.cstr(&[vcwd.as_bytes()])?);
    argv.push(p.path);
    argv.extend(ptrs_of(p.argv));
    let mut envp: Vec<*const c_char> = Vec::new();
    for e in ptrs_of(p.envp) {
        let kv = cbytes(e);
        if key_of(kv) != b"LD_PRELOAD" {
            envp.push(e);
            continue;
        }
        let rest: Vec<&[u8]> = value_of(kv)
            .split(|&b| b == b':' || b == b' ')
            .filter(|x| !x.is_empty() && *x != &*st.shim_path)
            .collect();
        if rest.is_empty() {
            continue;
        }
        let mut parts: Vec<&[u8]> = vec![b"LD_PRELOAD="];
        for (i, r) in rest.iter().enumerate() {
            if i > 0 {
                parts.push(b":");
            }
            parts.push(r);
        }
        envp.push(ar.cstr(&parts)?);
    }
    Some(Prepared {
        path: ar.cstr(&[bin])?,
        argv: ar.ptrs(&argv)?,
        envp: ar.ptrs(&envp)?,
    })
}

/// Whether the real file `p` is a statically linked ELF program.
fn is_static_file(p: &PBuf) -> bool {
    crate::misc::with_reader(p, |read| vrift_shim_core::elf::is_static(read)) == Some(true)
}

/// The first word of the argument `a` that names, or lies below, something only the view
/// holds. Arguments are split at blanks, shell punctuation, `=` and `:`, so a path given as
/// `--opt=PATH`, inside a `sh -c` script or in a `PATH`-like list counts; a word's parents
/// count too, so `v/new.txt` touches the view when `v` exists only there.
fn mentions_view<'a>(st: &State, a: &'a [u8]) -> Option<&'a [u8]> {
    a.split(|b| b" \t\n;|&<>()'\"`=:,".contains(b))
        .filter(|w| !w.is_empty() && !w.starts_with(b"-") && w.len() < 4096)
        .find(|w| {
            let mut p: &[u8] = w;
            loop {
                if only_in_view(st, p) {
                    return true;
                }
                match p.iter().rposition(|&b| b == b'/') {
                    Some(i) if i > 0 => p = &p[..i],
                    _ => return false,
                }
            }
        })
}

/// Whether the path `a` names something the view holds that is not on disk at that path.
fn only_in_view(st: &State, a: &[u8]) -> bool {
    if a.is_empty() {
        return false;
    }
    let Some(mut abs) = abs_of(st, libc::AT_FDCWD, a) else {
        return false;
    };
    if !st.in_view(abs.p.as_bytes()) {
        return false;
    }
    let on_disk = {
        // SAFETY: all-zero bytes are a valid `struct stat`.
        let mut s: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid buffers.
        unsafe { real::lstat(abs.p.as_ptr(), &mut s) == 0 }
    };
    !on_disk
        && matches!(
            vfs::resolve(st, &mut abs.p, true).node,
            Node::V { .. } | Node::Upper
        )
}

fn execve_impl(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> Option<c_int> {
    crate::exec_alloc::exec_scope(|| execve_scoped(path, argv, envp))
}

fn execve_scoped(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> Option<c_int> {
    let prepared = guarded(|st| {
        // SAFETY: the caller's arrays.
        unsafe {
            let mut ar = arena_for(argv, envp)?;
            Some(prepare_checked(st, path, argv, envp, &mut ar).map(|p| (p, ar)))
        }
    })?;
    // The re-entry guard is released before the real call: after `vfork` the child shares
    // the parent's thread-local storage, and a successful exec never comes back to reset it.
    match prepared {
        Ok((p, ar)) => {
            // SAFETY: pointers into the caller's arrays or our arena, alive until the call
            // returns.
            let rc = unsafe { real::execve(p.path, p.argv, p.envp) };
            drop(ar);
            Some(rc)
        }
        Err(e) => crate::fail(e),
    }
}

hooks! {
    fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int
        => do_execve(path, argv, envp);
    fn execv(path: *const c_char, argv: *const *const c_char) -> c_int
        => do_execve(path, argv, environ);
    fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int, trace file
        => execvp_impl(file, argv, environ), else real::execvp(file, argv);
    fn execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int, trace file
        => execvp_impl(file, argv, envp), else real::execvpe(file, argv, envp);
}

pub(crate) unsafe fn do_execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    trace("execve", path);
    execve_impl(path, argv, envp).unwrap_or_else(|| real::execve(path, argv, envp))
}

/// `execvp`/`execvpe` when the shim is active (`None`: it is not).
unsafe fn execvp_impl(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> Option<c_int> {
    crate::state::get()?;
    Some(execvpe_impl(file, argv, envp))
}

/// PATH search the way glibc's `execvpe` does it, but virtual-aware: each candidate goes
/// through our `execve`.
unsafe fn execvpe_impl(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    crate::exec_alloc::exec_scope(|| execvpe_scoped(file, argv, envp))
}

unsafe fn execvpe_scoped(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let f = cbytes(file);
    if f.is_empty() {
        real::set_errno(libc::ENOENT);
        return -1;
    }
    if f.contains(&b'/') {
        return do_execve(file, argv, envp);
    }
    let pathvar = libc::getenv(c"PATH".as_ptr());
    let dirs: &[u8] = if pathvar.is_null() {
        b"/bin:/usr/bin"
    } else {
        cbytes(pathvar)
    };
    let mut saw_eacces = false;
    for d in dirs.split(|&b| b == b':') {
        let mut cand = PBuf::new();
        let d: &[u8] = if d.is_empty() { b"." } else { d };
        if cand.push(d).is_none() || cand.push(b"/").is_none() || cand.push(f).is_none() {
            continue;
        }
        do_execve(cand.as_ptr(), argv, envp);
        match real::errno() {
            libc::EACCES => saw_eacces = true,
            libc::ENOENT
            | libc::ENOTDIR
            | libc::ESTALE
            | libc::ENODEV
            | libc::ETIMEDOUT
            | libc::ELOOP => {}
            libc::ENOEXEC => {
                // Not a binary, no shebang: the shell runs it (as glibc does).
                let old = ptrs_of(argv);
                let mut v: Vec<*const c_char> = vec![c"/bin/sh".as_ptr(), cand.as_ptr()];
                v.extend(old.iter().skip(1));
                v.push(std::ptr::null());
                return do_execve(c"/bin/sh".as_ptr(), v.as_ptr(), envp);
            }
            _ => return -1,
        }
    }
    real::set_errno(if saw_eacces {
        libc::EACCES
    } else {
        libc::ENOENT
    });
    -1
}

fn spawn_impl(
    pid: *mut pid_t,
    path: *const c_char,
    fa: *const c_void,
    at: *const c_void,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> Option<c_int> {
    crate::exec_alloc::exec_scope(|| spawn_scoped(pid, path, fa, at, argv, envp))
}

fn spawn_scoped(
    pid: *mut pid_t,
    path: *const c_char,
    fa: *const c_void,
    at: *const c_void,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> Option<c_int> {
    guarded(|st| {
        // SAFETY: the caller's arrays; the arena outlives the call (posix_spawn has exec'd
        // or failed by the time it returns).
        unsafe {
            let mut ar = arena_for(argv, envp)?;
            match prepare_checked(st, path, argv, envp, &mut ar) {
                Ok(p) => Some(real::posix_spawn(pid, p.path, fa, at, p.argv, p.envp)),
                Err(e) => Some(e),
            }
        }
    })
}

hooks! {
    fn posix_spawn(
        pid: *mut pid_t,
        path: *const c_char,
        fa: *const c_void,
        at: *const c_void,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> c_int => do_posix_spawn(pid, path, fa, at, argv, envp);
    fn posix_spawnp(
        pid: *mut pid_t,
        file: *const c_char,
        fa: *const c_void,
        at: *const c_void,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> c_int => do_posix_spawnp(pid, file, fa, at, argv, envp);
    /// For `vrift run`: the same as `posix_spawnp`, exported under a private name so the CLI
    /// can start the command through the shim's exec logic after `dlopen`ing it.
    fn vrift_shim_spawnp(
        pid: *mut pid_t,
        file: *const c_char,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> c_int => do_posix_spawnp(pid, file, std::ptr::null(), std::ptr::null(), argv, envp);
}

// Internal calls go through these private functions, never through our exported symbols:
// when the library is `dlopen`ed (by `vrift run`) rather than preloaded, a call to an
// exported name may bind to libc's definition instead of ours.
unsafe fn do_posix_spawn(
    pid: *mut pid_t,
    path: *const c_char,
    fa: *const c_void,
    at: *const c_void,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    trace("posix_spawn", path);
    spawn_impl(pid, path, fa, at, argv, envp)
        .unwrap_or_else(|| real::posix_spawn(pid, path, fa, at, argv, envp))
}

unsafe fn do_posix_spawnp(
    pid: *mut pid_t,
    file: *const c_char,
    fa: *const c_void,
    at: *const c_void,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    trace("posix_spawnp", file);
    let f = cbytes(file);
    if crate::state::get().is_none() {
        return real::posix_spawnp(pid, file, fa, at, argv, envp);
    }
    if f.contains(&b'/') {
        return do_posix_spawn(pid, file, fa, at, argv, envp);
    }
    let pathvar = libc::getenv(c"PATH".as_ptr());
    let dirs: &[u8] = if pathvar.is_null() {
        b"/bin:/usr/bin"
    } else {
        cbytes(pathvar)
    };
    for d in dirs.split(|&b| b == b':') {
        let mut cand = PBuf::new();
        let d: &[u8] = if d.is_empty() { b"." } else { d };
        if cand.push(d).is_none() || cand.push(b"/").is_none() || cand.push(f).is_none() {
            continue;
        }
        let ok = crate::stat::access_impl(libc::AT_FDCWD, cand.as_ptr(), libc::X_OK, 0)
            .unwrap_or_else(|| real::access(cand.as_ptr(), libc::X_OK));
        if ok != 0 {
            continue;
        }
        let mut s: libc::stat = std::mem::zeroed();
        let is_dir = crate::stat::fstatat_impl(libc::AT_FDCWD, cand.as_ptr(), &mut s, 0)
            .unwrap_or_else(|| real::stat(cand.as_ptr(), &mut s))
            == 0
            && s.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir {
            continue;
        }
        return do_posix_spawn(pid, cand.as_ptr(), fa, at, argv, envp);
    }
    libc::ENOENT
}
