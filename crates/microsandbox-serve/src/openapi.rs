//! The OpenAPI 3 document of the JSON endpoints (`openapi.yaml` in this
//! crate, compiled in), served at `GET /openapi.yaml`.

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};

use crate::reply::{self, not_allowed, Reply};

/// The document.
pub const DOCUMENT: &str = include_str!("../openapi.yaml");

/// `GET /openapi.yaml`.
pub fn handle(req: &Request<Incoming>) -> Reply {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return not_allowed("GET", true);
    }
    reply::with(StatusCode::OK, "application/yaml", DOCUMENT)
}

#[cfg(test)]
mod tests {
    use super::DOCUMENT;

    #[test]
    fn every_json_endpoint_is_documented() {
        for path in [
            "/images:",
            "/images/pull:",
            "/images/save:",
            "/images/load:",
            "/images/remove:",
            "/system/prune:",
            "/ping:",
            "/v1/images:",
            "/v1/images/get:",
            "/v1/images/inspect:",
            "/v1/images/remove:",
            "/v1/images/prune:",
            "/v1/images/disk-usage:",
            "/v1/images/orphans:",
            "/v1/images/purge:",
            "/v1/images/verify:",
            "/v1/images/pull:",
            "/v1/images/push:",
            "/v1/images/load:",
            "/v1/images/save:",
            "/v1/leases:",
            "/v1/leases/{id}:",
        ] {
            assert!(
                DOCUMENT.contains(&format!("\n  {path}\n")),
                "{path} is not in openapi.yaml"
            );
        }
    }
}
