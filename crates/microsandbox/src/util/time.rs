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

/// A system time as the API hands it out.
pub fn utc(t: SystemTime) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::<chrono::Utc>::from(t)
}

/// Parses what [`format`] wrote as the API hands it out.
pub fn parse_utc(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    parse(text).map(utc)
}

/// The latest time RFC 3339 can write: 9999-12-31T23:59:59.999Z.
pub fn latest() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(253_402_300_799_999)
}

/// `2026-11-23T18:04:33.123Z`; times past [`latest`] are written as it.
pub fn format(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t.min(latest())).to_string()
}

/// `start + d`, or `None` past what [`format`] can write.
pub fn add(start: SystemTime, d: Duration) -> Option<SystemTime> {
    start.checked_add(d).filter(|t| *t <= latest())
}

/// Parses what [`format`] wrote, or any RFC 3339 time (an offset such as
/// `+01:00` included); `None` if it is not one.
pub fn parse(text: &str) -> Option<SystemTime> {
    let t = chrono::DateTime::parse_from_rfc3339(text.trim()).ok()?;
    let utc = t.with_timezone(&chrono::Utc);
    let secs = u64::try_from(utc.timestamp()).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, utc.timestamp_subsec_nanos()))
}

/// The time a file's `st_*time` and `st_*time_nsec` fields give; `None`
/// before 1970 or for nanoseconds out of range.
pub fn from_parts(secs: i64, nanos: i64) -> Option<SystemTime> {
    let secs = u64::try_from(secs).ok()?;
    let nanos = u32::try_from(nanos).ok().filter(|n| *n < 1_000_000_000)?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_millisecond_precision() {
        let t = now();
        assert_eq!(parse(&format(t)), Some(t));
        assert!(parse("yesterday").is_none());
        assert!(parse("2999-01-01").is_none());
    }

    #[test]
    fn offsets_are_times_not_errors() {
        assert_eq!(
            parse("2999-01-01T00:00:00+01:00"),
            parse("2998-12-31T23:00:00Z")
        );
        assert!(parse("2999-01-01T00:00:00+01:00").unwrap() > now());
        // Docker and skopeo write nanoseconds.
        assert!(parse("2020-01-01T00:00:00.123456789Z").is_some());
    }

    #[test]
    fn far_futures_are_refused_or_clamped_not_a_panic() {
        assert!(add(now(), Duration::from_secs(u64::MAX / 2)).is_none());
        assert_eq!(
            format(UNIX_EPOCH + Duration::from_secs(1 << 40)),
            "9999-12-31T23:59:59.999Z"
        );
    }
}
