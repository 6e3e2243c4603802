//! The file container: a fixed 64-byte header followed by the rkyv payload.
//!
//! ```text
//! offset size
//!      0    8  magic  b"VRIFTMF\0"
//!      8    4  format version, u32 LE (= VERSION)
//!     12    4  flags, u32 LE (bit 0 = FLAG_PHANTOM)
//!     16    8  payload length, u64 LE
//!     24    8  checksum, u64 LE (see `checksum`)
//!     32    8  entry count, u64 LE
//!     40   24  reserved, zero
//!     64    …  rkyv payload (ArchivedManifestData), exactly `payload length` bytes
//! ```
//!
//! The payload starts at 64 so that it stays 16-aligned inside a page-aligned mmap,
//! which is what rkyv needs to read it in place.
//!
//! The checksum is xxh3-64 of the payload, seeded with xxh3-64 of the header (with the
//! checksum field zeroed). Seeding with the header means a flipped flag bit or reserved
//! byte is caught too, not only payload damage, while still hashing the payload in one
//! fast pass.

use std::path::Path;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::schema::ManifestData;
use crate::ManifestError;

/// First 8 bytes of every manifest file.
pub const MAGIC: [u8; 8] = *b"VRIFTMF\0";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Header length; also the payload offset.
pub const HEADER_LEN: usize = 64;
/// Flag bit: the tree was ingested in `phantom` mode (sources were moved into the CAS,
/// so this manifest is the only record of the tree and must never be lost).
pub const FLAG_PHANTOM: u32 = 1;

const CHECKSUM_RANGE: std::ops::Range<usize> = 24..32;

/// Decoded header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u32,
    /// Flag bits (see [`FLAG_PHANTOM`]).
    pub flags: u32,
    /// Length of the rkyv payload that follows the header.
    pub payload_len: u64,
    /// See the module docs.
    pub checksum: u64,
    /// Number of entries in the payload.
    pub entry_count: u64,
}

impl Header {
    /// Encodes the header (magic included, reserved bytes zero).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&self.version.to_le_bytes());
        h[12..16].copy_from_slice(&self.flags.to_le_bytes());
        h[16..24].copy_from_slice(&self.payload_len.to_le_bytes());
        h[CHECKSUM_RANGE].copy_from_slice(&self.checksum.to_le_bytes());
        h[32..40].copy_from_slice(&self.entry_count.to_le_bytes());
        h
    }

    /// Decodes and checks a header: length, magic and version only (see [`verify`] for
    /// the rest). `path` is only used in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Header, ManifestError> {
        let Some(h) = bytes.get(..HEADER_LEN) else {
            // Too short for a header: report a bad magic if even the magic is wrong,
            // so random small files are not called "truncated manifests".
            let n = bytes.len().min(MAGIC.len());
            if bytes[..n] != MAGIC[..n] {
                return Err(ManifestError::BadMagic { path: path.into() });
            }
            return Err(ManifestError::Truncated {
                path: path.into(),
                expected: HEADER_LEN as u64,
                found: bytes.len() as u64,
            });
        };
        if h[0..8] != MAGIC {
            return Err(ManifestError::BadMagic { path: path.into() });
        }
        let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let version = u32_at(8);
        if version != VERSION {
            return Err(ManifestError::UnsupportedVersion {
                path: path.into(),
                found: version,
            });
        }
        Ok(Header {
            version,
            flags: u32_at(12),
            payload_len: u64_at(16),
            checksum: u64_at(24),
            entry_count: u64_at(32),
        })
    }
}

/// Checksum of a file: xxh3-64 of `payload` seeded with xxh3-64 of `header` with its
/// checksum field zeroed.
pub fn checksum(header: &[u8; HEADER_LEN], payload: &[u8]) -> u64 {
    let mut h = *header;
    h[CHECKSUM_RANGE].fill(0);
    xxh3_64_with_seed(payload, xxh3_64(&h))
}

/// Checks everything the header promises about `bytes` (a whole file): magic, version,
/// exact length and checksum. Does not look inside the payload.
pub fn verify(bytes: &[u8], path: &Path) -> Result<Header, ManifestError> {
    let header = Header::parse(bytes, path)?;
    let expected = header.payload_len.saturating_add(HEADER_LEN as u64);
    let found = bytes.len() as u64;
    if found < expected {
        return Err(ManifestError::Truncated {
            path: path.into(),
            expected,
            found,
        });
    }
    if found > expected {
        return Err(ManifestError::invalid(
            path,
            format!("{} trailing bytes after the payload", found - expected),
        ));
    }
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&bytes[..HEADER_LEN]);
    if checksum(&h, &bytes[HEADER_LEN..]) != header.checksum {
        return Err(ManifestError::Checksum { path: path.into() });
    }
    Ok(header)
}

/// Serializes `data` into a complete file image (header + payload) with the given flags.
///
/// Low level: performs no validation of `data` (that is [`crate::ManifestBuilder`]'s job;
/// the reader re-validates anyway). `path` is only used in errors.
pub fn encode(data: &ManifestData, flags: u32, path: &Path) -> Result<Vec<u8>, ManifestError> {
    // Serialize straight after a placeholder header: rkyv positions are relative, and 64
    // is a multiple of every alignment in the archive, so the payload is laid out
    // exactly as if it started at offset 0.
    let mut buf = Vec::with_capacity(
        HEADER_LEN + 64 + data.root.len() + data.strings.len() + data.entries.len() * 104,
    );
    buf.resize(HEADER_LEN, 0);
    let mut buf = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(data, buf)
        .map_err(|e| ManifestError::invalid(path, format!("serialization failed: {e}")))?;
    let mut header = Header {
        version: VERSION,
        flags,
        payload_len: (buf.len() - HEADER_LEN) as u64,
        checksum: 0,
        entry_count: data.entries.len() as u64,
    }
    .to_bytes();
    let sum = checksum(&header, &buf[HEADER_LEN..]);
    header[CHECKSUM_RANGE].copy_from_slice(&sum.to_le_bytes());
    buf[..HEADER_LEN].copy_from_slice(&header);
    Ok(buf)
}

/// Recomputes and stores the checksum of a file image in place (after editing it).
/// Used by tests that need damaged-but-checksummed files; harmless otherwise.
pub fn reseal(bytes: &mut [u8]) {
    if bytes.len() < HEADER_LEN {
        return;
    }
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&bytes[..HEADER_LEN]);
    let sum = checksum(&h, &bytes[HEADER_LEN..]);
    bytes[CHECKSUM_RANGE].copy_from_slice(&sum.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            version: VERSION,
            flags: FLAG_PHANTOM,
            payload_len: 1234,
            checksum: 0xdead_beef_0bad_f00d,
            entry_count: 77,
        };
        let b = h.to_bytes();
        assert_eq!(&b[..8], b"VRIFTMF\0");
        assert!(b[40..].iter().all(|&x| x == 0));
        assert_eq!(Header::parse(&b, Path::new("x")).unwrap(), h);
    }

    #[test]
    fn short_inputs() {
        let p = Path::new("m");
        assert!(matches!(
            Header::parse(b"", p),
            Err(ManifestError::Truncated { found: 0, .. })
        ));
        assert!(matches!(
            Header::parse(b"VRIFT", p),
            Err(ManifestError::Truncated { found: 5, .. })
        ));
        assert!(matches!(
            Header::parse(b"hello", p),
            Err(ManifestError::BadMagic { .. })
        ));
        let mut b = Header {
            version: 2,
            flags: 0,
            payload_len: 0,
            checksum: 0,
            entry_count: 0,
        }
        .to_bytes();
        assert!(matches!(
            Header::parse(&b, p),
            Err(ManifestError::UnsupportedVersion { found: 2, .. })
        ));
        b[8] = 1;
        assert!(Header::parse(&b, p).is_ok());
    }

    #[test]
    fn checksum_covers_flags_and_reserved() {
        let data = ManifestData::default();
        let img = encode(&data, 0, Path::new("m")).unwrap();
        verify(&img, Path::new("m")).unwrap();
        for i in (12..16).chain(40..64) {
            let mut bad = img.clone();
            bad[i] ^= 1;
            assert!(
                matches!(
                    verify(&bad, Path::new("m")),
                    Err(ManifestError::Checksum { .. })
                ),
                "byte {i}"
            );
        }
        let mut resealed = img.clone();
        resealed[12] = 1;
        reseal(&mut resealed);
        assert_eq!(verify(&resealed, Path::new("m")).unwrap().flags, 1);
    }
}
