//! `Retry-After`, the one parser: a number of seconds or an HTTP date (RFC 9110 §10.2.3).

use std::time::{Duration, SystemTime};

/// How long a `Retry-After` value asks to wait, measured from `now`, at most `cap`. A date in
/// the past is "now" (zero); an unreadable value is `None`, and the caller uses its own
/// backoff instead.
pub(crate) fn retry_after(value: &str, now: SystemTime, cap: Duration) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // A very long run of digits is still "a long time", not an error.
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_dates() {
        // 1994-11-06 08:49:37 UTC, the RFC's example date.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let cap = Duration::from_secs(120);
        let s = Duration::from_secs;
        let cases: &[(&str, Option<Duration>)] = &[
            ("0", Some(s(0))),
            ("7", Some(s(7))),
            (" 7 ", Some(s(7))),
            ("120", Some(s(120))),
            ("3600", Some(cap)),
            ("99999999999999999999999", Some(cap)),
            ("Sun, 06 Nov 1994 08:49:47 GMT", Some(s(10))), // IMF-fixdate
            ("Sunday, 06-Nov-94 08:50:37 GMT", Some(s(60))), // obsolete RFC 850
            ("Sun Nov  6 08:49:57 1994", Some(s(20))),      // obsolete asctime
            ("Sun, 06 Nov 1994 08:00:00 GMT", Some(s(0))),  // in the past
            ("Mon, 07 Nov 1994 08:49:37 GMT", Some(cap)),   // a day away
            ("", None),
            ("-1", None),
            ("1.5", None),
            ("soon", None),
            ("Sun, 06 Nov 1994 25:00:00 GMT", None),
        ];
        for &(value, want) in cases {
            assert_eq!(retry_after(value, now, cap), want, "{value:?}");
        }
    }
}
