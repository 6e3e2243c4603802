//! `vrift checkout`: a manifest turned back into a real tree ("restore node_modules in CI"),
//! through the one materializer ([`crate::materialize`]).

use std::os::fd::AsFd;
use std::path::Path;

use vrift_cas::Cas;
use vrift_manifest::Manifest;

use crate::error::PipelineError;
use crate::materialize::{self, Options};
use crate::report::Counters;

pub use crate::materialize::Report as CheckoutReport;

/// Writes the tree of `manifest` at `dest`, which must not exist or be an empty directory.
/// Per-entry failures are counted in the report and named in `counters`; only a destination
/// that cannot be used at all is an `Err`.
pub fn checkout(
    cas: &Cas,
    manifest: &Manifest,
    dest: &Path,
    opts: &Options,
    counters: &Counters,
) -> Result<CheckoutReport, PipelineError> {
    let dest_fd = materialize::open_empty_dest(dest).map_err(|e| PipelineError::io(dest, e))?;
    let nodes = materialize::manifest_nodes(manifest);
    Ok(materialize::materialize(
        cas, dest, dest_fd, &nodes, opts, counters,
    ))
}

/// [`checkout`] over an existing tree (`checkout --replace`, `restore`); see [`replace_dir`].
/// Directories of the old tree that already hold what the manifest says are moved into the
/// new tree instead of being built again ([`crate::reuse`]); if the new tree is not put in
/// place after all, they are moved back, so the old tree is left as it was.
pub fn checkout_replacing(
    cas: &Cas,
    manifest: &Manifest,
    dest: &Path,
    opts: &Options,
    counters: &Counters,
) -> Result<CheckoutReport, PipelineError> {
    use crate::dirs::{open_root, DirChain};
    let mut report = None;
    // The tree being replaced, when it is a real directory (a symlink named as `dest` is
    // replaced as a whole, never entered).
    let old = rustix::fs::openat(
        rustix::fs::CWD,
        dest,
        rustix::fs::OFlags::PATH
            | rustix::fs::OFlags::DIRECTORY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok();
    let mover = std::cell::RefCell::new(None::<crate::reuse::Mover>);
    replace_dir_undoing(
        dest,
        |at| {
            let old = old.as_ref().filter(|_| at != dest);
            let dest_fd = materialize::open_empty_dest(at).map_err(|e| PipelineError::io(at, e))?;
            let nodes = materialize::manifest_nodes(manifest);
            let reusable = match old {
                Some(o) => crate::reuse::find(cas, o.as_fd(), &nodes, opts),
                None => Default::default(),
            };
            let (r, m) = materialize::materialize_over(
                cas,
                at,
                dest_fd,
                &nodes,
                old.map(|o| materialize::Old {
                    root: o.as_fd(),
                    reusable: &reusable,
                }),
                opts,
                counters,
            );
            *mover.borrow_mut() = m;
            let complete = r.errors == 0;
            report = Some(r);
            Ok::<bool, PipelineError>(complete)
        },
        |new| {
            if let Some(m) = mover.borrow_mut().as_mut().filter(|m| m.taken() > 0) {
                if let Ok(fd) = open_root(new) {
                    m.give_back(&mut DirChain::new(fd));
                }
            }
        },
    )?;
    Ok(report.unwrap_or_default())
}

/// Puts a tree built by `build` at `dest`, which may exist with content: when it does, the
/// new tree is built beside it (same parent, so the same file system), then swapped with it
/// in one `renameat2(RENAME_EXCHANGE)` — at no moment is `dest` missing or half-written — and
/// the old tree is deleted after. `build` gets an empty directory (or a path that does not
/// exist) and says whether the tree is complete; an incomplete one leaves `dest` as it was.
pub fn replace_dir<E: From<PipelineError>>(
    dest: &Path,
    build: impl FnOnce(&Path) -> Result<bool, E>,
) -> Result<(), E> {
    replace_dir_undoing(dest, build, |_| {})
}

/// [`replace_dir`], calling `undo` with the new tree's path before that tree is deleted
/// unused (a build that failed or is incomplete, a swap that failed): a build that took
/// things from the old tree puts them back.
fn replace_dir_undoing<E: From<PipelineError>>(
    dest: &Path,
    build: impl FnOnce(&Path) -> Result<bool, E>,
    undo: impl FnOnce(&Path),
) -> Result<(), E> {
    let empty = match std::fs::read_dir(dest) {
        Ok(mut rd) => rd.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(PipelineError::io(dest, e).into()),
    };
    if empty {
        build(dest)?;
        return Ok(());
    }
    let (parent, name) = match (dest.parent(), dest.file_name()) {
        (Some(p), Some(n)) => (
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            },
            n,
        ),
        _ => {
            let e =
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "cannot replace this path");
            return Err(PipelineError::io(dest, e).into());
        }
    };
    let side = |what: &str| {
        let mut n = std::ffi::OsString::from(".");
        n.push(name);
        n.push(format!(".vrift-{what}-{}", std::process::id()));
        parent.join(n)
    };
    let new = side("new");
    let _ = vrift_cas::clean::remove_tree(&new);
    let abandon = |p: &Path| {
        undo(p);
        let _ = vrift_cas::clean::remove_tree(p);
    };
    let complete = match build(&new) {
        Ok(c) => c,
        Err(e) => {
            abandon(&new);
            return Err(e);
        }
    };
    if !complete {
        abandon(&new);
        return Ok(());
    }
    let io = |p: &Path, e| -> E { PipelineError::io(p, e).into() };
    match exchange(&new, dest) {
        // `new` now names the old tree.
        Ok(()) => vrift_cas::clean::remove_tree(&new).map_err(|e| io(&new, e))?,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
            // No RENAME_EXCHANGE here: two renames (dest is missing for an instant).
            let old = side("old");
            if let Err(e) = std::fs::rename(dest, &old) {
                abandon(&new);
                return Err(io(dest, e));
            }
            if let Err(e) = std::fs::rename(&new, dest) {
                let _ = std::fs::rename(&old, dest);
                abandon(&new);
                return Err(io(dest, e));
            }
            vrift_cas::clean::remove_tree(&old).map_err(|e| io(&old, e))?;
        }
        Err(e) => {
            abandon(&new);
            return Err(io(dest, e));
        }
    }
    Ok(())
}

/// Swaps the names `a` and `b` atomically.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    Ok(renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replace_dir_swaps_a_complete_tree_and_keeps_the_old_one_otherwise() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("nm");
        // Missing: built in place.
        replace_dir::<PipelineError>(&dest, |at| {
            assert_eq!(at, dest);
            std::fs::create_dir_all(at.join("a")).unwrap();
            Ok(true)
        })
        .unwrap();
        assert_eq!(names(&dest), ["a"]);
        // Not empty: built beside it, then swapped in; nothing left beside.
        replace_dir::<PipelineError>(&dest, |at| {
            assert_ne!(at, dest);
            std::fs::create_dir_all(at.join("b")).unwrap();
            Ok(true)
        })
        .unwrap();
        assert_eq!(names(&dest), ["b"]);
        assert_eq!(names(t.path()), ["nm"]);
        // An incomplete build, or a failed one, leaves DIR as it was.
        replace_dir::<PipelineError>(&dest, |at| {
            std::fs::create_dir_all(at.join("c")).unwrap();
            Ok(false)
        })
        .unwrap();
        let failed = replace_dir::<PipelineError>(&dest, |at| {
            std::fs::create_dir_all(at.join("d")).unwrap();
            Err(PipelineError::io(at, std::io::Error::other("no")))
        });
        assert!(failed.is_err());
        assert_eq!(names(&dest), ["b"]);
        assert_eq!(names(t.path()), ["nm"]);
    }
}
