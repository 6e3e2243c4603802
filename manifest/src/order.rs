//! Path ordering and path-shape helpers.
//!
//! Manifest entries are sorted *component-wise*: paths are compared component by
//! component, so a directory's whole subtree sorts contiguously right after the
//! directory itself (`a` < `a/b` < `a/b/c` < `a/b.txt` < `a.txt`). That is what lets
//! `subtree_end` describe a subtree as an index range and lets a directory's direct
//! children be listed by hopping from one child's subtree end to the next.
//!
//! Comparing component by component is the same as a byte-wise comparison in which
//! `/` ranks below every other byte; [`cmp_paths`] implements it that way, with no
//! allocation and no splitting.

use std::cmp::Ordering;

/// Rank of a byte in the component-wise order: `/` first, then every byte in order.
#[inline]
fn rank(b: u8) -> u16 {
    if b == b'/' {
        0
    } else {
        u16::from(b) + 1
    }
}

/// Component-wise comparison of two relative paths (raw bytes).
#[inline]
pub fn cmp_paths(a: &[u8], b: &[u8]) -> Ordering {
    let common = common_prefix_len(a, b);
    match (a.get(common), b.get(common)) {
        (Some(&x), Some(&y)) => rank(x).cmp(&rank(y)),
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
    }
}

/// Length of the longest common prefix, comparing 8 bytes at a time (paths under
/// node_modules share long prefixes, and lookups do ~17 comparisons each).
#[inline]
fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut i = 0;
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let mut wa = [0u8; 8];
        let mut wb = [0u8; 8];
        wa.copy_from_slice(ca);
        wb.copy_from_slice(cb);
        let diff = u64::from_le_bytes(wa) ^ u64::from_le_bytes(wb);
        if diff != 0 {
            return i + (diff.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + a[i..]
        .iter()
        .zip(&b[i..])
        .take_while(|(x, y)| x == y)
        .count()
}

/// True if `anc` is a *proper* ancestor of `path` (the root `""` is everyone's ancestor).
#[inline]
pub fn is_ancestor(anc: &[u8], path: &[u8]) -> bool {
    if anc.is_empty() {
        return !path.is_empty();
    }
    path.len() > anc.len() && path.starts_with(anc) && path[anc.len()] == b'/'
}

/// Parent of a relative path: `a/b/c` → `a/b`, `a` → `""`, and `""` (the root) → `None`.
#[inline]
pub fn parent(path: &[u8]) -> Option<&[u8]> {
    if path.is_empty() {
        return None;
    }
    Some(match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => &[],
    })
}

/// Last component of a relative path (`""` for the root).
#[inline]
pub fn file_name(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// Strip trailing slashes, so `a/b/` and `a/b` name the same entry.
#[inline]
pub fn trim_trailing_slashes(mut path: &[u8]) -> &[u8] {
    while let [rest @ .., b'/'] = path {
        path = rest;
    }
    path
}

/// Checks that `path` is a well-formed relative manifest path: either `""` (the root) or
/// non-empty components separated by single `/`, none of them `.` or `..`, and no NUL
/// byte (no Unix path can hold one). Returns a description of the first problem.
pub fn check_rel_path(path: &[u8]) -> Result<(), &'static str> {
    if path.is_empty() {
        return Ok(());
    }
    if path.contains(&0) {
        return Err("path contains a NUL byte");
    }
    if path[0] == b'/' {
        return Err("path is absolute (leading '/')");
    }
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" => return Err("path has an empty component (trailing '/' or '//')"),
            b"." | b".." => return Err("path has a '.' or '..' component"),
            _ => {}
        }
    }
    Ok(())
}

/// What [`check_successor`] found wrong with a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuccessorError {
    /// The path itself is malformed (see [`check_rel_path`]).
    Malformed(&'static str),
    /// The path does not sort strictly after its predecessor.
    NotAfter,
}

/// Checks, in one pass over the bytes that differ, that `path` is a well-formed relative
/// path (as [`check_rel_path`], never empty) sorting strictly after `prev` component-wise,
/// and returns the length of its parent (`parent(path)` is `&path[..len]`).
///
/// `prev` must itself be well-formed (or `""`): its validated prefix is not looked at
/// again, which is what keeps validating a 100k-entry manifest in the order of a
/// millisecond (paths under `node_modules` share long prefixes with their predecessor).
pub fn check_successor(prev: &[u8], path: &[u8]) -> Result<usize, SuccessorError> {
    use SuccessorError::*;
    if path.is_empty() {
        return Err(Malformed("path is empty"));
    }
    let common = common_prefix_len(prev, path);
    match (prev.get(common), path.get(common)) {
        (Some(&x), Some(&y)) if rank(x) < rank(y) => {}
        (None, Some(_)) => {}
        _ => return Err(NotAfter),
    }
    // The first component that differs starts after the last '/' of the common prefix;
    // everything before it is a prefix of `prev`, already checked.
    let start = path[..common]
        .iter()
        .rposition(|&b| b == b'/')
        .map_or(0, |i| i + 1);
    if start == 0 && path[0] == b'/' {
        return Err(Malformed("path is absolute (leading '/')"));
    }
    let mut comp = start;
    let mut parent_len = start.saturating_sub(1);
    for (i, &b) in path.iter().enumerate().skip(start) {
        match b {
            0 => return Err(Malformed("path contains a NUL byte")),
            b'/' => {
                check_component(&path[comp..i])?;
                parent_len = i;
                comp = i + 1;
            }
            _ => {}
        }
    }
    check_component(&path[comp..])?;
    Ok(parent_len)
}

fn check_component(c: &[u8]) -> Result<(), SuccessorError> {
    match c {
        b"" => Err(SuccessorError::Malformed(
            "path has an empty component (trailing '/' or '//')",
        )),
        b"." | b".." => Err(SuccessorError::Malformed(
            "path has a '.' or '..' component",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_components(a: &[u8], b: &[u8]) -> Ordering {
        let ca: Vec<&[u8]> = if a.is_empty() {
            vec![]
        } else {
            a.split(|&c| c == b'/').collect()
        };
        let cb: Vec<&[u8]> = if b.is_empty() {
            vec![]
        } else {
            b.split(|&c| c == b'/').collect()
        };
        ca.cmp(&cb)
    }

    #[test]
    fn documented_order() {
        let mut v: Vec<&[u8]> = vec![
            b"a.txt", b"a/b.txt", b"a/b/c", b"a", b"", b"a/b", b"a-b", b"a/b/c/d",
        ];
        v.sort_by(|a, b| cmp_paths(a, b));
        let want: Vec<&[u8]> = vec![
            b"", b"a", b"a/b", b"a/b/c", b"a/b/c/d", b"a/b.txt", b"a-b", b"a.txt",
        ];
        assert_eq!(v, want);
    }

    #[test]
    fn matches_component_split_on_samples() {
        let alphabet: [&[u8]; 7] = [b"a", b"b", b"/", b".", b"-", b"\xff", b"\x01"];
        // every path up to 4 symbols long from the alphabet (well-formed or not)
        let mut paths: Vec<Vec<u8>> = vec![vec![]];
        for _ in 0..4 {
            let mut next = Vec::new();
            for p in &paths {
                for s in alphabet {
                    let mut q = p.clone();
                    q.extend_from_slice(s);
                    next.push(q);
                }
            }
            paths.extend(next);
            paths.sort();
            paths.dedup();
        }
        let paths: Vec<Vec<u8>> = paths
            .into_iter()
            .filter(|p| check_rel_path(p).is_ok())
            .collect();
        for a in &paths {
            for b in &paths {
                assert_eq!(cmp_paths(a, b), by_components(a, b), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn common_prefix() {
        let a = b"node_modules/@scope/package-00001/lib/x.js";
        for i in 0..=a.len() {
            assert_eq!(common_prefix_len(a, &a[..i]), i);
            let mut b = a.to_vec();
            if i < a.len() {
                b[i] ^= 0x20;
                assert_eq!(common_prefix_len(a, &b), i);
            }
        }
        assert_eq!(common_prefix_len(b"", b"abc"), 0);
    }

    /// `check_successor` agrees with `check_rel_path` + `cmp_paths` + `parent` on every
    /// pair of short paths over an alphabet with the troublesome bytes.
    #[test]
    fn successor_matches_the_slow_checks() {
        let alphabet: [&[u8]; 6] = [b"a", b"/", b".", b"\0", b"b", b".."];
        let mut paths: Vec<Vec<u8>> = vec![vec![]];
        for _ in 0..4 {
            let mut next = Vec::new();
            for p in &paths {
                for s in alphabet {
                    let mut q = p.clone();
                    q.extend_from_slice(s);
                    next.push(q);
                }
            }
            paths.extend(next);
            paths.sort();
            paths.dedup();
        }
        let valid: Vec<&Vec<u8>> = paths.iter().filter(|p| check_rel_path(p).is_ok()).collect();
        for prev in &valid {
            for path in &paths {
                let slow_ok = !path.is_empty()
                    && check_rel_path(path).is_ok()
                    && cmp_paths(prev, path) == Ordering::Less;
                match check_successor(prev, path) {
                    Ok(len) => {
                        assert!(slow_ok, "{prev:?} -> {path:?} accepted");
                        assert_eq!(Some(&path[..len]), parent(path), "{path:?}");
                    }
                    Err(_) => assert!(!slow_ok, "{prev:?} -> {path:?} refused"),
                }
            }
        }
    }

    #[test]
    fn helpers() {
        assert!(is_ancestor(b"", b"a"));
        assert!(!is_ancestor(b"", b""));
        assert!(is_ancestor(b"a", b"a/b"));
        assert!(!is_ancestor(b"a", b"ab"));
        assert!(!is_ancestor(b"a", b"a"));
        assert_eq!(parent(b"a/b/c"), Some(&b"a/b"[..]));
        assert_eq!(parent(b"a"), Some(&b""[..]));
        assert_eq!(parent(b""), None);
        assert_eq!(file_name(b"a/b/c"), b"c");
        assert_eq!(file_name(b"c"), b"c");
        assert_eq!(file_name(b""), b"");
        assert_eq!(trim_trailing_slashes(b"a/b//"), b"a/b");
        assert_eq!(trim_trailing_slashes(b"/"), b"");
        assert!(check_rel_path(b"").is_ok());
        assert!(check_rel_path(b"a/b c/\xff\n").is_ok());
        for bad in [&b"/a"[..], b"a/", b"a//b", b"./a", b"a/..", b"a\0b"] {
            assert!(check_rel_path(bad).is_err(), "{bad:?}");
        }
    }
}
