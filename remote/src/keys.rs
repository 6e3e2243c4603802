//! Where things live on the remote. Blob keys mirror the local layout
//! (`<prefix>/blake3/ab/cd/<hex>_<size>.bin`), so the remote is content-addressed like the
//! store and a key alone says what its bytes must hash to. Manifests live beside them:
//! `<prefix>/manifests/<name>.vrm` is the latest push of a project name (a pointer that moves),
//! `<prefix>/manifests/blake3/<hex>.vrm` the same bytes under their own BLAKE3 (never moves).

use vrift_manifest::Hash;

use crate::error::{RemoteError, Result};

pub const MANIFEST_PREFIX: &str = "manifests";
/// A manifest object of the first format (raw manifest bytes, blobs one object each).
pub const MANIFEST_SUFFIX: &str = ".vrm";
/// A manifest bundle (compressed, with its blobs' locations in packs; see `bundle`).
pub const BUNDLE_SUFFIX: &str = ".vrmz";
pub const PACK_PREFIX: &str = "packs";
pub const PACK_SUFFIX: &str = ".pack";
pub const INDEX_SUFFIX: &str = ".idx";
/// A pack `remote gc` unindexed, holding its index (see `gc`).
pub const CONDEMNED_SUFFIX: &str = ".condemned";

/// Key layout under one remote prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Without leading or trailing slashes; empty for the bucket's root.
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_matches('/').to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `rel` under the prefix.
    pub fn join(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    pub fn blob(&self, hash: &Hash, size: u64) -> String {
        self.join(&format!(
            "{}/{}",
            vrift_cas::BLOB_DIR,
            vrift_cas::blob_rel(hash, size)
        ))
    }

    /// The listing prefix of every blob whose hash starts with byte `top` (`.../blake3/ab/`).
    pub fn blob_top(&self, top: u8) -> String {
        self.join(&format!("{}/{top:02x}/", vrift_cas::BLOB_DIR))
    }

    /// Latest manifest pushed under a project name.
    pub fn manifest_named(&self, name: &str) -> Result<String> {
        check_name(name)?;
        Ok(self.join(&format!("{MANIFEST_PREFIX}/{name}{MANIFEST_SUFFIX}")))
    }

    /// A manifest by the BLAKE3 of its bytes.
    pub fn manifest_by_hash(&self, hash: &Hash) -> String {
        self.join(&format!(
            "{MANIFEST_PREFIX}/{}/{}{MANIFEST_SUFFIX}",
            vrift_cas::BLOB_DIR,
            vrift_manifest::hex(hash)
        ))
    }

    /// The pack with this id.
    pub fn pack(&self, id: &Hash) -> String {
        self.join(&format!(
            "{PACK_PREFIX}/{}{PACK_SUFFIX}",
            vrift_manifest::hex(id)
        ))
    }

    /// The index of the pack with this id.
    pub fn pack_index(&self, id: &Hash) -> String {
        self.join(&format!(
            "{PACK_PREFIX}/{}{INDEX_SUFFIX}",
            vrift_manifest::hex(id)
        ))
    }

    /// The listing prefix of every pack and index.
    pub fn packs(&self) -> String {
        self.join(PACK_PREFIX)
    }

    /// The listing prefix of every manifest.
    pub fn manifests(&self) -> String {
        self.join(MANIFEST_PREFIX)
    }

    /// What `vrift pull ARG` means: 64 hex digits are a manifest's content hash, anything with
    /// a `/` a key relative to the prefix (or already including it), anything else a project name.
    pub fn resolve_manifest(&self, arg: &str) -> Result<String> {
        if arg.len() == 64 {
            if let Some(h) = vrift_manifest::parse_hex(arg.as_bytes()) {
                return Ok(self.manifest_by_hash(&h));
            }
        }
        if arg.contains('/') {
            let rel = arg.trim_start_matches('/');
            if !self.prefix.is_empty() && rel.starts_with(&format!("{}/", self.prefix)) {
                return Ok(rel.to_string());
            }
            return Ok(self.join(rel));
        }
        self.manifest_named(arg)
    }
}

/// The bundle key standing for a manifest key of the first format (`….vrm` → `….vrmz`).
pub fn bundle_of(manifest_key: &str) -> String {
    match manifest_key.strip_suffix(MANIFEST_SUFFIX) {
        Some(base) => format!("{base}{BUNDLE_SUFFIX}"),
        None => manifest_key.to_string(),
    }
}

/// The pack id in a pack or index key (`…/packs/<hex>.idx`).
pub fn parse_pack_key(key: &str, suffix: &str) -> Option<Hash> {
    let name = key.rsplit('/').next()?.strip_suffix(suffix)?;
    if name.len() != 64 {
        return None;
    }
    vrift_manifest::parse_hex(name.as_bytes())
}

/// Parses a blob key's last segment back into (hash, size).
pub fn parse_blob_key(key: &str) -> Option<(Hash, u64)> {
    let name = key.rsplit('/').next()?;
    vrift_cas::parse_blob_name(name.as_bytes())
}

/// A project name must be one plain key segment.
pub fn check_name(name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(RemoteError::BadName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.starts_with('.') {
        return bad("starts with a dot");
    }
    if name.contains('/') || name.contains('\\') {
        return bad("contains a slash");
    }
    if name.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    if name.len() > 200 {
        return bad("longer than 200 bytes");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_keys_mirror_the_local_layout() {
        let h = *blake3::hash(b"hi").as_bytes();
        let hex = vrift_manifest::hex(&h);
        let k = Keys::new("/ci/cache/");
        assert_eq!(
            k.blob(&h, 2),
            format!("ci/cache/blake3/{}/{}/{hex}_2.bin", &hex[..2], &hex[2..4])
        );
        assert_eq!(parse_blob_key(&k.blob(&h, 2)), Some((h, 2)));
        assert_eq!(
            Keys::new("").blob(&h, 2),
            format!("blake3/{}", vrift_cas::blob_rel(&h, 2))
        );
        assert_eq!(k.blob_top(0xab), "ci/cache/blake3/ab/");
        let id = [0xcd; 32];
        assert_eq!(
            k.pack_index(&id),
            format!("ci/cache/packs/{}.idx", vrift_manifest::hex(&id))
        );
        assert_eq!(parse_pack_key(&k.pack_index(&id), INDEX_SUFFIX), Some(id));
        assert_eq!(parse_pack_key(&k.pack(&id), INDEX_SUFFIX), None);
        assert_eq!(bundle_of("p/manifests/app.vrm"), "p/manifests/app.vrmz");
    }

    #[test]
    fn manifest_arguments() {
        let k = Keys::new("p");
        assert_eq!(k.resolve_manifest("app").unwrap(), "p/manifests/app.vrm");
        assert_eq!(
            k.resolve_manifest("manifests/x.vrm").unwrap(),
            "p/manifests/x.vrm"
        );
        assert_eq!(
            k.resolve_manifest("p/manifests/x.vrm").unwrap(),
            "p/manifests/x.vrm"
        );
        let h = [7u8; 32];
        let hex = vrift_manifest::hex(&h);
        assert_eq!(
            k.resolve_manifest(&hex).unwrap(),
            format!("p/manifests/blake3/{hex}.vrm")
        );
        assert!(k.resolve_manifest(".hidden").unwrap_err().is_usage());
        assert!(k.manifest_named("").is_err());
    }
}
