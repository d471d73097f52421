//! TLS to PostgreSQL through rustls, against the real server.

use std::time::Duration;

use polytape::store::connect;

use polytape_testkit::{TestDb, Watchdog};

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

/// The `wss://` path for real: rustls on both ends, through a local TLS terminator in front
/// of the simulator. With the test CA trusted, stored == delivered; without it, the
/// certificate is refused, counted as reconnects, and nothing panics or is stored.
#[test]
fn wss_through_rustls_stores_every_trade() {
    use polytape::listener::Listener;
    use polytape_testkit::pipeline::{self, Running, assert_stored_equals_delivered};
    use polytape_testkit::tls_proxy::{TestCert, TlsProxy};
    use polytape_testkit::wait_until;

    let _w = Watchdog::new(
        "wss_through_rustls_stores_every_trade",
        Duration::from_secs(90),
    );
    polytape_testkit::init_logs();
    let cert = TestCert::new();
    let db = TestDb::new();
    let sim = pipeline::sim(60, 300.0);
    pipeline::load_markets(&db, &sim);
    let proxy = TlsProxy::start(&cert, sim.addr());
    let wss = format!("wss://localhost:{}/ws/market", proxy.addr().port());

    // Untrusted: the handshake fails on the certificate, again and again, without a panic.
    let mut config = pipeline::config(&db, &sim);
    config.ws_url = wss.clone();
    let listener = Listener::from_database(config.clone()).expect("listener");
    let health = listener.health();
    let running = Running::start(listener);
    assert!(wait_until(Duration::from_secs(20), || health
        .snapshot()
        .reconnections
        >= 2));
    assert_eq!(health.snapshot().connections_active, 0);
    let (h, _) = running.stop();
    assert_eq!(h.trades_received, 0);

    // Trusted: trades flow over TLS.
    config.ws_ca_file = Some(cert.ca_path());
    let listener = Listener::from_database(config).expect("listener");
    let health = listener.health();
    let running = Running::start(listener);
    assert!(
        wait_until(Duration::from_secs(30), || health
            .snapshot()
            .trades_inserted
            >= 300),
        "{:?}",
        health.snapshot()
    );
    let (h, _) = running.stop();
    assert_eq!(h.reconnections, 0);
    assert_stored_equals_delivered(&db, &sim);
}
