//! The HTTP side of a pull: one registry repository, its token, its
//! manifests and blobs. Statuses map to error kinds here and nowhere else.

use std::cell::RefCell;
use std::io::Read;
use std::time::Duration;

use crate::digest::Digest;
use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::ingest::{BlobWriter, VerifiedBlob};
use crate::layout::Layout;
use crate::model::{
    is_index_media_type, is_manifest_media_type, Descriptor, MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST,
};
use crate::progress::{Phase, Progress, ProgressFn, STEP};
use crate::reference::Reference;
use crate::registry::auth::Credentials;

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";
const TOKEN_LIMIT: u64 = 1 << 20;

/// One repository of one registry.
pub struct RegistryOrigin {
    agent: ureq::Agent,
    base: String,
    repository: String,
    shown: String,
    /// The `Authorization` header to send, once a challenge asked for one.
    authorization: RefCell<Option<String>>,
    credentials: Option<Credentials>,
}

fn registry_error(what: String) -> MicrosandboxError {
    MicrosandboxError::new(ErrorKind::RegistryError, what)
}

/// Whether a registry host is this machine: spoken to in plain HTTP.
fn is_loopback(domain: &str) -> bool {
    let host = domain
        .rsplit_once(':')
        .filter(|(h, port)| !h.ends_with(']') || port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(domain, |(h, _)| h);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

impl RegistryOrigin {
    /// The repository a reference names.
    pub fn new(
        reference: &Reference,
        insecure: bool,
        credentials: Option<Credentials>,
    ) -> RegistryOrigin {
        let domain = reference.domain();
        let host = if domain == "docker.io" {
            "registry-1.docker.io"
        } else {
            domain
        };
        let scheme = if insecure || is_loopback(domain) {
            "http"
        } else {
            "https"
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_body(Some(Duration::from_secs(300)))
            .max_redirects(10)
            .build()
            .into();
        RegistryOrigin {
            agent,
            base: format!("{scheme}://{host}"),
            repository: reference.path().to_owned(),
            shown: reference.repository(),
            authorization: RefCell::default(),
            credentials,
        }
    }

    /// For messages: `docker.io/library/python`.
    pub fn label(&self) -> &str {
        &self.shown
    }

    fn get(
        &self,
        path: &str,
        accept: Option<&str>,
    ) -> MicrosandboxResult<ureq::http::Response<ureq::Body>> {
        self.get_from(path, accept, 0)
    }

    /// GETs `path` from byte `from` on: answers the auth challenge once, and
    /// retries connection failures, 429 and 5xx with backoff.
    fn get_from(
        &self,
        path: &str,
        accept: Option<&str>,
        from: u64,
    ) -> MicrosandboxResult<ureq::http::Response<ureq::Body>> {
        let mut tries = 0;
        loop {
            match self.get_once(path, accept, from) {
                Ok(r) if (r.status() == 429 || r.status().is_server_error()) && tries < RETRIES => {
                }
                Err(e) if e.kind() == ErrorKind::RegistryError && tries < RETRIES => {}
                other => return other,
            }
            std::thread::sleep(backoff(tries));
            tries += 1;
        }
    }

    fn get_once(
        &self,
        path: &str,
        accept: Option<&str>,
        from: u64,
    ) -> MicrosandboxResult<ureq::http::Response<ureq::Body>> {
        let url = format!("{}/v2/{}/{path}", self.base, self.repository);
        for attempt in 0..2 {
            let mut request = self.agent.get(&url);
            if let Some(a) = accept {
                request = request.header("Accept", a);
            }
            if from > 0 {
                request = request.header("Range", &format!("bytes={from}-"));
            }
            if let Some(a) = self.authorization.borrow().as_deref() {
                request = request.header("Authorization", a);
            }
            let response = request
                .call()
                .map_err(|e| registry_error(format!("{}: {e}", self.shown)))?;
            if response.status() == 401 && attempt == 0 {
                let challenge = response
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                if let Some(challenge) = challenge {
                    if self.answer(&challenge)? {
                        continue;
                    }
                }
            }
            return Ok(response);
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Answers a challenge: `Basic` with the docker config's credentials,
    /// `Bearer realm=...,service=...,scope=...` with a token (asked for
    /// with those credentials, or anonymously). False when it cannot.
    fn answer(&self, challenge: &str) -> MicrosandboxResult<bool> {
        if challenge.len() >= 5 && challenge[..5].eq_ignore_ascii_case("basic") {
            let Some(c) = &self.credentials else {
                return Ok(false);
            };
            *self.authorization.borrow_mut() = Some(c.basic_header());
            return Ok(true);
        }
        let Some(params) = challenge.strip_prefix("Bearer ") else {
            return Ok(false);
        };
        let mut realm = None;
        let mut query = Vec::new();
        for part in split_params(params) {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').to_owned();
            match k.trim() {
                "realm" => realm = Some(v),
                k @ ("service" | "scope") => query.push((k.to_owned(), v)),
                _ => {}
            }
        }
        if !query.iter().any(|(k, _)| k == "scope") {
            query.push((
                "scope".into(),
                format!("repository:{}:pull", self.repository),
            ));
        }
        let realm = realm.ok_or_else(|| {
            registry_error(format!(
                "{}: a bearer challenge without a realm",
                self.shown
            ))
        })?;
        let mut request = self.agent.get(&realm);
        for (k, v) in &query {
            request = request.query(k, v);
        }
        if let Some(c) = &self.credentials {
            request = request.header("Authorization", &c.basic_header());
        }
        let mut response = request
            .call()
            .map_err(|e| registry_error(format!("{}: token: {e}", self.shown)))?;
        if response.status() == 401 || response.status() == 403 {
            return Err(MicrosandboxError::new(
                ErrorKind::Unauthorized,
                format!("{}: the token service refused the credentials", self.shown),
            ));
        }
        if !response.status().is_success() {
            return Err(registry_error(format!(
                "{}: token service answered {}",
                self.shown,
                response.status()
            )));
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(TOKEN_LIMIT)
            .read_to_vec()
            .map_err(|e| registry_error(format!("{}: token: {e}", self.shown)))?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| registry_error(format!("{}: token is not JSON: {e}", self.shown)))?;
        let token = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| {
                registry_error(format!("{}: token answer without a token", self.shown))
            })?;
        *self.authorization.borrow_mut() = Some(format!("Bearer {token}"));
        Ok(true)
    }

    fn check_status(
        &self,
        response: &ureq::http::Response<ureq::Body>,
        what: &str,
    ) -> MicrosandboxResult<()> {
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(match status.as_u16() {
            401 | 403 => MicrosandboxError::new(
                ErrorKind::Unauthorized,
                format!(
                    "{}: {what}: the registry refused access ({status})",
                    self.shown
                ),
            ),
            404 => MicrosandboxError::new(
                ErrorKind::ImageNotFound,
                format!("image not found: {}: {what}", self.shown),
            ),
            _ => registry_error(format!(
                "{}: {what}: the registry answered {status}",
                self.shown
            )),
        })
    }

    /// The manifest or index a tag or digest names: its bytes and descriptor.
    pub fn top(
        &self,
        reference: &Reference,
        limit: u64,
    ) -> MicrosandboxResult<(Vec<u8>, Descriptor)> {
        let name = match (reference.digest(), reference.tag()) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_owned(),
            (None, None) => "latest".to_owned(),
        };
        let what = format!("manifest {name}");
        let mut response = self.get(&format!("manifests/{name}"), Some(ACCEPT))?;
        self.check_status(&response, &what)?;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
        let bytes = response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| registry_error(format!("{}: {what}: {e}", self.shown)))?;
        let digest = Digest::of(&bytes);
        if let Some(pinned) = reference.digest() {
            if &digest != pinned {
                return Err(MicrosandboxError::new(
                    ErrorKind::DigestMismatch,
                    format!("{}: {what}: content hashes to {digest}", self.shown),
                ));
            }
        }
        let declared = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_owned));
        let media_type = declared
            .or(content_type)
            .filter(|m| is_index_media_type(m) || is_manifest_media_type(m))
            .unwrap_or_else(|| MEDIA_OCI_MANIFEST.to_owned());
        let size = bytes.len() as u64;
        Ok((bytes, Descriptor::new(&media_type, digest, size)))
    }

    fn blob_path(d: &Descriptor) -> String {
        let kind = if [
            MEDIA_OCI_MANIFEST,
            MEDIA_OCI_INDEX,
            MEDIA_DOCKER_MANIFEST,
            MEDIA_DOCKER_LIST,
        ]
        .contains(&d.media_type.as_str())
        {
            "manifests"
        } else {
            "blobs"
        };
        format!("{kind}/{}", d.digest)
    }

    /// At most `limit + 1` bytes of a blob (a manifest, an index, a config).
    pub fn read(&self, d: &Descriptor, limit: u64, what: &str) -> MicrosandboxResult<Vec<u8>> {
        let accept = (Self::blob_path(d).starts_with("manifests/")).then_some(ACCEPT);
        let mut response = self.get(&Self::blob_path(d), accept)?;
        self.check_status(&response, what)?;
        let mut bytes = Vec::new();
        response
            .body_mut()
            .as_reader()
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| registry_error(format!("{}: {what}: {e}", self.shown)))?;
        Ok(bytes)
    }

    /// Streams a blob into `tmp/`, verified against its descriptor. A
    /// transfer cut midway resumes where it stopped (HTTP `Range`), a few
    /// times, before the pull fails.
    pub fn stage(
        &self,
        layout: &Layout,
        d: &Descriptor,
        what: &str,
        progress: Option<ProgressFn>,
    ) -> MicrosandboxResult<VerifiedBlob> {
        let path = Self::blob_path(d);
        let mut writer = BlobWriter::create(layout)?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut cuts = 0;
        let mut event = Progress {
            phase: Phase::Write,
            digest: Some(d.digest.to_string()),
            bytes: 0,
            total_bytes: Some(d.size),
        };
        let mut next_event = STEP;
        'attempts: loop {
            let from = writer.written();
            let mut response = self.get_from(&path, None, from)?;
            self.check_status(&response, what)?;
            if from > 0 && response.status() != 206 {
                // The server ignored the range: start over.
                writer = BlobWriter::create(layout)?;
            }
            let mut body = response.body_mut().as_reader();
            loop {
                let n = match body.read(&mut buf) {
                    Ok(0) => break 'attempts,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        cuts += 1;
                        if cuts > RETRIES {
                            return Err(registry_error(format!(
                                "{}: {what}: download failed: {e}",
                                self.shown
                            )));
                        }
                        std::thread::sleep(backoff(cuts - 1));
                        continue 'attempts;
                    }
                };
                if writer.written() + n as u64 > d.size {
                    return Err(MicrosandboxError::new(
                        ErrorKind::DigestMismatch,
                        format!(
                            "{}: {what}: more than the {} bytes announced",
                            self.shown, d.size
                        ),
                    ));
                }
                writer.write(&buf[..n])?;
                if let Some(p) = &progress {
                    event.bytes = writer.written();
                    if event.bytes >= next_event || event.bytes == d.size {
                        next_event = event.bytes + STEP;
                        p.report(&event);
                    }
                }
            }
        }
        writer.finish(&d.digest, d.size, &format!("{}: {what}", self.shown))
    }
}

/// How many times a failed request or a cut transfer is tried again.
const RETRIES: u32 = 5;

/// 200 ms, 400 ms, 800 ms, ... capped at 5 s.
fn backoff(tries: u32) -> Duration {
    Duration::from_millis((200u64 << tries.min(5)).min(5_000))
}

/// Splits `a="x,y",b=z` at the commas outside quotes.
fn split_params(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_split_outside_quotes() {
        let parts = split_params(
            r#"realm="https://auth/token",service="reg",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(parts.len(), 3);
        assert!(parts[2].contains("pull,push"));
    }

    #[test]
    fn loopback_registries_speak_http() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("ghcr.io"));
        assert!(!is_loopback("registry.example.com:443"));
    }
}
