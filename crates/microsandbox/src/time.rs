//! Timestamps as stored: RFC 3339 UTC with milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, truncated to milliseconds so a stored and re-read time compare equal.
pub fn now() -> SystemTime {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// `2026-11-23T18:04:33.123Z`.
pub fn format(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses what [`format`] wrote (or any RFC 3339 time); `None` if it is not one.
pub fn parse(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
        .ok()
        .or_else(|| humantime::parse_rfc3339(text).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_millisecond_precision() {
        let t = now();
        assert_eq!(parse(&format(t)), Some(t));
        assert!(parse("yesterday").is_none());
    }
}
