//! One failure policy for PostgreSQL: what the writer does with each kind of error.
//!
//! | class | examples | what happens |
//! |---|---|---|
//! | [`Failure::Transient`] | class 08, 57P01–57P03, 57014, 40001, 40P01, class 53 (disk full, out of memory), 58030, 55P03, I/O errors | keep the data (spool it), back off, retry |
//! | [`Failure::Refused`] | classes 22 and 23 | isolate the refused rows, store each in `trades_rejected` with its error |
//! | [`Failure::Configuration`] | 42xxx (a dropped table, a revoked grant), 25006 (read-only), 28xxx, 3D000, anything unknown | keep the data, `/readyz` 503, one loud error a minute, retry slowly until an operator fixes it |
//!
//! No class drops a trade. An error polytape does not know is treated as configuration: the
//! data is kept and an operator is told, which is always safe.

use crate::error::{Error, ErrorKind};

/// What a failed database call means for the data in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The server or the network is away, or the statement was cancelled: the same data
    /// will go through later.
    Transient,
    /// The server refused the data itself: some row is bad, the others are not.
    Refused,
    /// The server refuses everything until someone changes it (a grant, a table, a
    /// read-only failover, a password).
    Configuration,
}

/// The policy for `e`.
pub(crate) fn classify(e: &Error) -> Failure {
    match e.code() {
        Some(code) => classify_sqlstate(code),
        None => match e.kind() {
            // No SQLSTATE: it did not come from the server (I/O, closed, protocol, timeout).
            ErrorKind::Unavailable | ErrorKind::Io | ErrorKind::Database => Failure::Transient,
            ErrorKind::Config | ErrorKind::Http | ErrorKind::Data => Failure::Configuration,
        },
    }
}

/// The policy for a SQLSTATE.
pub(crate) fn classify_sqlstate(code: &str) -> Failure {
    let class = code.get(..2).unwrap_or("");
    match (class, code) {
        ("08", _) | ("53", _) => Failure::Transient,
        (_, "57P01" | "57P02" | "57P03" | "57014") => Failure::Transient,
        (_, "40001" | "40P01") => Failure::Transient,
        // io_error on the server; lock_not_available (a lock_timeout).
        (_, "58030" | "55P03") => Failure::Transient,
        ("22", _) | ("23", _) => Failure::Refused,
        _ => Failure::Configuration,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_table() {
        use Failure::*;
        let cases: &[(&str, Failure, &str)] = &[
            ("08006", Transient, "connection failure"),
            ("08001", Transient, "cannot establish"),
            ("57P01", Transient, "admin shutdown"),
            ("57P02", Transient, "crash shutdown"),
            ("57P03", Transient, "cannot connect now"),
            ("57014", Transient, "statement timeout"),
            ("40001", Transient, "serialization failure"),
            ("40P01", Transient, "deadlock between two instances"),
            ("53100", Transient, "disk full"),
            ("53200", Transient, "out of memory"),
            ("53300", Transient, "too many connections"),
            ("58030", Transient, "server i/o error"),
            ("55P03", Transient, "lock not available"),
            ("22003", Refused, "numeric out of range"),
            ("22P02", Refused, "invalid text representation"),
            ("23514", Refused, "check violation"),
            ("23502", Refused, "not null violation"),
            (
                "23505",
                Refused,
                "unique violation (the writer's staging path)",
            ),
            ("42P01", Configuration, "undefined table"),
            ("42501", Configuration, "insufficient privilege"),
            ("42703", Configuration, "undefined column"),
            ("25006", Configuration, "read-only transaction"),
            ("28000", Configuration, "invalid authorization"),
            ("28P01", Configuration, "invalid password"),
            ("3D000", Configuration, "database does not exist"),
            ("0A000", Configuration, "feature not supported"),
            ("XX000", Configuration, "internal error"),
            (
                "99999",
                Configuration,
                "unknown: keep the data, tell someone",
            ),
            ("", Configuration, "empty"),
        ];
        for &(code, want, what) in cases {
            assert_eq!(classify_sqlstate(code), want, "{code} ({what})");
        }
    }

    #[test]
    fn errors_without_a_sqlstate() {
        let io = Error::from(std::io::Error::other("reset by peer"));
        assert_eq!(classify(&io), Failure::Transient);
        assert_eq!(
            classify(&Error::config("bad sslmode")),
            Failure::Configuration
        );
    }
}
