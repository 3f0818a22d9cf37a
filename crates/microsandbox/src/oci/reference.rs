//! Image references, parsed and normalized as Docker does.
//!
//! `python`, `python:latest`, `library/python` and
//! `docker.io/library/python:latest` are one reference. The first component
//! is a registry domain when it contains a `.` or a `:` or is `localhost`;
//! otherwise the domain is `docker.io`, and a one-component Docker Hub name
//! gains `library/`. A reference with neither tag nor digest gets `latest`.
//! `name@sha256:<hex>` pins a digest.
//!
//! [`Reference::canonical`] is the form stored in `index.json`;
//! [`Reference::familiar`] is the form `docker images` shows.

use std::fmt;
use std::str::FromStr;

use crate::error::{ErrorKind, MicrosandboxError};
use crate::oci::digest::Digest;

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DOMAIN: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
/// The longest name (domain and path) Docker accepts.
pub const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// A normalized image reference.
///
/// One block of text, `domain/path[:tag]`, with the places its parts
/// start, and the pinned digest (rare) boxed: a catalog keeps one per
/// reference of the cache, 10,000 of them, where three strings and an
/// inline digest took 144 bytes and three allocations each.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    text: Box<str>,
    /// Where the path starts (after `domain/`).
    path_at: u16,
    /// Where `:tag` starts, or the end of `text`.
    tag_at: u16,
    digest: Option<Box<Digest>>,
}

impl Reference {
    /// Parses and normalizes `input`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidReference`] for anything outside the grammar:
    /// empty, an uppercase repository, a NUL or white space, a name over
    /// 255 characters, a bad tag or digest.
    pub fn parse(input: &str) -> Result<Reference, MicrosandboxError> {
        parse(input).map_err(|why| {
            MicrosandboxError::new(
                ErrorKind::InvalidReference,
                format!("invalid reference {}: {why}", shown(input)),
            )
        })
    }

    /// The registry domain (`docker.io`, `ghcr.io`, `localhost:5000`).
    pub fn domain(&self) -> &str {
        &self.text[..usize::from(self.path_at) - 1]
    }

    /// The repository path (`library/python`).
    pub fn path(&self) -> &str {
        &self.text[usize::from(self.path_at)..usize::from(self.tag_at)]
    }

    /// The tag, if any (`latest` when neither tag nor digest was given).
    pub fn tag(&self) -> Option<&str> {
        self.text.get(usize::from(self.tag_at) + 1..)
    }

    /// The pinned digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_deref()
    }

    /// `domain/path`, with neither tag nor digest.
    pub fn repository(&self) -> String {
        self.text[..usize::from(self.tag_at)].to_owned()
    }

    /// The full form stored in `index.json`: `docker.io/library/python:3.12`.
    pub fn canonical(&self) -> String {
        self.written_from(0)
    }

    /// The short form people type: `python:3.12`, `ghcr.io/org/app:1`.
    pub fn familiar(&self) -> String {
        self.written_from(self.familiar_start())
    }

    /// Where [`Reference::familiar`] starts within
    /// [`Reference::canonical`]: the familiar form only ever drops a prefix
    /// (`docker.io/library/`, `docker.io/`), so one string holds both.
    pub fn familiar_start(&self) -> usize {
        match familiar_hub_path(self.path()) {
            Some(short) if self.domain() == DEFAULT_DOMAIN => {
                usize::from(self.tag_at) - short.len()
            }
            _ => 0,
        }
    }

    /// The short repository name, with neither tag nor digest: `python`,
    /// `ghcr.io/org/app`.
    pub fn familiar_name(&self) -> String {
        self.text[self.familiar_start()..usize::from(self.tag_at)].to_owned()
    }

    /// The text from `start` on, with `@digest` if pinned.
    fn written_from(&self, start: usize) -> String {
        let text = &self.text[start..];
        let digest = self.digest.as_deref().map(Digest::as_str);
        let mut name = String::with_capacity(text.len() + digest.map_or(0, |d| 1 + d.len()));
        name.push_str(text);
        if let Some(digest) = digest {
            name.push('@');
            name.push_str(digest);
        }
        name
    }
}

impl FromStr for Reference {
    type Err = MicrosandboxError;

    fn from_str(s: &str) -> Result<Reference, MicrosandboxError> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.familiar())
    }
}

/// The input as it may appear in a message: quoted, escaped, cut short.
fn shown(input: &str) -> String {
    let cut: String = input.chars().take(80).collect();
    let more = if cut.len() < input.len() { "…" } else { "" };
    format!("{cut:?}{more}")
}

fn parse(input: &str) -> Result<Reference, String> {
    if input.is_empty() {
        return Err("empty".into());
    }
    if let Some(c) = input.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("contains the character {c:?}"));
    }
    let (rest, digest) = match input.split_once('@') {
        Some((rest, digest)) => {
            let digest = digest.parse::<Digest>().map_err(|e| e.to_string())?;
            (rest, Some(digest))
        }
        None => (input, None),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (&rest[..at], Some(&rest[at + 1..]))
        }
        None => (rest, None),
    };
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    let (domain, path) = split_domain(name);
    check_domain(&domain)?;
    check_path(&path)?;
    if domain.len() + 1 + path.len() > NAME_MAX {
        return Err(format!("name longer than {NAME_MAX} characters"));
    }
    let tag = match (tag, &digest) {
        (Some(tag), _) => Some(tag),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_TAG),
    };
    let mut text =
        String::with_capacity(domain.len() + 1 + path.len() + tag.map_or(0, |t| 1 + t.len()));
    text.push_str(&domain);
    text.push('/');
    text.push_str(&path);
    let tag_at = text.len();
    if let Some(tag) = tag {
        text.push(':');
        text.push_str(tag);
    }
    // Under NAME_MAX + 1 + TAG_MAX (checked above): both fit.
    let place = |at: usize| u16::try_from(at).map_err(|_| "name too long".to_owned());
    Ok(Reference {
        path_at: place(domain.len() + 1)?,
        tag_at: place(tag_at)?,
        text: text.into_boxed_str(),
        digest: digest.map(Box::new),
    })
}

/// Whether the first component of a name is read as a registry domain:
/// it has a `.` or a `:`, is `localhost`, or has an uppercase letter.
pub fn reads_as_domain(first: &str) -> bool {
    first.contains(['.', ':'])
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

/// The familiar form of a Docker Hub path (`library/python` ->
/// `python`): `library/` goes only from a one-component name, and the
/// `docker.io/` prefix stays when the path's first component would read as
/// a domain (`docker.io/a.b/c`), so the familiar form always parses back to
/// the same repository.
pub fn familiar_hub_path(path: &str) -> Option<&str> {
    let short = match path.strip_prefix(OFFICIAL_PREFIX) {
        Some(rest) if !rest.contains('/') => rest,
        _ => path,
    };
    match short.split_once('/') {
        Some((first, _)) if reads_as_domain(first) => None,
        _ => Some(short),
    }
}

fn split_domain(name: &str) -> (String, String) {
    let (domain, path) = match name.split_once('/') {
        Some((first, rest)) if reads_as_domain(first) => (first.to_owned(), rest.to_owned()),
        _ => (DEFAULT_DOMAIN.to_owned(), name.to_owned()),
    };
    let domain = if domain == LEGACY_DOMAIN {
        DEFAULT_DOMAIN.to_owned()
    } else {
        domain
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("{OFFICIAL_PREFIX}{path}")
    } else {
        path
    };
    (domain, path)
}

fn check_domain(domain: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("bad registry address {domain:?}"))?;
        if ip.is_empty() || !ip.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(format!("bad IPv6 address in {domain:?}"));
        }
        (None, after.strip_prefix(':').map(Some).unwrap_or(None))
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        let ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !ok {
            return Err(format!("bad registry domain {domain:?}"));
        }
    }
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("bad registry port in {domain:?}"));
        }
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), String> {
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("repository name must be lowercase".into());
    }
    for component in path.split('/') {
        if !path_component_ok(component.as_bytes()) {
            return Err(format!("bad repository path component {component:?}"));
        }
    }
    Ok(())
}

/// `[a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*`
fn path_component_ok(c: &[u8]) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < c.len() && alnum(c[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == c.len() {
            return true;
        }
        let sep = i;
        while i < c.len() && !alnum(c[i]) {
            i += 1;
        }
        let ok = match &c[sep..i] {
            b"." | b"_" | b"__" => true,
            s => s.iter().all(|&b| b == b'-'),
        };
        if !ok || i == c.len() {
            return false;
        }
    }
}

fn check_tag(tag: &str) -> Result<(), String> {
    let b = tag.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let ok = !b.is_empty()
        && b.len() <= TAG_MAX
        && word(b[0])
        && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("bad tag {tag:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        Reference::parse(s).unwrap().canonical()
    }

    #[test]
    fn docker_hub_names_are_normalized() {
        for s in [
            "python",
            "python:latest",
            "library/python",
            "docker.io/python",
            "docker.io/library/python:latest",
            "index.docker.io/library/python",
        ] {
            assert_eq!(canon(s), "docker.io/library/python:latest", "{s}");
        }
        assert_eq!(canon("user/app:1"), "docker.io/user/app:1");
    }

    #[test]
    fn domains_are_detected_by_dot_port_or_localhost() {
        assert_eq!(canon("ghcr.io/org/app:1"), "ghcr.io/org/app:1");
        assert_eq!(canon("localhost/app"), "localhost/app:latest");
        assert_eq!(canon("localhost:5000/app:v2"), "localhost:5000/app:v2");
        assert_eq!(canon("127.0.0.1:5000/a/b/c"), "127.0.0.1:5000/a/b/c:latest");
        assert_eq!(canon("[::1]:5000/app"), "[::1]:5000/app:latest");
        assert_eq!(canon("org/app"), "docker.io/org/app:latest");
    }

    #[test]
    fn familiar_form_drops_docker_hub_defaults() {
        let f = |s: &str| Reference::parse(s).unwrap().familiar();
        assert_eq!(f("docker.io/library/python:3.12"), "python:3.12");
        assert_eq!(f("docker.io/org/app:1"), "org/app:1");
        assert_eq!(f("ghcr.io/org/app:1"), "ghcr.io/org/app:1");
        // Found by fuzzing: `library/` stays on a nested name, or the
        // familiar form would name another repository.
        assert_eq!(f("library/a/b:1"), "library/a/b:1");
        // Also found by fuzzing: a Hub namespace that reads as a domain
        // keeps its `docker.io/`.
        assert_eq!(f("docker.io/a.b/c"), "docker.io/a.b/c:latest");
        assert_eq!(
            Reference::parse(&f("library/a/b")).unwrap().canonical(),
            "docker.io/library/a/b:latest"
        );
    }

    #[test]
    fn digests_pin_and_suppress_the_default_tag() {
        let hex = "a".repeat(64);
        let r = Reference::parse(&format!("python@sha256:{hex}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(
            r.canonical(),
            format!("docker.io/library/python@sha256:{hex}")
        );
        let r = Reference::parse(&format!("python:3@sha256:{hex}")).unwrap();
        assert_eq!(r.familiar(), format!("python:3@sha256:{hex}"));
    }

    #[test]
    fn each_part_reads_back_from_the_one_block() {
        let hex = "a".repeat(64);
        let r = Reference::parse(&format!("localhost:5000/a/b:v1@sha256:{hex}")).unwrap();
        assert_eq!(r.domain(), "localhost:5000");
        assert_eq!(r.path(), "a/b");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.digest().unwrap().as_str(), format!("sha256:{hex}"));
        assert_eq!(r.repository(), "localhost:5000/a/b");
        assert_eq!(r.familiar_name(), "localhost:5000/a/b");
        let r = Reference::parse(&format!("python@sha256:{hex}")).unwrap();
        assert_eq!(
            (r.domain(), r.path(), r.tag()),
            ("docker.io", "library/python", None)
        );
        assert_eq!(r.repository(), "docker.io/library/python");
        assert_eq!(r.familiar(), format!("python@sha256:{hex}"));
        let r = Reference::parse("python").unwrap();
        assert_eq!((r.tag(), r.digest()), (Some("latest"), None));
        assert_eq!(r.familiar_name(), "python");
        for text in [
            "python:3",
            "org/app:1",
            "ghcr.io/org/app:1",
            "docker.io/a.b/c",
            "library/a/b:1",
        ] {
            let r = Reference::parse(text).unwrap();
            assert_eq!(r.canonical()[r.familiar_start()..], r.familiar(), "{text}");
        }
        let pinned = Reference::parse(&format!("python:3@sha256:{hex}")).unwrap();
        assert_eq!(
            pinned.canonical()[pinned.familiar_start()..],
            pinned.familiar()
        );
        // Equal references are equal values, however they were spelled.
        assert_eq!(
            r,
            Reference::parse("docker.io/library/python:latest").unwrap()
        );
        assert_ne!(r, Reference::parse("python:3").unwrap());
    }

    #[test]
    fn rejects_what_is_outside_the_grammar() {
        let long = format!("a/{}", "b".repeat(300));
        let long_tag = format!("a:{}", "t".repeat(129));
        for bad in [
            "",
            "Python",
            "docker.io/Library/python",
            "py thon",
            "python\0",
            "python:",
            "python:-x",
            "python@sha256:xyz",
            "python@md5:abc",
            "a//b",
            "a/",
            "/a",
            "a..b",
            "a-",
            "-a",
            "ex ample.com/a",
            "example.com:abc/a",
            "exa_mple.com/a",
            long.as_str(),
            long_tag.as_str(),
            "../etc/passwd",
        ] {
            let err = Reference::parse(bad).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::InvalidReference, "{bad:?}");
        }
    }

    #[test]
    fn separators_follow_docker() {
        for ok in ["a_b", "a__b", "a.b", "a---b", "a-b.c_d"] {
            assert!(Reference::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["a___b", "a._b", "a.-b"] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn messages_name_the_input() {
        let err = Reference::parse("Bad/Name").unwrap_err();
        assert!(err.to_string().contains("\"Bad/Name\""), "{err}");
    }
}
