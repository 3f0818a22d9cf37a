//! One JSON line per request: when, who (the peer address, or `unix`),
//! the method, the path with its query, the status, the body length when
//! known, and how long the answer took to start. Never a header, so never
//! a token.

use std::sync::Arc;
use std::time::Instant;

/// Where log lines go.
pub type LogSink = Arc<dyn Fn(&str) + Send + Sync>;

/// Lines to standard error.
pub fn stderr() -> LogSink {
    Arc::new(|line| eprintln!("{line}"))
}

/// The longest path logged; the rest is cut.
const PATH_MAX: usize = 2048;

/// One request's line.
pub struct Entry<'a> {
    /// `unix`, or the peer's `IP:PORT`.
    pub peer: &'a str,
    /// `GET`.
    pub method: &'a str,
    /// The path and query as asked.
    pub target: &'a str,
    /// The answer's status.
    pub status: u16,
    /// The answer's `Content-Length`, when it has one.
    pub bytes: Option<u64>,
    /// When the request came in.
    pub started: Instant,
}

impl Entry<'_> {
    /// The JSON line.
    pub fn line(&self) -> String {
        let mut target = self.target;
        if target.len() > PATH_MAX {
            let mut end = PATH_MAX;
            while !target.is_char_boundary(end) {
                end -= 1;
            }
            target = &target[..end];
        }
        serde_json::json!({
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "peer": self.peer,
            "method": self.method,
            "path": target,
            "status": self.status,
            "bytes": self.bytes,
            "ms": (self.started.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object() {
        let line = Entry {
            peer: "unix",
            method: "GET",
            target: "/v1/images?x=\"y\"\n",
            status: 200,
            bytes: Some(2),
            started: Instant::now(),
        }
        .line();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["path"], "/v1/images?x=\"y\"\n");
    }
}
