//! The HTTP side of a pull: one registry repository, reached through its
//! mirrors (pull-through caches, tried in order) and then its origin; the
//! token of each; manifests and blobs. Statuses map to error kinds here and
//! nowhere else.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::oci::digest::Digest;
use crate::oci::model::{
    is_index_media_type, is_manifest_media_type, Descriptor, MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST,
};
use crate::oci::reference::Reference;
use crate::store::blob::{BlobWriter, VerifiedBlob};
use crate::store::layout::Layout;
use crate::store::partial::{self, Claim};
use crate::transfer::layer::{LayerSink, LayerTap};
use crate::transfer::progress::{Phase, Progress, ProgressFn, STEP};
use crate::transfer::registry::auth::{self, registry_error, Credentials};
use crate::transfer::registry::hosts::{
    api_host, is_loopback, ns_query, origin_base, realm_policy, url_host,
};
use crate::transfer::registry::mirrors::Mirror;

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";
/// What the cache says it is to registries: `microsandbox/<version>`.
pub const USER_AGENT: &str = concat!("microsandbox/", env!("CARGO_PKG_VERSION"));

/// One place that serves the repository: a mirror or the origin.
struct Endpoint {
    /// `scheme://host[:port][/prefix]`, without the `/v2`.
    base: String,
    /// `host[:port]` of `base`, lowercase: where its answers must come from
    /// to be answered with credentials.
    authority: String,
    /// The host, for messages and for picking credentials.
    host: String,
    /// The `Authorization` header to send, once a challenge asked for one.
    authorization: Mutex<Option<String>>,
    /// The docker config's credentials for this host (never another's).
    credentials: Option<Credentials>,
    /// Set when a mirror could not be reached: the pull stops asking it.
    dead: AtomicBool,
    /// `?ns=<registry>` for a mirror (containerd's convention: one mirror
    /// can serve several registries and tell them apart); empty for the
    /// origin.
    query: String,
}

/// One repository of one registry, with the mirrors in front of it.
pub struct RegistryOrigin {
    agent: ureq::Agent,
    /// The mirrors in order, then the origin.
    endpoints: Vec<Endpoint>,
    repository: String,
    shown: String,
}

/// What [`RegistryOrigin::stage`] brings.
pub enum Fetched {
    /// The blob is in the cache already (another pull committed it).
    Present,
    /// The blob, verified, in its partial file (still locked), with the
    /// layer's uncompressed digest computed on the way, for a layer.
    Verified(Box<VerifiedBlob>, Option<LayerTap>),
}

/// A download in progress: a partial blob with a layer tap.
type PartialWriter = BlobWriter<Option<LayerTap>>;

/// Whether a download ran to its end or must start over.
enum Download {
    Done,
    RangeIgnored,
}

impl RegistryOrigin {
    /// The repository a reference names, behind `mirrors`; credentials for
    /// each host come from the docker config in `docker_config` (or the
    /// default one).
    pub fn new(
        reference: &Reference,
        insecure: bool,
        mirrors: &[Mirror],
        docker_config: Option<&Path>,
    ) -> RegistryOrigin {
        let domain = reference.domain();
        let origin = origin_base(domain, insecure);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            // A stalled body holds its partial's lock, and other pulls of
            // that blob wait for it: bound it (generously: big layers on
            // slow links).
            .timeout_recv_body(Some(Duration::from_secs(3600)))
            .max_redirects(10)
            .user_agent(USER_AGENT)
            .build()
            .into();
        let endpoint = |base: String, host: &str, credentials_for: &str, query: String| Endpoint {
            authority: url_host(&base).map_or_else(String::new, |(_, h)| h.to_ascii_lowercase()),
            base,
            host: host.to_owned(),
            authorization: Mutex::default(),
            credentials: auth::lookup(credentials_for, docker_config),
            dead: AtomicBool::new(false),
            query,
        };
        let mut endpoints: Vec<Endpoint> = mirrors
            .iter()
            .map(|m| endpoint(m.base(), m.host(), m.host(), ns_query(domain)))
            .collect();
        endpoints.push(endpoint(origin, api_host(domain), domain, String::new()));
        RegistryOrigin {
            agent,
            endpoints,
            repository: reference.path().to_owned(),
            shown: reference.repository(),
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

    /// GETs `path` from byte `from` on: from the first mirror that has it,
    /// else from the origin. A mirror that cannot be reached is not asked
    /// again during this pull; one that lacks the content or fails is
    /// passed over. The origin's answer, whatever it is, is the last word.
    fn get_from(
        &self,
        path: &str,
        accept: Option<&str>,
        from: u64,
    ) -> MicrosandboxResult<ureq::http::Response<ureq::Body>> {
        let (origin, mirrors) = self
            .endpoints
            .split_last()
            .expect("the origin is always an endpoint");
        for mirror in mirrors {
            if mirror.dead.load(Ordering::Relaxed) {
                continue;
            }
            match self.get_once(mirror, path, accept, from) {
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(_) => {}
                Err(_) => mirror.dead.store(true, Ordering::Relaxed),
            }
        }
        self.get_retrying(origin, path, accept, from)
    }

    /// GETs from one endpoint: answers the auth challenge once, and retries
    /// connection failures, 429 and 5xx with backoff.
    fn get_retrying(
        &self,
        endpoint: &Endpoint,
        path: &str,
        accept: Option<&str>,
        from: u64,
    ) -> MicrosandboxResult<ureq::http::Response<ureq::Body>> {
        let mut tries = 0;
        loop {
            match self.get_once(endpoint, path, accept, from) {
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
        endpoint: &Endpoint,
        path: &str,
        accept: Option<&str>,
        from: u64,
    ) -> MicrosandboxResult<ureq::http::Response<ureq::Body>> {
        let url = format!(
            "{}/v2/{}/{path}{}",
            endpoint.base, self.repository, endpoint.query
        );
        for attempt in 0..2 {
            let mut request = self.agent.get(&url);
            if let Some(a) = accept {
                request = request.header("Accept", a);
            }
            if from > 0 {
                request = request.header("Range", &format!("bytes={from}-"));
            }
            let authorization = endpoint.authorization.lock().ok().and_then(|a| a.clone());
            if let Some(a) = authorization.as_deref() {
                request = request.header("Authorization", a);
            }
            let response = request
                .call()
                .map_err(|e| registry_error(format!("{} ({}): {e}", self.shown, endpoint.host)))?;
            use ureq::ResponseExt;
            let landed = response.get_uri();
            // A registry spoken to over TLS is never left for plain http by
            // a redirect (a manifest fetched by tag is not hash-checked).
            if endpoint.base.starts_with("https://") && landed.scheme_str() != Some("https") {
                return Err(registry_error(format!(
                    "{} ({}): refusing a redirect to plain http ({landed})",
                    self.shown, endpoint.host
                )));
            }
            // Only the registry itself may ask for its credentials: a 401
            // from where a redirect led (a storage host) is not answered.
            let home = landed.authority().map(|a| a.as_str().to_ascii_lowercase());
            let ours = home.as_deref() == Some(endpoint.authority.as_str());
            if response.status() == 401 && attempt == 0 && ours {
                let challenge = response
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                if let Some(challenge) = challenge {
                    if self.answer(endpoint, &challenge)? {
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
    fn answer(&self, endpoint: &Endpoint, challenge: &str) -> MicrosandboxResult<bool> {
        let set = |value: String| {
            if let Ok(mut a) = endpoint.authorization.lock() {
                *a = Some(value);
            }
        };
        if challenge
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("basic"))
        {
            let Some(c) = &endpoint.credentials else {
                return Ok(false);
            };
            let clear =
                url_host(&endpoint.base).is_some_and(|(tls, host)| !tls && !is_loopback(host));
            if clear {
                return Ok(false);
            }
            set(c.basic_header());
            return Ok(true);
        }
        let Some(params) = challenge
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("bearer "))
            .map(|_| &challenge[7..])
        else {
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
        let send_credentials = realm_policy(&endpoint.base, &realm)
            .map_err(|why| registry_error(format!("{}: {why}", self.shown)))?;
        let mut request = self.agent.get(&realm);
        for (k, v) in &query {
            request = request.query(k, v);
        }
        if let (Some(c), true) = (&endpoint.credentials, send_credentials) {
            request = request.header("Authorization", &c.basic_header());
        }
        let token = auth::request_token(request, &self.shown)?;
        set(format!("Bearer {token}"));
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

    /// Brings a blob into its partial file in `tmp/`, verified. A pull
    /// of the same blob running elsewhere is waited for (`waiting` is
    /// called at each look); bytes an earlier attempt left are kept and
    /// the download goes on after them (HTTP `Range`), as it does when a
    /// transfer is cut midway, a few times, before the pull fails. A
    /// layer's uncompressed bytes also feed the sink `sink` makes (each
    /// attempt its own, from the first byte).
    #[allow(clippy::too_many_arguments)]
    pub fn stage(
        &self,
        layout: &Layout,
        d: &Descriptor,
        what: &str,
        progress: Option<&ProgressFn>,
        max_layer_bytes: u64,
        sink: Option<&dyn Fn() -> Option<Box<dyn LayerSink>>>,
        mut waiting: impl FnMut() -> MicrosandboxResult<()>,
    ) -> MicrosandboxResult<Fetched> {
        let what = format!("{}: {what}", self.shown);
        let layer = is_layer(d);
        let tap = || {
            layer.then(|| {
                LayerTap::new(&d.media_type, max_layer_bytes, sink.and_then(|make| make()))
            })
        };
        loop {
            let mut writer = match partial::claim(layout, &d.digest, d.size, tap, &mut waiting)? {
                Claim::Present => return Ok(Fetched::Present),
                Claim::Mine(w) => w,
            };
            if !writer.is_whole() {
                let download = self.download(&mut writer, d, &what, progress, &mut waiting)?;
                if let Download::RangeIgnored = download {
                    writer.discard();
                    continue;
                }
            }
            return writer
                .finish(&what)
                .map(|(v, tap)| Fetched::Verified(Box::new(v), tap));
        }
    }

    /// Appends the rest of a blob to its partial file.
    fn download(
        &self,
        writer: &mut PartialWriter,
        d: &Descriptor,
        what: &str,
        progress: Option<&ProgressFn>,
        renew: &mut impl FnMut() -> MicrosandboxResult<()>,
    ) -> MicrosandboxResult<Download> {
        let path = Self::blob_path(d);
        let mut buf = vec![0u8; 256 * 1024];
        let mut cuts = 0;
        let mut event = Progress {
            phase: Phase::Write,
            digest: Some(d.digest.to_string()),
            bytes: writer.written(),
            total_bytes: Some(d.size),
        };
        if let (Some(p), true) = (progress, event.bytes > 0) {
            p.report(&event);
        }
        let mut next_event = event.bytes + STEP;
        'attempts: loop {
            let from = writer.written();
            let mut response = self.get_from(&path, None, from)?;
            self.check_status(&response, what)?;
            if from > 0 && response.status() != 206 {
                return Ok(Download::RangeIgnored);
            }
            let mut body = response.body_mut().as_reader();
            loop {
                let n = match body.read(&mut buf) {
                    Ok(0) => return Ok(Download::Done),
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        cuts += 1;
                        if cuts > RETRIES {
                            return Err(registry_error(format!("{what}: download failed: {e}")));
                        }
                        std::thread::sleep(backoff(cuts - 1));
                        continue 'attempts;
                    }
                };
                writer.write(&buf[..n], what)?;
                event.bytes = writer.written();
                if event.bytes >= next_event || event.bytes == d.size {
                    next_event = event.bytes + STEP;
                    // A long download keeps the pull's pin alive.
                    renew()?;
                    if let Some(p) = progress {
                        p.report(&event);
                    }
                }
            }
        }
    }
}

/// Whether a descriptor is a layer (not a manifest, index or config).
fn is_layer(d: &Descriptor) -> bool {
    !(is_manifest_media_type(&d.media_type)
        || is_index_media_type(&d.media_type)
        || d.media_type.contains("config"))
}

/// How many times a failed request or a cut transfer is tried again.
const RETRIES: u32 = 5;

/// 200 ms, 400 ms, 800 ms, ... capped at 5 s.
fn backoff(tries: u32) -> Duration {
    Duration::from_millis((200u64 << tries.min(5)).min(5_000))
}

/// Splits `a="x,y",b=z` at the commas outside quotes.
pub(super) fn split_params(s: &str) -> Vec<&str> {
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
}
