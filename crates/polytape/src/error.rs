//! polytape's error type: opaque, with methods that say what kind of failure it was.

use std::fmt;

/// An error from polytape.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Db(postgres::Error),
    /// Connecting (or setting up a new session) failed.
    Unavailable(postgres::Error),
    Io(std::io::Error),
    Http(String),
    Config(String),
    Data(String),
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
            kind: Kind::Unavailable(e),
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

    /// The SQLSTATE code, when the database refused something.
    pub fn code(&self) -> Option<&str> {
        match &self.kind {
            Kind::Db(e) | Kind::Unavailable(e) => e.code().map(|c| c.code()),
            _ => None,
        }
    }

    /// True when the database connection is gone (closed, I/O error, server shutting down):
    /// reconnecting and retrying may succeed.
    pub fn is_closed(&self) -> bool {
        match &self.kind {
            Kind::Db(e) => crate::store::is_connection_error(e),
            Kind::Io(_) | Kind::Unavailable(_) => true,
            _ => false,
        }
    }

    /// True for a bad configuration value.
    pub fn is_config(&self) -> bool {
        matches!(self.kind, Kind::Config(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Db(e) => match e.as_db_error() {
                Some(db) => write!(f, "database: {} ({})", db.message(), db.code().code()),
                None => write!(f, "database: {e}"),
            },
            Kind::Unavailable(e) => match e.as_db_error() {
                Some(db) => write!(f, "cannot connect: {} ({})", db.message(), db.code().code()),
                None => write!(f, "cannot connect: {e}"),
            },
            Kind::Io(e) => write!(f, "i/o: {e}"),
            Kind::Http(m) => write!(f, "http: {m}"),
            Kind::Config(m) => write!(f, "configuration: {m}"),
            Kind::Data(m) => write!(f, "data: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Db(e) | Kind::Unavailable(e) => Some(e),
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

pub type Result<T, E = Error> = std::result::Result<T, E>;
