//! Hex encoding of BLAKE3 hashes.
//!
//! CAS blob names are the 64-char lowercase hex of the hash, and ingest formats one per
//! file, so [`hex_into`] writes into a caller-owned stack buffer without allocating.

use crate::Hash;

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes the lowercase hex of `hash` into `out` and returns it as a `&str` borrowed from `out`.
#[inline]
pub fn hex_into<'b>(hash: &Hash, out: &'b mut [u8; 64]) -> &'b str {
    for (pair, byte) in out.chunks_exact_mut(2).zip(hash) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
    // Only ASCII hex digits were written, so this never fails.
    std::str::from_utf8(out).unwrap_or_default()
}

/// Lowercase hex of `hash` as an owned string.
pub fn hex(hash: &Hash) -> String {
    let mut buf = [0u8; 64];
    hex_into(hash, &mut buf).to_owned()
}

/// Parses 64 hex digits (either case) back into a hash; `None` if malformed.
pub fn parse_hex(s: &[u8]) -> Option<Hash> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut h = [0u8; 32];
        for (i, b) in h.iter_mut().enumerate() {
            *b = (i * 37 + 5) as u8;
        }
        let s = hex(&h);
        assert_eq!(s.len(), 64);
        assert!(s
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(&s[..6], "052a4f");
        assert_eq!(parse_hex(s.as_bytes()), Some(h));
        assert_eq!(parse_hex(s.to_uppercase().as_bytes()), Some(h));
        assert_eq!(parse_hex(&s.as_bytes()[1..]), None);
        assert_eq!(parse_hex(&[b'g'; 64]), None);
        assert_eq!(hex(&[0; 32]), "0".repeat(64));
        assert_eq!(hex(&[0xff; 32]), "f".repeat(64));
    }
}
