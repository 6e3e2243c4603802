//! Where a blob lives. The name *is* the content (`<blake3>_<size>.bin`), sharded by the
//! first two and next two hex digits so no directory grows beyond a few thousand entries.

use vrift_manifest::Hash;

/// Directory inside the store root that holds all blobs; the algorithm is in the name so a
/// future hash can live beside it.
pub const BLOB_DIR: &str = "blake3";
/// Length of `ab/cd/<64 hex>_<size>.bin` for the largest u64 size.
pub const MAX_REL_LEN: usize = 6 + 64 + 1 + 20 + 4;

/// Writes the blob's path relative to `blake3/` into `buf` (cleared first), without allocating
/// once `buf` has grown: this runs once per file on the ingest hot path.
pub fn blob_rel_into(hash: &Hash, size: u64, buf: &mut Vec<u8>) {
    let mut hex = [0u8; 64];
    vrift_manifest::hex_into(hash, &mut hex);
    buf.clear();
    buf.extend_from_slice(&hex[0..2]);
    buf.push(b'/');
    buf.extend_from_slice(&hex[2..4]);
    buf.push(b'/');
    buf.extend_from_slice(&hex);
    buf.push(b'_');
    let mut digits = [0u8; 20];
    buf.extend_from_slice(format_u64(size, &mut digits));
    buf.extend_from_slice(b".bin");
}

/// The blob's path relative to `blake3/` as a `String` (for messages and tests).
pub fn blob_rel(hash: &Hash, size: u64) -> String {
    let mut buf = Vec::with_capacity(MAX_REL_LEN);
    blob_rel_into(hash, size, &mut buf);
    String::from_utf8(buf).expect("hex and digits are ASCII")
}

/// Index of the `ab/cd` shard (0..65536) a hash falls into.
pub fn shard_index(hash: &Hash) -> usize {
    ((hash[0] as usize) << 8) | hash[1] as usize
}

/// Parses a blob file name back into (hash, size); `None` for anything that is not a blob
/// (temp files, foreign files), which gc/verify must then leave alone or report.
pub fn parse_blob_name(name: &[u8]) -> Option<(Hash, u64)> {
    let stem = name.strip_suffix(b".bin")?;
    if stem.len() < 66 || stem[64] != b'_' {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, out) in hash.iter_mut().enumerate() {
        let hi = hex_val(stem[2 * i])?;
        let lo = hex_val(stem[2 * i + 1])?;
        *out = (hi << 4) | lo;
    }
    let digits = &stem[65..];
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let size = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((hash, size))
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn format_u64(mut n: u64, tmp: &mut [u8; 20]) -> &[u8] {
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &tmp[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_path_shape_and_parse_round_trip() {
        let hash = *blake3::hash(b"hello").as_bytes();
        let rel = blob_rel(&hash, 5);
        let hex = vrift_manifest::hex(&hash);
        assert_eq!(rel, format!("{}/{}/{}_5.bin", &hex[..2], &hex[2..4], hex));
        let name = rel.rsplit('/').next().unwrap();
        assert_eq!(parse_blob_name(name.as_bytes()), Some((hash, 5)));
        assert_eq!(
            shard_index(&hash),
            ((hash[0] as usize) << 8) | hash[1] as usize
        );
    }

    #[test]
    fn parse_rejects_foreign_names() {
        assert_eq!(parse_blob_name(b"notes.txt"), None);
        assert_eq!(parse_blob_name(b".tmp123.bin"), None);
        let hash = *blake3::hash(b"x").as_bytes();
        let good = format!("{}_{}.bin", vrift_manifest::hex(&hash), 1);
        assert!(parse_blob_name(good.as_bytes()).is_some());
        let upper = good.to_uppercase().replace(".BIN", ".bin");
        assert_eq!(parse_blob_name(upper.as_bytes()), None);
        let nosize = format!("{}_.bin", vrift_manifest::hex(&hash));
        assert_eq!(parse_blob_name(nosize.as_bytes()), None);
    }

    #[test]
    fn zero_and_max_sizes() {
        let hash = [0u8; 32];
        assert!(blob_rel(&hash, 0).ends_with("_0.bin"));
        let max = blob_rel(&hash, u64::MAX);
        assert!(max.len() <= MAX_REL_LEN);
        assert!(max.ends_with("_18446744073709551615.bin"));
    }
}
