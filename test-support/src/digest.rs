//! Blob names as the tests compute them: BLAKE3 from the `blake3` crate on the bytes the test
//! wrote, never through vrift's own hashing code (which reads files, batches, re-checks).

/// The 32-byte BLAKE3 of `input`.
pub fn hash(input: &[u8]) -> [u8; 32] {
    *blake3::hash(input).as_bytes()
}

/// Its lowercase hex, as in blob names.
pub fn hex(input: &[u8]) -> String {
    blake3::hash(input).to_hex().to_string()
}
