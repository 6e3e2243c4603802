//! Property tests: random trees round-trip, and the order/listing agree with brute force.

mod common;

use std::collections::BTreeMap;

use proptest::prelude::*;
use vrift_manifest::{EntryInput, Kind, Manifest, ManifestBuilder};

/// A name byte: mostly from a tiny alphabet (so prefixes and collisions are common,
/// including bytes that sort around '/' like '-' and '.'), sometimes any byte but '/'
/// and NUL.
fn name_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => prop::sample::select(vec![b'a', b'b', b'.', b'-', b'0', b' ', 0xff]),
        1 => any::<u8>().prop_filter("no '/' or NUL", |&b| b != b'/' && b != 0),
    ]
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(name_byte(), 1..4).prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

fn kind() -> impl Strategy<Value = Kind> {
    prop::sample::select(Kind::ALL.to_vec())
}

/// components, kind, mode, size, mtime, hash, target, inode
type RawEntry = (Vec<Vec<u8>>, Kind, u32, u64, i64, [u8; 32], Vec<u8>, u64);

fn raw_entry() -> impl Strategy<Value = RawEntry> {
    (
        prop::collection::vec(name(), 1..5),
        kind(),
        any::<u32>(),
        any::<u64>(),
        any::<i64>(),
        any::<[u8; 32]>(),
        // what symlink(2) can make: non-empty, no NUL
        prop::collection::vec(1u8.., 1..12),
        any::<u64>(),
    )
}

/// Components compare like paths compared component-wise (`Vec<Vec<u8>>` ordering).
type Key = Vec<Vec<u8>>;

fn join(c: &[Vec<u8>]) -> Vec<u8> {
    c.join(&b'/')
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip(raw in prop::collection::vec(raw_entry(), 0..60)) {
        // Anything that is an ancestor of another path must be a directory, or the
        // builder (rightly) rejects the tree.
        let mut ancestors: std::collections::HashSet<Key> = Default::default();
        for (comps, ..) in &raw {
            for k in 1..comps.len() {
                ancestors.insert(comps[..k].to_vec());
            }
        }
        let mut b = ManifestBuilder::new("/prop/root");
        // expected final content: last push wins
        let mut expect: BTreeMap<Key, EntryInput> = BTreeMap::new();
        for (comps, kind, mode, size, mtime, hash, target, ino) in raw {
            let kind = if ancestors.contains(&comps) { Kind::Dir } else { kind };
            let e = EntryInput {
                path: join(&comps),
                kind,
                mode,
                size,
                mtime_ns: mtime,
                hash: if kind.has_content() { hash } else { [0; 32] },
                target: if kind == Kind::Symlink { target } else { vec![] },
                dev: 1,
                ino,
                cache_mtime_ns: mtime ^ 1,
            };
            expect.insert(comps, e.clone());
            b.push(e);
        }
        // synthesized parents and root
        for k in ancestors.iter().cloned().chain([vec![]]) {
            expect.entry(k.clone()).or_insert_with(|| EntryInput::dir(join(&k)));
        }

        let bytes = b.to_bytes().expect("valid tree builds");
        let m = Manifest::from_bytes(bytes, std::path::Path::new("prop")).expect("opens");
        let got: Vec<EntryInput> = m.iter().map(|e| e.to_input()).collect();
        let want: Vec<EntryInput> = expect.into_values().collect();
        prop_assert_eq!(got, want);
        common::check_structure(&m);
    }

    #[test]
    fn lookup_of_absent_paths(present in prop::collection::vec(prop::collection::vec(name(), 1..4), 1..30),
                              probes in prop::collection::vec(prop::collection::vec(name(), 1..4), 1..30)) {
        let mut b = ManifestBuilder::new("/r");
        let mut all: std::collections::HashSet<Vec<u8>> = Default::default();
        for p in &present {
            b.push(EntryInput::dir(join(p)));
            for k in 1..=p.len() {
                all.insert(join(&p[..k]));
            }
        }
        let m = b.build().unwrap();
        for p in probes {
            let path = join(&p);
            prop_assert_eq!(m.lookup(&path).is_some(), all.contains(&path));
        }
    }
}
