//! Telling hosts and URLs apart, for where plain HTTP and credentials may
//! go: whether a registry host is this machine, the host and scheme of a
//! URL, whether a token realm may be asked (and sent the password), and
//! the `?ns=` a mirror hears the registry by.

/// Whether a registry host is this machine: an IP address (parsed, never
/// matched as text) in 127.0.0.0/8 or `::1`, with or without a port.
/// Names never count, `localhost` included: plain HTTP and credentials in
/// clear only ever go to a loopback address.
pub(super) fn is_loopback(domain: &str) -> bool {
    let host = match domain.strip_prefix('[') {
        // [v6]:port or [v6]
        Some(rest) => rest.split_once(']').map_or(rest, |(h, _)| h),
        None => domain
            .rsplit_once(':')
            .filter(|(h, port)| !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(domain, |(h, _)| h),
    };
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// `?ns=<registry>`, the registry percent-encoded where it is not a plain
/// host and port (an IPv6 address's brackets).
pub(super) fn ns_query(domain: &str) -> String {
    let mut q = String::from("?ns=");
    for b in domain.bytes() {
        if b.is_ascii_alphanumeric() || b".-_~:".contains(&b) {
            q.push(b as char);
        } else {
            q.push_str(&format!("%{b:02X}"));
        }
    }
    q
}

/// Whether a token realm may be asked, and whether the docker config's
/// password may go with the request: an https registry never sends its
/// client to a plain-http token service (the token, and the password,
/// would cross the network in clear), and the password goes only over TLS
/// or to a loopback address.
pub(super) fn realm_policy(registry_base: &str, realm: &str) -> Result<bool, String> {
    let (tls, host) = url_host(realm)
        .ok_or_else(|| format!("the token realm {realm:?} is not an http(s) URL"))?;
    if registry_base.starts_with("https://") && !tls {
        return Err(format!(
            "refusing the token realm {realm:?}: plain http for an https registry"
        ));
    }
    Ok(tls || is_loopback(host))
}

/// The host of a URL (`scheme://host[:port]/...`), and whether its scheme
/// is `https`; `None` for another scheme.
pub(super) fn url_host(url: &str) -> Option<(bool, &str)> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return None;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // No user info: a realm never carries credentials of its own.
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some((tls, host))
}

/// The host a registry's API answers on: Docker Hub's for `docker.io`.
pub(crate) fn api_host(domain: &str) -> &str {
    if domain == "docker.io" {
        "registry-1.docker.io"
    } else {
        domain
    }
}

/// `scheme://host` of a registry's own endpoint ([`api_host`]), plain HTTP
/// for a loopback host or when `insecure`.
pub(crate) fn origin_base(domain: &str, insecure: bool) -> String {
    let host = api_host(domain);
    let scheme = if insecure || is_loopback(domain) {
        "http"
    } else {
        "https"
    };
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_hear_the_registry_as_ns() {
        assert_eq!(ns_query("docker.io"), "?ns=docker.io");
        assert_eq!(ns_query("127.0.0.1:5000"), "?ns=127.0.0.1:5000");
        assert_eq!(ns_query("[::1]:5000"), "?ns=%5B::1%5D:5000");
    }

    #[test]
    fn loopback_is_an_address_never_a_name() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.3.4.5"));
        assert!(is_loopback("[::1]:5000"));
        assert!(is_loopback("[::1]"));
        assert!(is_loopback("::1"));
        assert!(!is_loopback("localhost:5000"));
        assert!(!is_loopback("127.corp-registry.example"));
        assert!(!is_loopback("127.corp-registry.example:5000"));
        assert!(!is_loopback("127.0.0.1.example.com"));
        assert!(!is_loopback("ghcr.io"));
        assert!(!is_loopback("registry.example.com:443"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn a_realm_never_downgrades_tls_and_gets_passwords_only_safely() {
        assert!(realm_policy("https://reg.example", "http://auth.example/t").is_err());
        assert!(realm_policy("https://reg.example", "ftp://auth.example/t").is_err());
        assert_eq!(
            realm_policy("https://reg.example", "https://auth.example/t"),
            Ok(true)
        );
        assert_eq!(
            realm_policy("http://127.0.0.1:5000", "http://127.0.0.1:5001/t"),
            Ok(true)
        );
        assert_eq!(
            realm_policy("http://127.0.0.1:5000", "http://localhost:5001/t"),
            Ok(false)
        );
        assert_eq!(
            realm_policy("http://10.0.0.5:5000", "http://10.0.0.5:5001/t"),
            Ok(false)
        );
    }

    #[test]
    fn realm_urls_tell_their_scheme_and_host() {
        assert_eq!(
            url_host("https://auth.example/token?x"),
            Some((true, "auth.example"))
        );
        assert_eq!(
            url_host("http://127.0.0.1:5001/t"),
            Some((false, "127.0.0.1:5001"))
        );
        assert_eq!(url_host("http://u:p@h:1/t"), Some((false, "h:1")));
        assert_eq!(url_host("ftp://x"), None);
    }
}
