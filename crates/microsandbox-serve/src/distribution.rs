//! A read-only OCI Distribution API at `/v2/`, served from the cache's
//! own files: what another host's pull, skopeo, containerd or a
//! `docker-registry` in proxy mode asks a registry mirror.
//!
//! - `GET /v2/`: 200 `{}` (the API version check).
//! - `GET|HEAD /v2/<name>/manifests/<tag|digest>`: the manifest as stored,
//!   with its media type, `Docker-Content-Digest` and `Content-Length`.
//! - `GET|HEAD /v2/<name>/blobs/<digest>`: the blob, `Range` honoured
//!   (one range; `206` with `Content-Range`, `416` past the end).
//! - `GET /v2/<name>/tags/list[?n=&last=]`: `{ name, tags }`, paged with a
//!   `Link` header as the spec says.
//!
//! Names are as a mirror sees them: `library/alpine` (or `alpine`) is
//! `docker.io/library/alpine`; another registry's repositories are named
//! with containerd's `?ns=<registry>` parameter (`?ns=ghcr.io`). Every
//! path segment is checked against the grammar (name components, tag,
//! `sha256:` and 64 hex digits) before the cache is asked, and the cache
//! serves only what a reference or an unexpired lease of that repository
//! keeps. A whole blob is hashed as it streams and its last chunk is held
//! back until the hash is checked, which seals it in this process; a
//! sealed blob is sent without hashing, its stamp checked before its last
//! chunk (`blob_body.rs`): a blob changed on disk behind the cache's back
//! reaches the client cut short, never whole. Anything but `GET` and
//! `HEAD` is `405 UNSUPPORTED`: this registry takes no pushes.

use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, LINK, RANGE,
};
use hyper::{Method, Request, Response, StatusCode};
use microsandbox::blob_seal;
use microsandbox::{Digest, ErrorKind, MicrosandboxError, ServedBlob};

use crate::blob_body::{stream_file, Check};
use crate::limits::query;
use crate::reply::{self, header, Reply};
use crate::state::{blocking, App};

const API_VERSION: &str = "registry/2.0";

/// An OCI error answer: `{ "errors": [{ code, message }] }`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    let body =
        serde_json::json!({ "errors": [{ "code": code, "message": message, "detail": null }] });
    let mut r = reply::json(status, &body);
    r.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static(API_VERSION),
    );
    r
}

/// What a request is for.
enum Target<'a> {
    Base,
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Tags(&'a str),
}

fn target(path: &str) -> Option<Target<'_>> {
    let rest = match path {
        "/v2" | "/v2/" => return Some(Target::Base),
        p => p.strip_prefix("/v2/")?,
    };
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Target::Tags(name));
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        return Some(Target::Manifest(name, reference));
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        return Some(Target::Blob(name, digest));
    }
    None
}

/// A name's components, as the distribution spec's grammar has them:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, joined by `/`.
fn valid_name(name: &str) -> bool {
    name.len() <= 255
        && name.split('/').all(|c| {
            let b = c.as_bytes();
            let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
            if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
                return false;
            }
            let mut i = 0;
            while i < b.len() {
                if alnum(b[i]) {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < b.len() && !alnum(b[i]) {
                    i += 1;
                }
                let sep = &c[start..i];
                let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
                if !ok {
                    return false;
                }
            }
            true
        })
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || b"_.-".contains(&x))
}

/// A registry host as `ns` names it: a name or an IPv4 address with an
/// optional port, or a bracketed IPv6 address.
fn valid_ns(ns: &str) -> bool {
    let (host, port) = match ns.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((h, p)) if h.parse::<std::net::Ipv6Addr>().is_ok() => (None, p),
            _ => return false,
        },
        None => match ns.find(':') {
            Some(i) => (Some(&ns[..i]), &ns[i..]),
            None => (Some(ns), ""),
        },
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
        });
    let host_ok = host.is_none_or(|h| {
        !h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    });
    port_ok && host_ok
}

/// The repository the cache knows a name by: `docker.io/library/alpine`.
fn repository(name: &str, ns: &str) -> Result<String, Reply> {
    if !valid_name(name) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            "invalid repository name",
        ));
    }
    if !valid_ns(ns) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            "invalid ns: give a registry host such as docker.io or ghcr.io",
        ));
    }
    microsandbox::Reference::parse(&format!("{ns}/{name}:latest"))
        .map(|r| r.repository())
        .map_err(|e| error(StatusCode::BAD_REQUEST, "NAME_INVALID", e.message()))
}

/// The answer for an error of the cache, `unknown` naming what a
/// not-found is (`MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`, `NAME_UNKNOWN`).
fn cache_error(e: &MicrosandboxError, unknown: &str) -> Reply {
    let (status, code) = match e.kind() {
        ErrorKind::ImageNotFound => (StatusCode::NOT_FOUND, unknown),
        ErrorKind::InvalidReference | ErrorKind::InvalidArgument => {
            (StatusCode::BAD_REQUEST, "NAME_INVALID")
        }
        kind => (reply::status_of(kind), "UNKNOWN"),
    };
    error(status, code, e.message())
}

/// Routes `/v2/`.
pub async fn handle(app: &App, req: Request<Incoming>) -> Reply {
    let method = req.method().clone();
    if method != Method::GET && method != Method::HEAD {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "this registry is read-only: it serves GET and HEAD",
        );
        r.headers_mut()
            .insert("allow", HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let head = method == Method::HEAD;
    let path = req.uri().path().to_owned();
    let q = match query(req.uri().query()) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "UNSUPPORTED", e.message()),
    };
    let ns = q.get("ns").map_or("docker.io", String::as_str);
    let b = app.backend.clone();
    match target(&path) {
        None => error(
            StatusCode::NOT_FOUND,
            "UNSUPPORTED",
            "no such registry endpoint",
        ),
        Some(Target::Base) => {
            let mut r = reply::json(StatusCode::OK, &serde_json::json!({}));
            r.headers_mut().insert(
                "docker-distribution-api-version",
                HeaderValue::from_static(API_VERSION),
            );
            strip_if(head, r)
        }
        Some(Target::Manifest(name, reference)) => {
            let repo = match repository(name, ns) {
                Ok(r) => r,
                Err(r) => return r,
            };
            if reference.starts_with("sha256:") {
                if reference.parse::<Digest>().is_err() {
                    return error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "invalid digest");
                }
            } else if !valid_tag(reference) {
                return error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", "invalid tag");
            }
            let reference = reference.to_owned();
            match blocking(move || b.served_manifest(&repo, &reference)).await {
                Ok(m) => {
                    let mut r = reply::with(StatusCode::OK, &m.media_type, m.bytes);
                    digest_headers(&mut r, &m.digest);
                    strip_if(head, r)
                }
                Err(e) => cache_error(&e, "MANIFEST_UNKNOWN"),
            }
        }
        Some(Target::Blob(name, digest)) => {
            let repo = match repository(name, ns) {
                Ok(r) => r,
                Err(r) => return r,
            };
            if digest.parse::<Digest>().is_err() {
                return error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "invalid digest");
            }
            let range = req
                .headers()
                .get(RANGE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let digest = digest.to_owned();
            let prepared = blocking(move || {
                b.served_blob(&repo, &digest)
                    .map(|blob| prepare(blob, range.as_deref(), head))
            });
            match prepared.await {
                Ok(p) => blob_reply(p, head),
                Err(e) => cache_error(&e, "BLOB_UNKNOWN"),
            }
        }
        Some(Target::Tags(name)) => {
            let repo = match repository(name, ns) {
                Ok(r) => r,
                Err(r) => return r,
            };
            let n = match q.get("n").map(|n| n.parse::<usize>()) {
                None => None,
                Some(Ok(n)) => Some(n),
                Some(Err(_)) => {
                    return error(StatusCode::BAD_REQUEST, "UNSUPPORTED", "n must be a number")
                }
            };
            let last = q.get("last").cloned();
            let shown = name.to_owned();
            match blocking(move || b.served_tags(&repo)).await {
                Ok(tags) => tags_reply(&shown, ns, tags, n, last.as_deref(), head),
                Err(e) => cache_error(&e, "NAME_UNKNOWN"),
            }
        }
    }
}

fn digest_headers(r: &mut Reply, digest: &str) {
    let h = r.headers_mut();
    h.insert("docker-content-digest", header(digest));
    h.insert(ETAG, header(&format!("\"{digest}\"")));
    h.insert(
        "docker-distribution-api-version",
        HeaderValue::from_static(API_VERSION),
    );
}

/// The same answer without its body (the headers stay, the length too).
fn strip_if(head: bool, r: Reply) -> Reply {
    if !head {
        return r;
    }
    let (parts, _) = r.into_parts();
    Response::from_parts(parts, reply::empty())
}

fn tags_reply(
    name: &str,
    ns: &str,
    tags: Vec<String>,
    n: Option<usize>,
    last: Option<&str>,
    head: bool,
) -> Reply {
    let after: Vec<String> = tags
        .into_iter()
        .filter(|t| last.is_none_or(|l| t.as_str() > l))
        .collect();
    let (page, more) = match n {
        Some(n) if after.len() > n => (after[..n].to_vec(), true),
        _ => (after, false),
    };
    let body = serde_json::json!({ "name": name, "tags": page });
    let mut r = reply::json(StatusCode::OK, &body);
    if let (true, Some(n), Some(last)) = (more, n, page.last()) {
        let ns_part = if ns == "docker.io" {
            String::new()
        } else {
            format!("&ns={ns}")
        };
        let link = format!("</v2/{name}/tags/list?n={n}&last={last}{ns_part}>; rel=\"next\"");
        r.headers_mut().insert(LINK, header(&link));
    }
    strip_if(head, r)
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` against `size`: `Ok(None)` for no
/// range to honour (none, several, or not understood: the whole blob is
/// sent, as RFC 9110 allows), `Err` for one past the end.
fn parse_range(value: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let num = |s: &str| s.trim().parse::<u64>().ok();
    let (start, end) = match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, false) => match num(b) {
            Some(0) => return Err(()),
            Some(n) => (size.saturating_sub(n), size.saturating_sub(1)),
            None => return Ok(None),
        },
        (false, true) => match num(a) {
            Some(s) => (s, size.saturating_sub(1)),
            None => return Ok(None),
        },
        (false, false) => match (num(a), num(b)) {
            (Some(s), Some(e)) if s <= e => (s, e.min(size.saturating_sub(1))),
            _ => return Ok(None),
        },
        (true, true) => return Ok(None),
    };
    if size == 0 || start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// A blob to answer with: the span asked for and what is checked of it.
struct Prepared {
    blob: ServedBlob,
    /// As [`parse_range`] answers.
    span: Result<Option<(u64, u64)>, ()>,
    check: Check,
}

/// Works out the span and the check (blocking: the stamp of a blob to
/// hash is taken after its pages are written back, see
/// `microsandbox::blob_seal`).
fn prepare(blob: ServedBlob, range: Option<&str>, head: bool) -> Prepared {
    let span = parse_range(range, blob.size);
    let sealed = blob_seal::sealed(&blob.file, &blob.digest).filter(|s| s.size() == blob.size);
    let check = match (sealed, &span) {
        _ if head => Check::None,
        (Some(stamp), _) => Check::Sealed(stamp),
        // Only a whole blob can be checked against its digest.
        (None, Ok(None)) => Check::Hash(blob.digest.clone(), blob_seal::before_hash(&blob.file)),
        (None, _) => Check::None,
    };
    Prepared { blob, span, check }
}

fn blob_reply(p: Prepared, head: bool) -> Reply {
    let Prepared { blob, span, check } = p;
    let size = blob.size;
    let digest = blob.digest.to_string();
    let (status, start, len) = match span {
        Ok(None) => (StatusCode::OK, 0, size),
        Ok(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        Err(()) => {
            let mut r = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UNKNOWN",
                "the range is past the end of the blob",
            );
            r.headers_mut()
                .insert(CONTENT_RANGE, header(&format!("bytes */{size}")));
            return r;
        }
    };
    let body = if head {
        reply::empty()
    } else {
        stream_file(blob.file, start, len, check)
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            CONTENT_RANGE,
            header(&format!("bytes {start}-{}/{size}", start + len - 1)),
        );
    }
    digest_headers(&mut r, &digest);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_tags_and_hosts_follow_the_grammar() {
        for ok in [
            "library/alpine",
            "a",
            "a/b/c",
            "my-app",
            "a.b_c__d--e",
            "0x/y",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "", "A", "a//b", "/a", "a/", "..", "a/../b", "-a", "a-", "a..b", "a___b", "a:b", "a b",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        for ok in ["latest", "3.18", "_x", "v1-rc.2"] {
            assert!(valid_tag(ok), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"x".repeat(129)] {
            assert!(!valid_tag(bad), "{bad}");
        }
        for ok in [
            "docker.io",
            "127.0.0.1:5000",
            "[::1]:5000",
            "localhost",
            "ghcr.io",
        ] {
            assert!(valid_ns(ok), "{ok}");
        }
        for bad in [
            "",
            "a/b",
            "docker.io/x",
            "x:",
            "x:y",
            "[zz]",
            "a..b",
            "a b",
            "x:123456",
        ] {
            assert!(!valid_ns(bad), "{bad}");
        }
    }

    #[test]
    fn mirror_names_map_to_repositories() {
        assert_eq!(
            repository("library/alpine", "docker.io").ok().unwrap(),
            "docker.io/library/alpine"
        );
        assert_eq!(
            repository("alpine", "docker.io").ok().unwrap(),
            "docker.io/library/alpine"
        );
        assert_eq!(
            repository("org/app", "127.0.0.1:5000").ok().unwrap(),
            "127.0.0.1:5000/org/app"
        );
        assert!(repository("org/app", "evil/x").is_err());
    }

    #[test]
    fn ranges_are_one_satisfiable_span_or_ignored() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(parse_range(Some("bytes=4-"), 10), Ok(Some((4, 9))));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(parse_range(Some("bytes=-30"), 10), Ok(Some((0, 9))));
        assert_eq!(parse_range(Some("bytes=5-100"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=-0"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=3-1"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-"), 0), Err(()));
    }

    #[test]
    fn paths_split_at_the_last_keyword() {
        assert!(matches!(target("/v2/"), Some(Target::Base)));
        assert!(matches!(
            target("/v2/a/manifests/b/manifests/latest"),
            Some(Target::Manifest("a/manifests/b", "latest"))
        ));
        assert!(matches!(
            target("/v2/a/b/tags/list"),
            Some(Target::Tags("a/b"))
        ));
        assert!(target("/v2/a/b").is_none());
    }
}
