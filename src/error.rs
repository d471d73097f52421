//! polytape's error type: opaque, with a public [`ErrorKind`] that says what failed and
//! [`Error::is_transient`] that says whether trying again may help.

use std::fmt;

/// An error from polytape.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
}

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The database refused a statement (its SQLSTATE is in [`Error::code`]).
    Database,
    /// The database could not be reached, or the connection was lost.
    Unavailable,
    /// A local I/O failure (a socket, a file, a thread that could not start).
    Io,
    /// An HTTP service (Gamma) failed or answered something unusable.
    Http,
    /// A configuration value is wrong.
    Config,
    /// Data that cannot be used as it is (a listener that ended on its own, say).
    Data,
}

#[derive(Debug)]
enum Kind {
    Db(postgres::Error),
    /// Connecting (or setting up a new session) failed.
    Unavailable(postgres::Error, Option<String>),
    Io(std::io::Error),
    Http(String),
    Config(String),
    Data(String),
    /// A row refused before it reached the server, with the SQLSTATE the server would give.
    Refused(&'static str, String),
}

impl Error {
    pub(crate) fn config(msg: impl Into<String>) -> Self {
        Error {
            kind: Kind::Config(msg.into()),
        }
    }

    /// A failure to connect: whatever the server said, retrying later may succeed.
    pub(crate) fn unavailable(e: postgres::Error) -> Self {
        Error {
            kind: Kind::Unavailable(e, None),
        }
    }

    /// [`Error::unavailable`], saying where it tried and, after a `|`, what to do.
    pub(crate) fn unavailable_at(e: postgres::Error, context: String) -> Self {
        Error {
            kind: Kind::Unavailable(e, Some(context)),
        }
    }

    pub(crate) fn http(msg: impl Into<String>) -> Self {
        Error {
            kind: Kind::Http(msg.into()),
        }
    }

    pub(crate) fn data(msg: impl Into<String>) -> Self {
        Error {
            kind: Kind::Data(msg.into()),
        }
    }

    /// A row polytape refuses to write because it cannot be stored exactly, classified as the
    /// server's refusals are (`code`, a class-22 SQLSTATE): the row is isolated and kept in
    /// `trades_rejected`.
    pub(crate) fn refused(code: &'static str, msg: impl Into<String>) -> Self {
        Error {
            kind: Kind::Refused(code, msg.into()),
        }
    }

    /// The SQLSTATE code, when the database refused something.
    pub fn code(&self) -> Option<&str> {
        match &self.kind {
            Kind::Db(e) | Kind::Unavailable(e, _) => e.code().map(|c| c.code()),
            Kind::Refused(code, _) => Some(code),
            _ => None,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match &self.kind {
            Kind::Db(e) if is_connection_error(e) => ErrorKind::Unavailable,
            Kind::Db(_) => ErrorKind::Database,
            Kind::Unavailable(..) => ErrorKind::Unavailable,
            Kind::Io(_) => ErrorKind::Io,
            Kind::Http(_) => ErrorKind::Http,
            Kind::Config(_) => ErrorKind::Config,
            Kind::Data(_) | Kind::Refused(..) => ErrorKind::Data,
        }
    }

    /// True when the same call may succeed later unchanged: the database or the network went
    /// away, or the server cancelled the statement (a timeout). False for a refused
    /// statement, a bad configuration value, or unusable data.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind(), ErrorKind::Unavailable | ErrorKind::Io)
    }

    /// True for a bad configuration value.
    #[cfg(test)]
    pub(crate) fn is_config(&self) -> bool {
        self.kind() == ErrorKind::Config
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Db(e) => match e.as_db_error() {
                Some(db) => write!(f, "database: {} ({})", db.message(), db.code().code()),
                None => write!(f, "database: {e}"),
            },
            Kind::Unavailable(e, context) => {
                let cause = match e.as_db_error() {
                    Some(db) => format!("{} ({})", db.message(), db.code().code()),
                    // The postgres crate's own text ("error connecting to server") says
                    // little; its source says what happened (refused, timed out, …).
                    None => match std::error::Error::source(e) {
                        Some(src) => format!("{e}: {src}"),
                        None => e.to_string(),
                    },
                };
                match context
                    .as_deref()
                    .map(|c| c.split_once('|').unwrap_or((c, "")))
                {
                    Some((at, "")) => write!(f, "cannot connect to PostgreSQL {at}: {cause}"),
                    Some((at, hint)) => {
                        write!(f, "cannot connect to PostgreSQL {at}: {cause}. {hint}")
                    }
                    None => write!(f, "cannot connect: {cause}"),
                }
            }
            Kind::Io(e) => write!(f, "i/o: {e}"),
            Kind::Http(m) => write!(f, "http: {m}"),
            Kind::Config(m) => write!(f, "configuration: {m}"),
            Kind::Data(m) => write!(f, "data: {m}"),
            Kind::Refused(code, m) => write!(f, "refused: {m} ({code})"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Db(e) | Kind::Unavailable(e, _) => Some(e),
            Kind::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        Error { kind: Kind::Db(e) }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error { kind: Kind::Io(e) }
    }
}

/// `Result` with polytape's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether an error means the connection is gone (as opposed to the server refusing a
/// statement): closed client, I/O error, server shutting down or crashed.
fn is_connection_error(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            let c = code.code();
            // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now,
            // class 08 connection exceptions, 57014 query_canceled (statement timeout).
            c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03" | "57014")
        }
        // No SQLSTATE: the error did not come from the server (I/O, protocol, timeout).
        None => e.as_db_error().is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_transience() {
        let io = Error::from(std::io::Error::other("reset"));
        let cases = [
            (Error::config("x"), ErrorKind::Config, false),
            (Error::http("x"), ErrorKind::Http, false),
            (Error::data("x"), ErrorKind::Data, false),
            (io, ErrorKind::Io, true),
        ];
        for (e, kind, transient) in cases {
            assert_eq!((e.kind(), e.is_transient()), (kind, transient), "{e}");
        }
    }
}
