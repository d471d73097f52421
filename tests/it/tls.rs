//! TLS to PostgreSQL through rustls, against the real server.

use std::time::Duration;

use polytape::store::connect;

use crate::support::{TestDb, Watchdog};

#[test]
fn sslmode_require_encrypts_or_fails_clearly() {
    let _w = Watchdog::new("sslmode_require", Duration::from_secs(30));
    let db = TestDb::new();
    let ssl_on: String = db
        .client()
        .query_one("SHOW ssl", &[])
        .expect("show ssl")
        .get(0);
    let url = format!("{} sslmode=require", db.url());
    match (ssl_on.as_str(), connect(&url, Duration::from_secs(5))) {
        ("on", Ok(mut client)) => {
            let encrypted: bool = client
                .query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .expect("pg_stat_ssl")
                .get(0);
            assert!(encrypted);
        }
        ("off", Err(e)) => assert!(e.is_closed(), "a connection failure: {e}"),
        (ssl, other) => panic!("ssl={ssl}: {:?}", other.map(|_| ())),
    }
    // verify-full against the built-in web roots cannot accept a local self-signed server.
    let strict = format!("{} sslmode=verify-full", db.url());
    assert!(connect(&strict, Duration::from_secs(5)).is_err());
    let bogus = format!("{} sslmode=sometimes", db.url());
    assert!(connect(&bogus, Duration::from_secs(5)).is_err_and(|e| e.is_config()));
}
