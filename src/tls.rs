//! The rustls pieces every TLS client of polytape shares (the market channel's `wss://`,
//! PostgreSQL's `sslmode`): the crypto provider, chosen once, and loading PEM roots.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::{Error, Result};

/// The `ring` provider, named explicitly: rustls panics on the first handshake when no
/// provider, or two, are enabled and none was chosen.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A root store: the built-in web roots when `web_roots`, plus every certificate of the PEM
/// file at `pem_file`. `what` names the setting in errors (`"sslrootcert"`, say). A file that
/// cannot be read, holds a broken certificate or holds none at all is a configuration error:
/// a file that adds nothing is a mistake, not a no-op.
pub(crate) fn root_store(
    pem_file: Option<&str>,
    web_roots: bool,
    what: &str,
) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    if web_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = pem_file {
        let bad = |e: &dyn std::fmt::Display| Error::config(format!("{what} {path}: {e}"));
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad(&"no PEM certificate in the file"));
        }
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> String {
        format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn pem_roots_table() {
        let web = webpki_roots::TLS_SERVER_ROOTS.len();
        // (file, web roots, Ok(count) or Err(part of the message))
        let cases: &[(Option<&str>, bool, std::result::Result<usize, &str>)] = &[
            (None, false, Ok(0)),
            (None, true, Ok(web)),
            (Some("one-root.pem"), false, Ok(1)),
            (Some("two-roots.pem"), false, Ok(2)),
            (Some("two-roots.pem"), true, Ok(web + 2)),
            (Some("no-roots.pem"), false, Err("no PEM certificate")),
            (Some("broken.pem"), false, Err("broken.pem")),
            (Some("missing.pem"), true, Err("missing.pem")),
        ];
        for (file, web_roots, want) in cases {
            let path = file.map(data);
            let got = root_store(path.as_deref(), *web_roots, "ws CA file");
            match (got, want) {
                (Ok(store), Ok(n)) => assert_eq!(store.len(), *n, "{file:?}"),
                (Err(e), Err(part)) => {
                    assert!(e.is_config(), "{file:?}: {e}");
                    let text = e.to_string();
                    assert!(text.contains(part) && text.contains("ws CA file"), "{text}");
                }
                (got, want) => panic!("{file:?}: got {:?}, want {want:?}", got.map(|s| s.len())),
            }
        }
    }
}
