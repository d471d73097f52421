//! A TLS terminator in front of the simulator, so the `wss://` path runs for real: a
//! self-signed certificate made with the `openssl` command, rustls on the server side, and
//! bytes pumped to and from the simulator's plain port.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate for `localhost` and 127.0.0.1, and its key, in a temporary directory.
pub struct TestCert {
    dir: PathBuf,
}

impl TestCert {
    pub fn new() -> TestCert {
        let dir = std::env::temp_dir().join(format!(
            "polytape-cert-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).expect("cert dir");
        // A CA, and a leaf for localhost signed by it: webpki takes no CA certificate as a
        // server's own.
        let ext = dir.join("leaf.ext");
        std::fs::write(
            &ext,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext file");
        let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-days",
                    "1",
                    "-subj",
                    "/CN=polytape test CA",
                    "-keyout",
                    &p("ca.key"),
                    "-out",
                    &p("ca.pem"),
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-subj",
                    "/CN=localhost",
                    "-keyout",
                    &p("key.pem"),
                    "-out",
                    &p("leaf.csr"),
                ],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &p("leaf.csr"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &p("leaf.ext"),
            "-out",
            &p("cert.pem"),
        ]);
        TestCert { dir }
    }

    /// The server's certificate (for `localhost` and 127.0.0.1), PEM.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// The server certificate's private key, PEM.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// The CA that signed the server's certificate: what a client must trust.
    pub fn ca_path(&self) -> String {
        self.dir.join("ca.pem").to_string_lossy().into_owned()
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(self.dir.join("cert.pem"))
                .expect("cert pem")
                .collect::<Result<_, _>>()
                .expect("certs");
        let key = PrivateKeyDer::from_pem_file(self.dir.join("key.pem")).expect("key pem");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        Arc::new(config)
    }
}

fn openssl(args: &[&str]) {
    crate::run(
        Command::new("openssl").args(args),
        &format!("openssl {args:?} (it makes the test certificates)"),
    );
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Accepts TLS on a loopback port and forwards every connection to `backend`.
pub struct TlsProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl TlsProxy {
    pub fn start(cert: &TestCert, backend: SocketAddr) -> TlsProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = cert.server_config();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let config = Arc::clone(&config);
                let stopping = Arc::clone(&stopping);
                std::thread::spawn(move || pump(client, backend, config, &stopping));
            }
        });
        TlsProxy { addr, stop }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// One connection: TLS from the client, plain to the backend, polled both ways.
fn pump(
    client: TcpStream,
    backend: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    stop: &AtomicBool,
) {
    let Ok(mut plain) = TcpStream::connect(backend) else {
        return;
    };
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let tick = Some(Duration::from_millis(2));
    if client.set_read_timeout(tick).is_err() || plain.set_read_timeout(tick).is_err() {
        return;
    }
    let mut tls = rustls::StreamOwned::new(conn, client);
    let mut buf = vec![0u8; 64 * 1024];
    let quiet =
        |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    while !stop.load(Ordering::SeqCst) {
        match tls.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if plain.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if quiet(&e) => {}
            Err(_) => return,
        }
        match plain.read(&mut buf) {
            Ok(0) => {
                tls.conn.send_close_notify();
                let _ = tls.flush();
                return;
            }
            Ok(n) => {
                if tls.write_all(&buf[..n]).and_then(|()| tls.flush()).is_err() {
                    return;
                }
            }
            Err(e) if quiet(&e) => {}
            Err(_) => return,
        }
    }
}
