//! Credentials the way docker users already have them: the docker config
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`) with its
//! `auths`, `credsStore` and `credHelpers` (`docker-credential-<name> get`).
//!
//! Credentials live in memory only for the pull that needs them: never
//! logged, never written into the cache, never put into an error message.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::store::fs::read_outside_bounded;

/// A user name and a secret.
#[derive(Clone)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

impl Credentials {
    /// `Basic <base64(user:secret)>`.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The docker config file: `dir/config.json` when a directory is given,
/// else `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn config_path(dir: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = dir {
        return Some(dir.join("config.json"));
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// The key a registry host has in the docker config: Docker Hub's is the
/// legacy `https://index.docker.io/v1/`.
fn keys_for(domain: &str) -> Vec<String> {
    if domain == "docker.io" {
        return vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
            "registry-1.docker.io".into(),
        ];
    }
    vec![
        domain.into(),
        format!("https://{domain}"),
        format!("http://{domain}"),
    ]
}

fn host_of(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// The credentials for `domain`, if the docker config has any.
pub fn lookup(domain: &str, config_dir: Option<&Path>) -> Option<Credentials> {
    let path = config_path(config_dir)?;
    let bytes = read_outside_bounded(&path, 4 << 20).ok()??;
    let config: DockerConfig = serde_json::from_slice(&bytes).ok()?;
    let keys = keys_for(domain);
    if let Some(helper) = keys.iter().find_map(|k| config.cred_helpers.get(k)) {
        return from_helper(helper, &keys[0]);
    }
    let entry = config
        .auths
        .iter()
        .find(|(k, _)| {
            keys.iter()
                .any(|want| want == *k || host_of(k) == host_of(want))
        })
        .map(|(_, v)| v);
    if let Some(entry) = entry {
        if let Some(c) = from_entry(entry) {
            return Some(c);
        }
    }
    config
        .creds_store
        .as_deref()
        .and_then(|store| from_helper(store, &keys[0]))
}

fn from_entry(entry: &AuthEntry) -> Option<Credentials> {
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Some(Credentials {
            username: u.clone(),
            secret: p.clone(),
        });
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(entry.auth.as_deref()?.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some(Credentials {
        username: u.to_owned(),
        secret: p.to_owned(),
    })
}

/// How long a credential helper may take before it is killed.
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `docker-credential-<name> get` with the server on stdin, for at
/// most [`HELPER_TIMEOUT`]: a helper that hangs (waiting for a keyring
/// prompt nobody sees) is killed and gives no credentials.
fn from_helper(name: &str, server: &str) -> Option<Credentials> {
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    let program = format!("docker-credential-{name}");
    run_helper(&program, server, HELPER_TIMEOUT)
}

fn run_helper(program: &str, server: &str, timeout: std::time::Duration) -> Option<Credentials> {
    use std::io::Read;
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(server.as_bytes()).ok()?;
    // The answer is read on a thread so that a helper that never ends is
    // waited for no longer than the bound.
    let stdout = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.take(1 << 20).read_to_end(&mut out).map(|_| out)
    });
    let start = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() < timeout => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    let out = reader.join().ok()?.ok()?;
    if !status.success() {
        return None;
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct HelperAnswer {
        username: String,
        secret: String,
    }
    let a: HelperAnswer = serde_json::from_slice(&out).ok()?;
    Some(Credentials {
        username: a.username,
        secret: a.secret,
    })
}

/// A `RegistryError` saying `what`.
pub(crate) fn registry_error(what: impl Into<String>) -> MicrosandboxError {
    MicrosandboxError::new(ErrorKind::RegistryError, what.into())
}

/// The most a token answer may be.
const TOKEN_LIMIT: u64 = 1 << 20;

/// Sends a token request (built by the caller: realm, service, scopes,
/// credentials) and reads the token from its answer, `token` else
/// `access_token`; `shown` names the registry in errors.
///
/// # Errors
///
/// `Unauthorized` when the token service refuses the credentials;
/// `RegistryError` for any other failure or an answer without a token.
pub(crate) fn request_token(
    request: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
    shown: &str,
) -> MicrosandboxResult<String> {
    let mut response = request
        .call()
        .map_err(|e| registry_error(format!("{shown}: token: {e}")))?;
    if response.status() == 401 || response.status() == 403 {
        return Err(MicrosandboxError::new(
            ErrorKind::Unauthorized,
            format!("{shown}: the token service refused the credentials"),
        ));
    }
    if !response.status().is_success() {
        return Err(registry_error(format!(
            "{shown}: token service answered {}",
            response.status()
        )));
    }
    let body = response
        .body_mut()
        .with_config()
        .limit(TOKEN_LIMIT)
        .read_to_vec()
        .map_err(|e| registry_error(format!("{shown}: token: {e}")))?;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| registry_error(format!("{shown}: token is not JSON: {e}")))?;
    v.get("token")
        .or_else(|| v.get("access_token"))
        .and_then(|t| t.as_str())
        .map(str::to_owned)
        .ok_or_else(|| registry_error(format!("{shown}: token answer without a token")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auths_are_found_by_host_in_any_key_form() {
        let dir = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("me:s3cret");
        std::fs::write(
            dir.path().join("config.json"),
            format!(r#"{{"auths":{{"https://reg.example.com":{{"auth":"{auth}"}},"https://index.docker.io/v1/":{{"username":"hub","password":"pw"}}}}}}"#),
        )
        .unwrap();
        let c = lookup("reg.example.com", Some(dir.path())).unwrap();
        assert_eq!((c.username.as_str(), c.secret.as_str()), ("me", "s3cret"));
        assert_eq!(
            lookup("docker.io", Some(dir.path())).unwrap().username,
            "hub"
        );
        assert!(lookup("other.example.com", Some(dir.path())).is_none());
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn a_hanging_credential_helper_is_killed_at_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-slow");
        std::fs::write(&helper, "#!/bin/sh\nexec sleep 30\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let start = std::time::Instant::now();
        let got = run_helper(
            helper.to_str().unwrap(),
            "reg.example.com",
            std::time::Duration::from_millis(300),
        );
        assert!(got.is_none());
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        let good = dir.path().join("docker-credential-good");
        std::fs::write(
            &good,
            "#!/bin/sh\ncat >/dev/null\necho '{\"Username\":\"u\",\"Secret\":\"s\"}'\n",
        )
        .unwrap();
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o755)).unwrap();
        let c = run_helper(
            good.to_str().unwrap(),
            "x",
            std::time::Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!((c.username.as_str(), c.secret.as_str()), ("u", "s"));
    }
}
