//! The HTTP side of a push: one repository of one registry, its
//! credentials and its token, and the mapping of every failing status to
//! an error kind (here and nowhere else in the push).
//!
//! A token is asked for with the push scope at once (`pull,push` on the
//! destination, `pull` on the repository blobs are mounted from), so a
//! push does not climb from a pull token to a push token request by
//! request. A 401 on a request that carried a token refreshes the token
//! once and sends the request again; a second 401 is `Unauthorized`.
//! Credentials go only to the registry's own host (never to where an
//! upload URL points elsewhere), only over TLS or to a loopback address.

use std::io::Read;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use ureq::http::Response;
use ureq::{Body, SendBody};

use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::oci::reference::Reference;
use crate::transfer::registry::auth::{self, Credentials};
use crate::transfer::registry::client::{split_params, USER_AGENT};
use crate::transfer::registry::hosts::{
    api_host, is_loopback, origin_base, realm_policy, url_host,
};

const ERROR_BODY_LIMIT: u64 = 64 << 10;

/// What a request sends: nothing, a few bytes, or a stream made afresh
/// for each attempt (a 401 sends the request again).
pub(super) enum Payload<'a> {
    /// No body.
    Empty,
    /// A small body held in memory (a manifest).
    Bytes(&'a [u8]),
    /// `len` bytes that `open` streams, from the first one, each time.
    Stream {
        len: u64,
        open: &'a mut dyn FnMut() -> MicrosandboxResult<Box<dyn Read + 'a>>,
    },
}

/// One repository of one registry, spoken to for a push.
pub(super) struct Session {
    agent: ureq::Agent,
    /// `scheme://host[:port]`, without the `/v2`.
    base: String,
    /// `host[:port]`, lowercase: where credentials may go.
    authority: String,
    /// The repository path (`team/app`).
    pub repository: String,
    /// For messages: `127.0.0.1:5000/team/app`.
    pub shown: String,
    credentials: Option<Credentials>,
    /// The scopes a token is asked for.
    scopes: Vec<String>,
    /// The `Authorization` header, with a generation that grows each time
    /// it is replaced, so that threads hit by one 401 together fetch one
    /// token, not six.
    authorization: Mutex<(u64, Option<String>)>,
}

pub(super) use crate::transfer::registry::auth::registry_error;

impl Session {
    /// The repository `dest` names; `mount_from` is the repository path of
    /// the same registry blobs may be mounted from.
    pub fn new(
        dest: &Reference,
        insecure: bool,
        docker_config: Option<&Path>,
        mount_from: Option<&str>,
    ) -> Session {
        let domain = dest.domain();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(300)))
            .timeout_recv_body(Some(Duration::from_secs(300)))
            // An upload is never sent on to another place by a redirect:
            // the body would not follow, and neither must the credentials.
            .max_redirects(0)
            .user_agent(USER_AGENT)
            .build()
            .into();
        let base = origin_base(domain, insecure);
        let mut scopes = vec![format!("repository:{}:pull,push", dest.path())];
        if let Some(from) = mount_from {
            scopes.push(format!("repository:{from}:pull"));
        }
        Session {
            agent,
            authority: api_host(domain).to_ascii_lowercase(),
            base,
            repository: dest.path().to_owned(),
            shown: dest.repository(),
            credentials: auth::lookup(domain, docker_config),
            scopes,
            authorization: Mutex::new((0, None)),
        }
    }

    /// `base/v2/<repository>/<rest>`.
    pub fn url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.base, self.repository)
    }

    /// An upload `Location` as an absolute URL: a path is the registry's.
    ///
    /// # Errors
    ///
    /// `RegistryError` for a location that is neither a path nor an http(s)
    /// URL, or one that leaves TLS for plain http.
    pub fn absolute(&self, location: &str) -> MicrosandboxResult<String> {
        if location.starts_with('/') && !location.starts_with("//") {
            return Ok(format!("{}{location}", self.base));
        }
        match url_host(location) {
            Some((false, _)) if self.base.starts_with("https://") => Err(registry_error(format!(
                "{}: refusing an upload location in plain http ({location})",
                self.shown
            ))),
            Some(_) => Ok(location.to_owned()),
            None => Err(registry_error(format!(
                "{}: the registry gave an upload location that is no URL: {location:?}",
                self.shown
            ))),
        }
    }

    fn ours(&self, url: &str) -> bool {
        if !url.starts_with(&self.base) {
            return false;
        }
        url_host(url).is_some_and(|(_, h)| h.eq_ignore_ascii_case(&self.authority))
    }

    /// Sends one request; a 401 from the registry is answered (a token, or
    /// basic credentials) and the request sent once more.
    ///
    /// # Errors
    ///
    /// `RegistryError` when the registry cannot be reached (the caller may
    /// try again), `Unauthorized` when the token service refuses, and what
    /// opening the payload gives.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        mut payload: Payload<'_>,
    ) -> MicrosandboxResult<Response<Body>> {
        let ours = self.ours(url);
        let mut answered = false;
        loop {
            let (generation, authorization) = match self.authorization.lock() {
                Ok(a) => a.clone(),
                Err(_) => (0, None),
            };
            let mut builder = ureq::http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                builder = builder.header(*k, v.as_str());
            }
            if let (true, Some(a)) = (ours, authorization.as_deref()) {
                builder = builder.header("Authorization", a);
            }
            let unreachable =
                |e: &dyn std::fmt::Display| registry_error(format!("{}: {method} {e}", self.shown));
            let response = match &mut payload {
                Payload::Empty => {
                    if !matches!(method, "GET" | "HEAD" | "DELETE") {
                        builder = builder.header("Content-Length", "0");
                    }
                    let request = builder.body(()).map_err(|e| unreachable(&e))?;
                    self.agent.run(request)
                }
                Payload::Bytes(bytes) => {
                    let request = builder
                        .header("Content-Length", bytes.len().to_string())
                        .body(SendBody::from_owned_reader(std::io::Cursor::new(
                            bytes.to_vec(),
                        )))
                        .map_err(|e| unreachable(&e))?;
                    self.agent.run(request)
                }
                Payload::Stream { len, open } => {
                    let mut reader = open()?;
                    let request = builder
                        .header("Content-Length", len.to_string())
                        .body(SendBody::from_reader(&mut reader))
                        .map_err(|e| unreachable(&e))?;
                    self.agent.run(request)
                }
            }
            .map_err(|e| unreachable(&e))?;
            if response.status() != 401 || !ours || answered {
                return Ok(response);
            }
            answered = true;
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let Some(challenge) = challenge else {
                return Ok(response);
            };
            if !self.answer(generation, &challenge)? {
                return Ok(response);
            }
        }
    }

    /// Sets the `Authorization` header a challenge asks for, unless another
    /// thread already replaced the one sent (`sent`). False when it cannot
    /// be answered.
    fn answer(&self, sent: u64, challenge: &str) -> MicrosandboxResult<bool> {
        let mut slot = self
            .authorization
            .lock()
            .map_err(|_| registry_error(format!("{}: the token lock is poisoned", self.shown)))?;
        if slot.0 != sent {
            return Ok(true);
        }
        let value = if challenge
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("basic"))
        {
            let Some(c) = &self.credentials else {
                return Ok(false);
            };
            let clear = url_host(&self.base).is_some_and(|(tls, host)| !tls && !is_loopback(host));
            if clear {
                return Ok(false);
            }
            c.basic_header()
        } else if let Some(params) = challenge
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("bearer "))
            .map(|_| &challenge[7..])
        {
            format!("Bearer {}", self.token(params)?)
        } else {
            return Ok(false);
        };
        *slot = (slot.0 + 1, Some(value));
        Ok(true)
    }

    /// A token from the realm a bearer challenge names, for the push's
    /// scopes (and the challenge's own, when it names another).
    fn token(&self, params: &str) -> MicrosandboxResult<String> {
        let mut realm = None;
        let mut service = None;
        let mut scopes = self.scopes.clone();
        for part in split_params(params) {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').to_owned();
            match k.trim() {
                "realm" => realm = Some(v),
                "service" => service = Some(v),
                "scope" => {
                    for s in v.split(' ').filter(|s| !s.is_empty()) {
                        if !scopes.iter().any(|have| have == s) {
                            scopes.push(s.to_owned());
                        }
                    }
                }
                _ => {}
            }
        }
        let realm = realm.ok_or_else(|| {
            registry_error(format!(
                "{}: a bearer challenge without a realm",
                self.shown
            ))
        })?;
        let send_credentials = realm_policy(&self.base, &realm)
            .map_err(|why| registry_error(format!("{}: {why}", self.shown)))?;
        let mut request = self.agent.get(&realm);
        if let Some(s) = &service {
            request = request.query("service", s);
        }
        for s in &scopes {
            request = request.query("scope", s);
        }
        if let (Some(c), true) = (&self.credentials, send_credentials) {
            request = request.header("Authorization", &c.basic_header());
        }
        auth::request_token(request, &self.shown)
    }

    /// The error a failing answer stands for, with the registry's own
    /// error code and message when its body has them.
    pub fn failure(&self, mut response: Response<Body>, what: &str) -> MicrosandboxError {
        let status = response.status();
        let mut body = Vec::new();
        let _ = response
            .body_mut()
            .as_reader()
            .take(ERROR_BODY_LIMIT)
            .read_to_end(&mut body);
        let detail = registry_detail(&body);
        let code = detail.as_ref().map_or("", |(c, _)| c.as_str());
        let said = detail
            .as_ref()
            .map_or(String::new(), |(c, m)| format!(": {c}: {m}"));
        let shown = &self.shown;
        let kind = match (status.as_u16(), code) {
            (401 | 403, _) => ErrorKind::Unauthorized,
            (_, "DIGEST_INVALID") => ErrorKind::DigestMismatch,
            (405, _) | (_, "UNSUPPORTED") => ErrorKind::Unsupported,
            _ => ErrorKind::RegistryError,
        };
        let message = match kind {
            ErrorKind::Unauthorized => {
                format!("{shown}: {what}: the registry refused access ({status}){said}")
            }
            ErrorKind::Unsupported => {
                format!("{shown}: {what}: the registry does not take pushes ({status}){said}")
            }
            _ => format!("{shown}: {what}: the registry answered {status}{said}"),
        };
        MicrosandboxError::new(kind, message)
    }
}

/// The first `{code, message}` of a distribution error body.
fn registry_detail(body: &[u8]) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let first = v.get("errors")?.get(0)?;
    let code = first.get("code")?.as_str()?;
    let code: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    let message: String = first
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    Some((code, message))
}

/// A header's text, if present and readable.
pub(super) fn header<'r>(response: &'r Response<Body>, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_errors_give_their_code_and_message() {
        let body = br#"{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"blob upload invalid","detail":{}}]}"#;
        assert_eq!(
            registry_detail(body),
            Some(("BLOB_UPLOAD_INVALID".into(), "blob upload invalid".into()))
        );
        assert_eq!(registry_detail(b"<html>"), None);
        let hostile = format!(
            r#"{{"errors":[{{"code":"A\u001b[31mB","message":"{}"}}]}}"#,
            "x".repeat(1000)
        );
        let (code, message) = registry_detail(hostile.as_bytes()).unwrap();
        assert_eq!(code, "A31mB");
        assert_eq!(message.len(), 200);
    }

    #[test]
    fn locations_resolve_against_the_registry_and_keep_tls() {
        let dest = Reference::parse("registry.example.com/team/app:1").unwrap();
        let s = Session::new(&dest, false, None, None);
        assert_eq!(
            s.absolute("/v2/team/app/blobs/uploads/u?_state=x").unwrap(),
            "https://registry.example.com/v2/team/app/blobs/uploads/u?_state=x"
        );
        assert!(s.absolute("http://registry.example.com/v2/x").is_err());
        assert!(s.absolute("//elsewhere/x").is_err());
        assert!(s.ours("https://registry.example.com/v2/team/app/blobs/x"));
        assert!(!s.ours("https://storage.example.com/upload"));
        assert!(!s.ours("https://registry.example.com.evil/v2"));
    }
}
