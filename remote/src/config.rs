//! Which remote, where, and as whom.
//!
//! The remote URL comes from `--remote` / `VR_REMOTE` (the CLI resolves those two) or else
//! from `<store>/remote.toml`, so a store can be pointed at its remote once. Endpoint, region
//! and credentials follow the AWS conventions every S3 tool shares: the `AWS_*` environment
//! variables first, then the profile (`AWS_PROFILE`, or `profile` in `remote.toml`, or
//! `default`) from `~/.aws/credentials` and `~/.aws/config` (`AWS_SHARED_CREDENTIALS_FILE`,
//! `AWS_CONFIG_FILE`), and for credentials finally object_store's own chain (ECS/EKS
//! container credentials, web identity, instance metadata). object_store reads no profile
//! files, so they are read here with `rust-ini` (the format is plain INI).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{RemoteError, Result};
use crate::keys::Keys;

/// File name of the per-store remote configuration.
pub const CONFIG_FILE: &str = "remote.toml";
/// Objects (packs) at least this large go up as multipart uploads
/// (`VRIFT_REMOTE_MULTIPART_THRESHOLD`): above the ~32 MiB packs are made of, so only a pack
/// holding one large blob is split (S3 refuses a single PUT over 5 GiB).
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 64 << 20;
/// Part size of multipart uploads (`VRIFT_REMOTE_PART_SIZE`); S3's minimum is 5 MiB.
pub const DEFAULT_PART_SIZE: u64 = 8 << 20;
/// Requests in flight at once (`--jobs`, `jobs` in `remote.toml`).
pub const DEFAULT_JOBS: usize = 32;
/// With fewer blobs than this to check, one HEAD each beats listing the remote (see
/// `remote/README.md` for the measurements).
pub const DEFAULT_HEAD_THRESHOLD: usize = 2000;

/// `s3://BUCKET[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    pub bucket: String,
    pub prefix: String,
}

impl RemoteUrl {
    pub fn parse(text: &str) -> Result<RemoteUrl> {
        let bad = |reason: &str| RemoteError::BadUrl {
            url: text.to_string(),
            reason: reason.to_string(),
        };
        // The URL parser would quietly resolve `a/../b`: refuse it before it can.
        if text.split('/').skip(3).any(|s| s == "." || s == "..") {
            return Err(bad("the prefix must be plain path segments"));
        }
        let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "s3" {
            return Err(bad(&format!(
                "scheme {:?} is not supported (only s3://; set the endpoint with AWS_ENDPOINT_URL)",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "credentials do not belong in the URL (use AWS_ACCESS_KEY_ID / a profile)",
            ));
        }
        if url.port().is_some() {
            return Err(bad(
                "a port names an endpoint, not a bucket (set AWS_ENDPOINT_URL)",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("no query or fragment allowed"));
        }
        let bucket = url.host_str().unwrap_or("").to_string();
        if bucket.is_empty() {
            return Err(bad("no bucket"));
        }
        let valid = bucket.len() >= 3
            && bucket.len() <= 63
            && bucket
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'-'));
        if !valid {
            return Err(bad(
                "bucket names are 3-63 characters of a-z, 0-9, '.' and '-'",
            ));
        }
        let prefix = url.path().trim_matches('/').to_string();
        if prefix.split('/').any(|s| s == "." || s == "..")
            || prefix.contains("//")
            || prefix.contains('%')
        {
            return Err(bad("the prefix must be plain path segments"));
        }
        Ok(RemoteUrl { bucket, prefix })
    }

    pub fn keys(&self) -> Keys {
        Keys::new(&self.prefix)
    }
}

impl std::fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// `<store>/remote.toml`: every key optional.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `s3://BUCKET/PREFIX`, used when neither `--remote` nor `VR_REMOTE` is given.
    pub url: Option<String>,
    /// S3 endpoint (`http://127.0.0.1:9000`, `https://ACCOUNT.r2.cloudflarestorage.com`);
    /// `AWS_ENDPOINT_URL` overrides it.
    pub endpoint: Option<String>,
    /// `AWS_REGION` / `AWS_DEFAULT_REGION` override it.
    pub region: Option<String>,
    /// AWS profile to read; `AWS_PROFILE` overrides it.
    pub profile: Option<String>,
    /// Requests in flight.
    pub jobs: Option<usize>,
}

impl ConfigFile {
    /// Reads `<store>/remote.toml`; a missing file is an empty config, a broken one an error.
    pub fn load(store: &Path) -> Result<ConfigFile> {
        let path = store.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
            Err(e) => return Err(RemoteError::io(&path, e)),
        };
        toml::from_str(&text).map_err(|e| RemoteError::Config {
            path,
            reason: e.message().to_string(),
        })
    }
}

/// What one AWS profile says (any field may be absent).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Profile {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

/// Reads profile `name` from the shared credentials file (`[name]`) and the config file
/// (`[profile name]`, or `[default]`); credentials in the credentials file win, as in the
/// AWS CLI. `required` makes a profile found in neither file an error (one the user named).
pub fn load_profile(
    name: &str,
    credentials_file: &Path,
    config_file: &Path,
    required: bool,
) -> Result<Profile> {
    let mut p = Profile::default();
    let mut found = false;
    let section = if name == "default" {
        "default".to_string()
    } else {
        format!("profile {name}")
    };
    for (path, sect) in [(config_file, section.as_str()), (credentials_file, name)] {
        let Some(ini) = read_ini(path)? else { continue };
        let Some(props) = ini.section(Some(sect)) else {
            continue;
        };
        found = true;
        let get = |k: &str| {
            props
                .get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        // The credentials file is read second, so its values win.
        p.access_key_id = get("aws_access_key_id").or(p.access_key_id);
        p.secret_access_key = get("aws_secret_access_key").or(p.secret_access_key);
        p.session_token = get("aws_session_token").or(p.session_token);
        p.region = get("region").or(p.region);
        p.endpoint_url = get("endpoint_url").or(p.endpoint_url);
    }
    if !found && required {
        return Err(RemoteError::Config {
            path: credentials_file.to_path_buf(),
            reason: format!(
                "AWS profile {name:?} is in neither this file nor {}",
                config_file.display()
            ),
        });
    }
    Ok(p)
}

fn read_ini(path: &Path) -> Result<Option<ini::Ini>> {
    match std::fs::read_to_string(path) {
        Ok(text) => ini::Ini::load_from_str(&text)
            .map(Some)
            .map_err(|e| RemoteError::Config {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RemoteError::io(path, e)),
    }
}

/// Everything needed to talk to the remote, resolved once.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    pub url: RemoteUrl,
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// The profile that was read, if any (for messages).
    pub profile: Option<String>,
    pub jobs: usize,
    pub multipart_threshold: u64,
    pub part_size: u64,
    pub head_threshold: usize,
}

impl std::fmt::Debug for Settings {
    // Never print a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.url.to_string())
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("profile", &self.profile)
            .field("jobs", &self.jobs)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Resolves the settings from the flag/`VR_REMOTE` value, `<store>/remote.toml` and the
    /// AWS environment (`env` looks a variable up; the process environment in the CLI).
    pub fn resolve(
        flag_url: Option<&str>,
        store: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings> {
        let file = ConfigFile::load(store)?;
        let url_text = flag_url
            .map(str::to_string)
            .filter(|s| !s.is_empty())
            .or(file.url.clone())
            .ok_or_else(|| RemoteError::NotConfigured {
                config: store.join(CONFIG_FILE),
            })?;
        let url = RemoteUrl::parse(&url_text)?;
        let env = |k: &str| env(k).filter(|v| !v.is_empty());
        let home = env("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        let cred_file = env("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".aws/credentials"));
        let conf_file = env("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".aws/config"));
        let named = env("AWS_PROFILE").or(file.profile.clone());
        let profile_name = named.clone().unwrap_or_else(|| "default".to_string());
        let prof = load_profile(&profile_name, &cred_file, &conf_file, named.is_some())?;
        let env_key = env("AWS_ACCESS_KEY_ID");
        let env_secret = env("AWS_SECRET_ACCESS_KEY");
        // Keys travel in pairs: an env key with a profile secret would be nonsense.
        let (access_key_id, secret_access_key, session_token) =
            if env_key.is_some() || env_secret.is_some() {
                (env_key, env_secret, env("AWS_SESSION_TOKEN"))
            } else {
                (
                    prof.access_key_id.clone(),
                    prof.secret_access_key.clone(),
                    prof.session_token.clone(),
                )
            };
        let endpoint = env("AWS_ENDPOINT_URL_S3")
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or(file.endpoint.clone())
            .or(prof.endpoint_url.clone());
        if let Some(e) = &endpoint {
            let ok = url::Url::parse(e)
                .map(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(RemoteError::BadUrl {
                    url: e.clone(),
                    reason: "the endpoint must be an http:// or https:// URL".into(),
                });
            }
        }
        let region = env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or(file.region.clone())
            .or(prof.region.clone())
            .unwrap_or_else(|| "us-east-1".to_string());
        let num = |k: &str, default: u64| -> Result<u64> {
            match env(k) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| RemoteError::Config {
                    path: PathBuf::from(format!("${k}")),
                    reason: format!("{v:?} is not a number"),
                }),
            }
        };
        let part_size = num("VRIFT_REMOTE_PART_SIZE", DEFAULT_PART_SIZE)?.max(5 << 20);
        Ok(Settings {
            url,
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            session_token,
            profile: (prof != Profile::default()).then_some(profile_name),
            jobs: file.jobs.unwrap_or(DEFAULT_JOBS).max(1),
            multipart_threshold: num(
                "VRIFT_REMOTE_MULTIPART_THRESHOLD",
                DEFAULT_MULTIPART_THRESHOLD,
            )?
            .max(part_size),
            part_size,
            head_threshold: num("VRIFT_REMOTE_HEAD_THRESHOLD", DEFAULT_HEAD_THRESHOLD as u64)?
                as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn urls() {
        let u = RemoteUrl::parse("s3://ci-cache/vrift/main/").unwrap();
        assert_eq!(
            (u.bucket.as_str(), u.prefix.as_str()),
            ("ci-cache", "vrift/main")
        );
        assert_eq!(u.to_string(), "s3://ci-cache/vrift/main");
        assert_eq!(RemoteUrl::parse("s3://bkt").unwrap().prefix, "");
        for bad in [
            "http://bkt/x",
            "s3://",
            "s3:///x",
            "bkt/x",
            "s3://Bkt/x",
            "s3://a:1/x",
            "s3://k:s@bkt/x",
            "s3://bkt/a/../b",
            "s3://bkt/x?y=1",
        ] {
            let e = RemoteUrl::parse(bad).unwrap_err();
            assert!(e.is_usage(), "{bad}: {e}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn flag_beats_file_and_env_beats_profile() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir_all(&store).unwrap();
        let creds = dir.path().join("credentials");
        let conf = dir.path().join("config");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = DEF\naws_secret_access_key = defsecret\n\
             [ci]\naws_access_key_id = CIKEY\naws_secret_access_key = cisecret\n",
        )
        .unwrap();
        std::fs::write(
            &conf,
            "[profile ci]\nregion = eu-west-3\nendpoint_url = http://127.0.0.1:9\n",
        )
        .unwrap();
        let c = creds.to_str().unwrap();
        let f = conf.to_str().unwrap();
        let base = [("AWS_SHARED_CREDENTIALS_FILE", c), ("AWS_CONFIG_FILE", f)];

        let err = Settings::resolve(None, &store, &env_of(&base)).unwrap_err();
        assert!(matches!(err, RemoteError::NotConfigured { .. }), "{err}");

        std::fs::write(store.join(CONFIG_FILE), "url = \"s3://from-file/p\"\n").unwrap();
        let s = Settings::resolve(None, &store, &env_of(&base)).unwrap();
        assert_eq!(s.url.bucket, "from-file");
        assert_eq!(s.access_key_id.as_deref(), Some("DEF"));
        assert_eq!(s.region, "us-east-1");
        let s = Settings::resolve(Some("s3://from-flag"), &store, &env_of(&base)).unwrap();
        assert_eq!(s.url.bucket, "from-flag");

        let mut with_profile = base.to_vec();
        with_profile.push(("AWS_PROFILE", "ci"));
        let s = Settings::resolve(None, &store, &env_of(&with_profile)).unwrap();
        assert_eq!(s.access_key_id.as_deref(), Some("CIKEY"));
        assert_eq!(s.secret_access_key.as_deref(), Some("cisecret"));
        assert_eq!(s.region, "eu-west-3");
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(s.profile.as_deref(), Some("ci"));
        assert!(
            !format!("{s:?}").contains("cisecret"),
            "secrets never print"
        );

        let mut env_wins = with_profile.clone();
        env_wins.extend([
            ("AWS_ACCESS_KEY_ID", "ENVKEY"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ("AWS_ENDPOINT_URL", "http://localhost:1"),
            ("AWS_REGION", "ap-south-1"),
        ]);
        let s = Settings::resolve(None, &store, &env_of(&env_wins)).unwrap();
        assert_eq!(s.access_key_id.as_deref(), Some("ENVKEY"));
        assert_eq!(s.endpoint.as_deref(), Some("http://localhost:1"));
        assert_eq!(s.region, "ap-south-1");

        let mut missing = base.to_vec();
        missing.push(("AWS_PROFILE", "nope"));
        let e = Settings::resolve(None, &store, &env_of(&missing)).unwrap_err();
        assert!(e.to_string().contains("\"nope\""), "{e}");

        let mut bad_ep = base.to_vec();
        bad_ep.push(("AWS_ENDPOINT_URL", "127.0.0.1:9000"));
        assert!(Settings::resolve(None, &store, &env_of(&bad_ep)).is_err());

        std::fs::write(store.join(CONFIG_FILE), "urll = \"x\"\n").unwrap();
        let e = Settings::resolve(None, &store, &env_of(&base)).unwrap_err();
        assert!(e.to_string().contains("remote.toml"), "{e}");
    }
}
