//! Mirrors: pull-through caches in front of registries, as docker's
//! `registry-mirrors` and containerd's `hosts.toml` have them. A fleet of
//! hosts then shares one cache (distribution in proxy mode, say) instead of
//! each asking the origin.
//!
//! They come from the `mirrors` option of a pull and from the file
//! `$MSB_HOME/registries.json`:
//!
//! ```json
//! { "mirrors": { "docker.io": ["https://mirror.internal", "http://10.0.0.5:5000"] } }
//! ```
//!
//! Keys are registry hosts as references name them (`docker.io`,
//! `ghcr.io`, `localhost:5000`); an entry of the option replaces the file's
//! entry for the same registry, and an empty list turns that registry's
//! mirrors off. Mirrors are tried in order for every request, and the
//! origin answers what none of them could.

use std::collections::HashMap;

use serde::Deserialize;

use crate::error::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use crate::store::layout::Layout;

/// The name of the settings file under `$MSB_HOME`.
pub const SETTINGS_FILE: &str = "registries.json";
const SETTINGS_LIMIT: u64 = 1 << 20;

/// Mirrors per registry host.
pub type MirrorMap = HashMap<String, Vec<String>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    mirrors: MirrorMap,
}

/// One pull-through cache: where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    scheme: &'static str,
    host: String,
    prefix: String,
}

fn invalid(what: String) -> MicrosandboxError {
    MicrosandboxError::new(ErrorKind::InvalidArgument, what)
}

impl Mirror {
    /// `https://host[:port][/prefix]`, `http://...`, or a bare
    /// `host[:port]` (HTTPS, or plain HTTP on loopback).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] naming the text.
    pub fn parse(text: &str) -> MicrosandboxResult<Mirror> {
        let bad = |why: &str| invalid(format!("invalid mirror {text:?}: {why}"));
        let (scheme, rest) = match text.split_once("://") {
            Some(("https", rest)) => (Some("https"), rest),
            Some(("http", rest)) => (Some("http"), rest),
            Some(_) => return Err(bad("the scheme must be http or https")),
            None => (None, text),
        };
        let (host, prefix) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        if !host_ok {
            return Err(bad(
                "the host must be a name or address, with a port if any",
            ));
        }
        let prefix = prefix.trim_end_matches('/');
        let prefix = prefix
            .strip_suffix("v2")
            .unwrap_or(prefix)
            .trim_end_matches('/');
        let prefix_ok = prefix.split('/').all(|part| {
            part.is_empty()
                || (part != ".."
                    && part != "."
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)))
        });
        if !prefix_ok {
            return Err(bad("the path may hold only plain segments"));
        }
        let scheme = scheme.unwrap_or(if super::hosts::is_loopback(host) {
            "http"
        } else {
            "https"
        });
        Ok(Mirror {
            scheme,
            host: host.to_ascii_lowercase(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("/{}", prefix.trim_start_matches('/'))
            },
        })
    }

    /// `scheme://host[/prefix]`, to which `/v2/...` is appended.
    pub fn base(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.prefix)
    }

    /// The host (and port), for messages and credentials.
    pub fn host(&self) -> &str {
        &self.host
    }
}

/// The key a registry host is known by: Docker Hub's names are one.
fn registry_key(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        _ => host,
    }
}

fn from_file(layout: &Layout) -> MicrosandboxResult<MirrorMap> {
    let home = layout.home_dir();
    let Some(bytes) = home.read_bounded(SETTINGS_FILE, SETTINGS_LIMIT)? else {
        return Ok(MirrorMap::new());
    };
    let settings: Settings = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(format!("{}: {e}", home.join(SETTINGS_FILE).display())))?;
    Ok(settings.mirrors)
}

/// The mirrors to try for `domain`, in order: the option's entry for it,
/// else the settings file's.
///
/// # Errors
///
/// [`ErrorKind::InvalidArgument`] for a malformed settings file or mirror.
pub fn for_registry(
    domain: &str,
    option: Option<&MirrorMap>,
    layout: &Layout,
) -> MicrosandboxResult<Vec<Mirror>> {
    let key = registry_key(domain);
    let pick = |map: &MirrorMap| -> Option<Vec<String>> {
        map.iter()
            .find(|(k, _)| registry_key(k) == key)
            .map(|(_, v)| v.clone())
    };
    let listed = match option.and_then(pick) {
        Some(list) => list,
        None => pick(&from_file(layout)?).unwrap_or_default(),
    };
    listed.iter().map(|m| Mirror::parse(m)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_parse_with_schemes_ports_and_prefixes() {
        let m = Mirror::parse("https://mirror.example.com:8443/cache/v2/").unwrap();
        assert_eq!(m.base(), "https://mirror.example.com:8443/cache");
        assert_eq!(m.host(), "mirror.example.com:8443");
        assert_eq!(
            Mirror::parse("mirror.example.com").unwrap().base(),
            "https://mirror.example.com"
        );
        assert_eq!(
            Mirror::parse("127.0.0.1:5001").unwrap().base(),
            "http://127.0.0.1:5001"
        );
        for bad in [
            "ftp://x",
            "",
            "https://",
            "https://a b",
            "https://user@host",
            "https://host/../x",
            "https://host/a?b",
        ] {
            let err = Mirror::parse(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn the_option_wins_over_the_file_per_registry() {
        let (_dir, home) = crate::store::layout::tests::temp();
        let settings = home.home().join(SETTINGS_FILE);
        std::fs::write(
            &settings,
            r#"{"mirrors":{"index.docker.io":["https://a.example"],"ghcr.io":["https://g.example"]}}"#,
        )
        .unwrap();
        let hub = for_registry("docker.io", None, &home).unwrap();
        assert_eq!(hub, vec![Mirror::parse("https://a.example").unwrap()]);
        let option: MirrorMap = [("docker.io".to_owned(), vec![])].into();
        assert!(for_registry("docker.io", Some(&option), &home)
            .unwrap()
            .is_empty());
        assert_eq!(
            for_registry("ghcr.io", Some(&option), &home).unwrap(),
            vec![Mirror::parse("https://g.example").unwrap()]
        );
        assert!(for_registry("quay.io", None, &home).unwrap().is_empty());
        std::fs::write(&settings, r#"{"mirror":{}}"#).unwrap();
        let err = for_registry("quay.io", None, &home).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains(SETTINGS_FILE), "{err}");
    }
}
