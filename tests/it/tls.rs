//! TLS to PostgreSQL through rustls, against the real server.

use std::time::Duration;

use polytape::ErrorKind;
use polytape::store::connect;

use polytape_testkit::db::PrivateCluster;
use polytape_testkit::tls_proxy::TestCert;
use polytape_testkit::{TestDb, Watchdog};

/// libpq's `sslmode` meanings through rustls, against a real server with TLS on (a private
/// cluster serving a certificate for localhost signed by a test CA): every mode that should
/// encrypt does (`pg_stat_ssl`), every mode that should refuse does.
#[test]
fn sslmodes_against_a_server_with_tls_on() {
    let _w = Watchdog::new(
        "sslmodes_against_a_server_with_tls_on",
        Duration::from_secs(60),
    );
    let cert = TestCert::new();
    let cluster = PrivateCluster::start_with_tls(&cert)
        .expect("initdb is installed (CI installs PostgreSQL): this test needs its own cluster");
    let base = cluster.database_url();
    let ca = cert.ca_path();
    let config = |extra: &str| {
        polytape::Config::builder()
            .database_url(format!("{base} {extra}"))
            .statement_timeout(Duration::from_secs(5))
            .build()
    };
    let encrypted = |extra: &str| -> Result<bool, polytape::Error> {
        let mut client = connect(&config(extra)?)?;
        Ok(client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .expect("pg_stat_ssl")
            .get(0))
    };
    let on = |extra: &str| match encrypted(extra) {
        Ok(ssl) => ssl,
        Err(e) => panic!("{extra}: {e}"),
    };
    assert!(on("sslmode=require"), "require encrypts");
    assert!(on(&format!("sslmode=verify-ca sslrootcert={ca}")));
    let localhost = base.replace("host=127.0.0.1", "host=localhost");
    let verify_full = format!("{localhost} sslmode=verify-full sslrootcert={ca}");
    let mut client = connect(
        &config("")
            .expect("valid")
            .to_builder()
            .database_url(verify_full)
            .build()
            .expect("valid"),
    )
    .expect("verify-full with the right root and host name");
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .expect("pg_stat_ssl")
        .get(0);
    assert!(ssl, "verify-full encrypts");
    assert!(!on("sslmode=disable"), "disable stays in plain text");
    // Absent means prefer, as in libpq: TLS when the server offers it.
    assert!(on(""), "no sslmode: TLS, since this server offers it");
    assert!(on("sslmode=prefer"));
    // And plain text from a server without TLS, rather than a failure.
    let plain = PrivateCluster::start().expect("initdb");
    let plain_config = polytape::Config::builder()
        .database_url(plain.database_url())
        .build()
        .expect("valid");
    let mut client = connect(&plain_config).expect("prefer falls back to plain text");
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .expect("pg_stat_ssl")
        .get(0);
    assert!(!ssl, "the server offers no TLS");
    // The built-in web roots do not know the test CA: refused, as a connection failure.
    let refused = encrypted("sslmode=verify-full").expect_err("an unknown CA is refused");
    assert!(refused.is_transient(), "{refused}");
    let refused = encrypted(&format!(
        "sslmode=verify-ca sslrootcert={}",
        cert.cert_path().display()
    ));
    assert!(refused.is_err(), "a leaf is not a root");
    // A mode libpq does not know is a configuration error, before any connection.
    let bogus = config("sslmode=sometimes").and_then(|c| connect(&c));
    assert!(bogus.is_err_and(|e| e.kind() == ErrorKind::Config));
}

/// The `wss://` path for real: rustls on both ends, through a local TLS terminator in front
/// of the simulator. With the test CA trusted, stored == delivered; without it, the
/// certificate is refused, counted as reconnects, and nothing panics or is stored.
#[test]
fn wss_through_rustls_stores_every_trade() {
    use polytape::Listener;
    use polytape_testkit::pipeline::{self, Running, assert_stored_equals_delivered};
    use polytape_testkit::tls_proxy::TlsProxy;
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
    let config = pipeline::config(&db, &sim)
        .to_builder()
        .ws_url(wss.clone())
        .build()
        .expect("a valid config");
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
    let config = config
        .to_builder()
        .ws_ca_file(Some(cert.ca_path()))
        .build()
        .expect("a valid config");
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
