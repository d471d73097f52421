//! The PostgreSQL side: connections, migrations, markets and the trade writer.

mod bars;
mod books;
pub(crate) mod failure;
pub(crate) mod markets;
pub(crate) mod sessions;
pub mod tape;
mod tls;
pub(crate) mod trades;

pub use crate::connstr::redact;

use std::time::Duration;

use postgres::{Client, NoTls};

use crate::config::Config;
use crate::error::{Error, Result};

/// Migrations, embedded at build time: (version, name, SQL). Append only.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/V1__initial.sql"),
    ),
    (2, "gaps", include_str!("../../migrations/V2__gaps.sql")),
    (
        3,
        "spool_sessions_rejected",
        include_str!("../../migrations/V3__spool_sessions_rejected.sql"),
    ),
    (
        4,
        "complete_tape",
        include_str!("../../migrations/V4__complete_tape.sql"),
    ),
    (
        5,
        "resolution_attempts",
        include_str!("../../migrations/V5__resolution_attempts.sql"),
    ),
    (
        6,
        "compact_tape",
        include_str!("../../migrations/V6__compact_tape.sql"),
    ),
    (
        7,
        "safe_tape_ensure_month",
        include_str!("../../migrations/V7__safe_tape_ensure_month.sql"),
    ),
    (
        8,
        "tape_hash_lookup",
        include_str!("../../migrations/V8__tape_hash_lookup.sql"),
    ),
    (
        9,
        "session_liveness",
        include_str!("../../migrations/V9__session_liveness.sql"),
    ),
    (
        10,
        "gap_fill_progress",
        include_str!("../../migrations/V10__gap_fill_progress.sql"),
    ),
    (
        11,
        "book_snapshots",
        include_str!("../../migrations/V11__book_snapshots.sql"),
    ),
    (
        12,
        "book_files",
        include_str!("../../migrations/V12__book_files.sql"),
    ),
    (
        13,
        "price_bars",
        include_str!("../../migrations/V13__price_bars.sql"),
    ),
    (
        14,
        "snapshot_levels_checked",
        include_str!("../../migrations/V14__snapshot_levels_checked.sql"),
    ),
    (15, "chain", include_str!("../../migrations/V15__chain.sql")),
    (
        16,
        "tape_hash_lookup_by_key",
        include_str!("../../migrations/V16__tape_hash_lookup_by_key.sql"),
    ),
    (
        17,
        "tape_key_hashed",
        include_str!("../../migrations/V17__tape_key_hashed.sql"),
    ),
];

/// Key of the advisory lock held while a source looks the tape up and adds what it lacks.
const ADDING_LOCK: i64 = 0x706f_6c79_6164_6473; // "polyadds"

/// Held while one source (the backfill, the chain) looks the tape up and adds what it lacks,
/// so two sources never both find a trade missing and both add it (their copies differ in
/// time or price text, so the natural key would not catch it). Released when dropped, or
/// with the session.
pub(crate) struct AddingLock<'a>(&'a mut Client);

impl<'a> AddingLock<'a> {
    pub(crate) fn take(db: &'a mut Client) -> Result<AddingLock<'a>> {
        db.execute("SELECT pg_advisory_lock($1)", &[&ADDING_LOCK])?;
        Ok(AddingLock(db))
    }

    /// The connection it is held on.
    pub(crate) fn db(&mut self) -> &mut Client {
        self.0
    }
}

impl Drop for AddingLock<'_> {
    fn drop(&mut self) {
        if let Err(e) = self
            .0
            .execute("SELECT pg_advisory_unlock($1)", &[&ADDING_LOCK])
        {
            log::debug!("store: adding lock not released ({e}); it goes with the session");
        }
    }
}

/// Key of the advisory lock held while migrating, so that two processes starting together do
/// not both apply the same migration.
const MIGRATION_LOCK: i64 = 0x706f_6c79_7461_7065; // "polytape"

/// Opens a connection to `config`'s database with timeouts and keepalives set, so a vanished
/// server is noticed instead of hanging the caller forever; statements are limited to the
/// configured statement timeout, and the session's time zone is UTC.
pub fn connect(config: &Config) -> Result<Client> {
    connect_with(&config.database_url, config.statement_timeout)
}

/// [`connect`], from its parts.
pub(crate) fn connect_with(url: &str, statement_timeout: Duration) -> Result<Client> {
    let (url, tls) = tls::split_tls_options(url)?;
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| Error::config(format!("invalid database URL: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    // A partition during a COPY is noticed in seconds, not after the kernel's 15 minutes of
    // retransmissions: unacknowledged data for 20 s ends the connection, and an idle one is
    // probed after 10 s.
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(20));
    if config.get_application_name().is_none() {
        config.application_name("polytape");
    }
    // `prefer` (also when sslmode is absent) tries TLS when the server offers it, then plain
    // text, as libpq does; `disable` never tries.
    let mut client = match tls.mode {
        tls::SslMode::Disable => config.connect(NoTls),
        _ => config.connect(tls::connector(&tls)?),
    }
    .map_err(|e| {
        let hint = if e.as_db_error().is_none() && !e.is_closed() {
            format!(
                "{}|Is PostgreSQL running there? Start it (for example `pg_ctlcluster 15 main \
                 start` or `systemctl start postgresql`), or point DATABASE_URL \
                 (--database-url) at a server that runs",
                where_tried(&config)
            )
        } else {
            where_tried(&config)
        };
        Error::unavailable_at(e, hint)
    })?;
    client
        .batch_execute(&format!(
            "SET statement_timeout = {}; SET TIME ZONE 'UTC'",
            statement_timeout.as_millis()
        ))
        .map_err(Error::unavailable)?;
    Ok(client)
}

/// "host:port" of every address a connection attempt tried, for error messages.
fn where_tried(config: &postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match h {
                postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                postgres::config::Host::Unix(path) => format!("{}/.s.PGSQL.{port}", path.display()),
            }
        })
        .collect();
    if hosts.is_empty() {
        "at the default socket".to_owned()
    } else {
        format!("at {}", hosts.join(", "))
    }
}

/// Applies every migration not yet applied to `config`'s database, on a connection of its
/// own whose statements may take the configured migration timeout. Safe to run twice, and
/// from two processes at once (the second waits on an advisory lock). Returns how many it
/// applied.
pub fn migrate(config: &Config) -> Result<usize> {
    migrate_up_to(config, i32::MAX)
}

/// [`migrate`], stopping after migration `last` (tests of a later migration start from here).
pub(crate) fn migrate_up_to(config: &Config, last: i32) -> Result<usize> {
    let mut client = connect_with(&config.database_url, config.migration_timeout)?;
    migrate_on(&mut client, last)
}

/// The oldest PostgreSQL polytape runs on: the natural key is `UNIQUE … NULLS NOT DISTINCT`
/// (PostgreSQL 15), and on 14 the migration would die with a bare syntax error.
const MIN_SERVER_VERSION: i32 = 150_000;

/// Refuses a server older than [`MIN_SERVER_VERSION`], in a sentence that names both.
fn check_server_version(version_num: i32) -> Result<()> {
    if version_num >= MIN_SERVER_VERSION {
        return Ok(());
    }
    // server_version_num: major · 10000 + minor since PostgreSQL 10.
    Err(Error::config(format!(
        "PostgreSQL {}.{} found; polytape needs PostgreSQL {} or newer (its natural key is \
         UNIQUE … NULLS NOT DISTINCT)",
        version_num / 10_000,
        version_num % 10_000,
        MIN_SERVER_VERSION / 10_000
    )))
}

fn migrate_on(client: &mut Client, last: i32) -> Result<usize> {
    let version: String = client
        .query_one("SELECT current_setting('server_version_num')", &[])?
        .try_get(0)?;
    let version = version
        .trim()
        .parse()
        .map_err(|_| Error::data(format!("server_version_num {version:?} is not a number")))?;
    check_server_version(version)?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let result = apply_migrations(client, last);
    let unlock = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    let applied = result?;
    unlock?;
    Ok(applied)
}

fn apply_migrations(client: &mut Client, last: i32) -> Result<usize> {
    // A role that may write but not create (a least-privilege deployment) can still start
    // against a database that is up to date: the table is created only when it is missing.
    let exists: bool = client
        .query_one("SELECT to_regclass('polytape_migrations') IS NOT NULL", &[])?
        .try_get(0)?;
    if !exists {
        client.batch_execute(
            "CREATE TABLE IF NOT EXISTS polytape_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
        )?;
    }
    let mut applied = 0;
    for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 <= last) {
        let done = client
            .query_opt(
                "SELECT 1 FROM polytape_migrations WHERE version = $1",
                &[&version],
            )?
            .is_some();
        if done {
            continue;
        }
        let mut tx = client.transaction()?;
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO polytape_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )?;
        tx.commit()?;
        log::info!("applied migration V{version}__{name}");
        applied += 1;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_older_than_15_are_refused_by_name() {
        assert!(check_server_version(150_000).is_ok());
        assert!(check_server_version(170_004).is_ok());
        let e = check_server_version(140_010).expect_err("14 is refused");
        assert!(e.is_config(), "{e}");
        let text = e.to_string();
        assert!(text.contains("PostgreSQL 14.10 found"), "{text}");
        assert!(text.contains("PostgreSQL 15 or newer"), "{text}");
    }
}
