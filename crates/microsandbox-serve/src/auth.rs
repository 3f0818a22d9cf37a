//! Who may ask: one secret token, compared in constant time.
//!
//! The token comes from the caller, else a file (`--token-file`), else
//! `MSB_API_TOKEN`, else MiniBox's `MINIBOX_API_TOKEN`. Listening on TCP
//! without one is refused at start; on a unix socket (mode 0600) a token
//! is optional, and checked when there is one.
//!
//! The management endpoints (MiniBox's, `/v1/`, `/openapi.yaml`) take it
//! as `Authorization: Bearer <token>` or MiniBox's `X-API-Token: <token>`.
//! The registry (`/v2/`) takes it as a Basic password with any user name
//! (what `skopeo --src-creds x:TOKEN` and a docker config's `auths` send)
//! or as a Bearer token, and challenges with `WWW-Authenticate: Basic`;
//! `public_registry` opens `/v2/` alone to anyone. Both sides compare
//! SHA-256 digests of the given and the expected token with no early exit,
//! so neither the token's bytes nor its length leak through timing.

use std::path::Path;

use base64::Engine;
use hyper::header::{HeaderMap, AUTHORIZATION};
use microsandbox::{ErrorKind, MicrosandboxError, MicrosandboxResult};
use sha2::{Digest, Sha256};

/// The shortest token taken: 16 characters (`openssl rand -hex 16` gives 32).
pub const MIN_TOKEN_LEN: usize = 16;
const TOKEN_FILE_LIMIT: u64 = 4096;

/// A secret token. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

fn invalid(message: String) -> MicrosandboxError {
    MicrosandboxError::new(ErrorKind::InvalidArgument, message)
}

impl Token {
    /// A token from its text: at least [`MIN_TOKEN_LEN`] visible ASCII
    /// characters, no white space.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`] saying what is wrong (never the token).
    pub fn new(text: &str) -> MicrosandboxResult<Token> {
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "the API token must be visible ASCII characters without white space".into(),
            ));
        }
        if text.len() < MIN_TOKEN_LEN {
            return Err(invalid(format!(
                "the API token has {} characters; give at least {MIN_TOKEN_LEN} \
                 (openssl rand -hex 16)",
                text.len()
            )));
        }
        Ok(Token {
            digest: Sha256::digest(text.as_bytes()).into(),
        })
    }

    /// The token a file holds (one line; the trailing newline is dropped).
    ///
    /// # Errors
    ///
    /// `Io` when it cannot be read; `InvalidArgument` naming the file when
    /// it holds no valid token.
    pub fn from_file(path: &Path) -> MicrosandboxResult<Token> {
        use std::io::Read;
        let file = std::fs::File::open(path)
            .map_err(|e| MicrosandboxError::io("open the token file", path, e))?;
        let mut text = String::new();
        file.take(TOKEN_FILE_LIMIT)
            .read_to_string(&mut text)
            .map_err(|e| MicrosandboxError::io("read the token file", path, e))?;
        Token::new(text.trim_end_matches(['\n', '\r']))
            .map_err(|e| invalid(format!("{}: {}", path.display(), e.message())))
    }

    /// Whether `given` is this token, in constant time.
    pub fn matches(&self, given: &[u8]) -> bool {
        let given: [u8; 32] = Sha256::digest(given).into();
        given
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// The token to use: `explicit`, else the file's, else `MSB_API_TOKEN`,
/// else `MINIBOX_API_TOKEN` (empty variables count as unset).
///
/// # Errors
///
/// As [`Token::new`] and [`Token::from_file`].
pub fn resolve(explicit: Option<&str>, file: Option<&Path>) -> MicrosandboxResult<Option<Token>> {
    if let Some(text) = explicit {
        return Token::new(text).map(Some);
    }
    if let Some(path) = file {
        return Token::from_file(path).map(Some);
    }
    for var in ["MSB_API_TOKEN", "MINIBOX_API_TOKEN"] {
        if let Some(text) = std::env::var(var).ok().filter(|t| !t.trim().is_empty()) {
            return Token::new(text.trim())
                .map(Some)
                .map_err(|e| invalid(format!("{var}: {}", e.message())));
        }
    }
    Ok(None)
}

/// Which side of the server a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// MiniBox's endpoints, `/v1/`, `/openapi.yaml`.
    Management,
    /// The OCI Distribution API under `/v2/`.
    Registry,
}

/// The server's rule.
#[derive(Clone, Debug)]
pub struct Auth {
    /// The token; `None` only on a unix socket.
    pub token: Option<Token>,
    /// `/v2/` without a token.
    pub public_registry: bool,
}

impl Auth {
    /// Whether the request's headers carry the right token for `area`.
    pub fn allows(&self, area: Area, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        if area == Area::Registry && self.public_registry {
            return true;
        }
        let authorization = headers.get(AUTHORIZATION).map(|v| v.as_bytes());
        if let Some(given) = authorization.and_then(|v| scheme(v, b"bearer ")) {
            return token.matches(given.trim_ascii());
        }
        match area {
            Area::Management => headers
                .get("x-api-token")
                .is_some_and(|v| token.matches(v.as_bytes())),
            Area::Registry => authorization
                .and_then(|v| scheme(v, b"basic "))
                .and_then(|b64| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b64.trim_ascii())
                        .ok()
                })
                .and_then(|pair| {
                    let colon = pair.iter().position(|&b| b == b':')?;
                    Some(token.matches(&pair[colon + 1..]))
                })
                .unwrap_or(false),
        }
    }
}

/// What follows an auth scheme (case-insensitive) in a header value.
fn scheme<'a>(value: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &value[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    const SECRET: &str = "0123456789abcdef0123";

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn basic(user: &str, password: &str) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {b64}")
    }

    #[test]
    fn tokens_are_checked_and_never_shown() {
        assert!(Token::new("short").is_err());
        assert!(Token::new("has white space in it!").is_err());
        let t = Token::new(SECRET).unwrap();
        assert!(t.matches(SECRET.as_bytes()));
        assert!(!t.matches(b"0123456789abcdef012"));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "Token(..)");
    }

    #[test]
    fn each_area_takes_its_own_forms() {
        let auth = Auth {
            token: Some(Token::new(SECRET).unwrap()),
            public_registry: false,
        };
        let bearer = headers(&[("authorization", format!("Bearer {SECRET}"))]);
        let x_api = headers(&[("x-api-token", SECRET.to_owned())]);
        let basic_ok = headers(&[("authorization", basic("anyone", SECRET))]);
        let basic_bad = headers(&[("authorization", basic(SECRET, "x"))]);
        let wrong = headers(&[("authorization", "Bearer nope-nope-nope-nope".into())]);
        assert!(auth.allows(Area::Management, &bearer));
        assert!(auth.allows(Area::Management, &x_api));
        assert!(!auth.allows(Area::Management, &basic_ok));
        assert!(auth.allows(Area::Registry, &bearer));
        assert!(auth.allows(Area::Registry, &basic_ok));
        assert!(!auth.allows(Area::Registry, &basic_bad));
        assert!(!auth.allows(Area::Registry, &x_api));
        for area in [Area::Management, Area::Registry] {
            assert!(!auth.allows(area, &wrong));
            assert!(!auth.allows(area, &HeaderMap::new()));
        }
        let public = Auth {
            public_registry: true,
            ..auth
        };
        assert!(public.allows(Area::Registry, &HeaderMap::new()));
        assert!(!public.allows(Area::Management, &HeaderMap::new()));
    }
}
