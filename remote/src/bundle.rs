//! A manifest as it travels: compressed, with the location of every blob it names.
//!
//! `manifests/<name>.vrmz` (moves with each push of the name) and
//! `manifests/blake3/<hex>.vrmz` (these exact manifest bytes, forever) hold one bundle:
//! ```text
//! "VRMZ0001"  zstd( mlen:u64 manifest[mlen]  npacks:u32 npacks × { id:[u8;32] len:u64 }
//!                   nlocs:u64 nlocs × { hash:[u8;32] size:u64 pack:u32 frame_off:u64
//!                                       frame_len:u64 frame_raw:u64 off:u64 }
//!                   blake3 of the above:[u8;32] )
//! ```
//! With it, a pull of a cold store is one GET for the bundle and one ranged GET per pack it
//! touches: no listing, no index reads. A location can go stale (`vrift remote gc` repacks and
//! rewrites the bundles of what it keeps, but a pull may hold an older copy): a pull that
//! meets a missing pack falls back to the packs' indexes.

use std::io::Read;

use vrift_manifest::Hash;

use crate::pack::{BadPack, Loc};

const MAGIC: &[u8; 8] = b"VRMZ0001";
/// A bundle never decompresses to more than this (a 1M-entry manifest is ~100 MiB).
const MAX_RAW: u64 = 2 << 30;
const LOC_LEN: usize = 32 + 8 + 4 + 8 * 4;

/// A manifest's bytes and where its blobs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub manifest: Vec<u8>,
    /// Packs the locations refer to: id and length.
    pub packs: Vec<(Hash, u64)>,
    /// (hash, size) → (index into `packs`, location).
    pub locs: Vec<(Hash, u64, u32, Loc)>,
}

impl Bundle {
    pub fn encode(&self) -> std::io::Result<Vec<u8>> {
        let mut raw = Vec::with_capacity(self.manifest.len() + self.locs.len() * LOC_LEN + 64);
        raw.extend_from_slice(&(self.manifest.len() as u64).to_le_bytes());
        raw.extend_from_slice(&self.manifest);
        raw.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for (id, len) in &self.packs {
            raw.extend_from_slice(id);
            raw.extend_from_slice(&len.to_le_bytes());
        }
        raw.extend_from_slice(&(self.locs.len() as u64).to_le_bytes());
        for (h, size, pack, l) in &self.locs {
            raw.extend_from_slice(h);
            raw.extend_from_slice(&size.to_le_bytes());
            raw.extend_from_slice(&pack.to_le_bytes());
            for v in [l.frame_off, l.frame_len, l.frame_raw, l.off] {
                raw.extend_from_slice(&v.to_le_bytes());
            }
        }
        let sum = blake3::hash(&raw);
        raw.extend_from_slice(sum.as_bytes());
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&zstd::bulk::compress(&raw, crate::pack::LEVEL)?);
        Ok(out)
    }

    /// Parses and checks a bundle (the manifest inside is validated by its reader).
    pub fn decode(b: &[u8]) -> Result<Bundle, BadPack> {
        let bad = |why: &str| BadPack(format!("not a valid manifest bundle: {why}"));
        let z = b.strip_prefix(MAGIC).ok_or_else(|| bad("wrong magic"))?;
        let mut raw = Vec::new();
        zstd::stream::read::Decoder::new(z)
            .map_err(|e| bad(&e.to_string()))?
            .take(MAX_RAW)
            .read_to_end(&mut raw)
            .map_err(|e| bad(&e.to_string()))?;
        if raw.len() < 32 {
            return Err(bad("too short"));
        }
        let (body, sum) = raw.split_at(raw.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(bad("checksum mismatch"));
        }
        let mut r = Reader { b: body, at: 0 };
        let mlen = r.u64().ok_or_else(|| bad("truncated"))?;
        let manifest = r
            .take(mlen)
            .ok_or_else(|| bad("truncated manifest"))?
            .to_vec();
        let npacks = r.u32().ok_or_else(|| bad("truncated"))?;
        let mut packs = Vec::with_capacity(npacks.min(1 << 16) as usize);
        for _ in 0..npacks {
            let (Some(id), Some(len)) = (r.hash(), r.u64()) else {
                return Err(bad("truncated pack list"));
            };
            packs.push((id, len));
        }
        let nlocs = r.u64().ok_or_else(|| bad("truncated"))?;
        if nlocs.checked_mul(LOC_LEN as u64) != Some((body.len() - r.at) as u64) {
            return Err(bad("location table length"));
        }
        let mut locs = Vec::with_capacity(nlocs as usize);
        for _ in 0..nlocs {
            let (Some(h), Some(size), Some(pack)) = (r.hash(), r.u64(), r.u32()) else {
                return Err(bad("truncated location"));
            };
            let (Some(frame_off), Some(frame_len), Some(frame_raw), Some(off)) =
                (r.u64(), r.u64(), r.u64(), r.u64())
            else {
                return Err(bad("truncated location"));
            };
            if pack as usize >= packs.len() {
                return Err(bad("a location names no pack"));
            }
            if off.checked_add(size).is_none_or(|e| e > frame_raw)
                || frame_off
                    .checked_add(frame_len)
                    .is_none_or(|e| e > packs[pack as usize].1)
                || frame_len == 0
            {
                return Err(bad("a location lies outside its frame"));
            }
            locs.push((
                h,
                size,
                pack,
                Loc {
                    frame_off,
                    frame_len,
                    frame_raw,
                    off,
                },
            ));
        }
        Ok(Bundle {
            manifest,
            packs,
            locs,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Option<&'a [u8]> {
        let end = self.at.checked_add(usize::try_from(n).ok()?)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn hash(&mut self) -> Option<Hash> {
        self.take(32)?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_round_trip_and_refuse_damage() {
        let b = Bundle {
            manifest: b"manifest bytes".repeat(100),
            packs: vec![([1; 32], 100), ([2; 32], 30)],
            locs: vec![
                (
                    [3; 32],
                    5,
                    1,
                    Loc {
                        frame_off: 10,
                        frame_len: 20,
                        frame_raw: 100,
                        off: 7,
                    },
                ),
                (
                    [4; 32],
                    0,
                    0,
                    Loc {
                        frame_off: 0,
                        frame_len: 1,
                        frame_raw: 0,
                        off: 0,
                    },
                ),
            ],
        };
        let enc = b.encode().unwrap();
        assert!(enc.len() < b.manifest.len(), "compressed");
        assert_eq!(Bundle::decode(&enc).unwrap(), b);
        assert!(Bundle::decode(&enc[..enc.len() - 2]).is_err());
        assert!(Bundle::decode(b"VRMZ0002").is_err());
        let mut bad = b.clone();
        bad.locs[0].2 = 5;
        assert!(
            Bundle::decode(&bad.encode().unwrap()).is_err(),
            "no such pack"
        );
        let mut bad = b.clone();
        bad.locs[0].3.off = 99;
        assert!(
            Bundle::decode(&bad.encode().unwrap()).is_err(),
            "outside frame"
        );
    }
}
