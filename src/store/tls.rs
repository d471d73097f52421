//! TLS to PostgreSQL through rustls, with libpq's `sslmode` meanings.
//!
//! The `postgres` crate knows only `disable`, `prefer` and `require`, and does no TLS of its
//! own. We take `sslmode` and `sslrootcert` out of the connection string and build the
//! connector ourselves:
//! - `require`: encrypted, the server's certificate is not checked (as in libpq);
//! - `verify-ca`: the chain must lead to a trusted root (`sslrootcert`, or the built-in web
//!   roots), any host name;
//! - `verify-full`: as `verify-ca`, and the certificate must name the host.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::connstr::ConnString;
use crate::error::{Error, Result};

/// How much of the server's identity to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The TLS part of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsOptions {
    pub(crate) mode: SslMode,
    pub(crate) root_cert: Option<String>,
}

/// Splits `sslmode` and `sslrootcert` out of a connection string (URL or key=value form).
/// The rest comes back with `sslmode=require` when TLS is wanted, which is all the
/// `postgres` crate needs to know.
pub(crate) fn split_tls_options(url: &str) -> Result<(String, TlsOptions)> {
    let mut conn = ConnString::parse(url)?;
    let mode = match conn.take("sslmode").as_deref() {
        None | Some("allow") | Some("prefer") => SslMode::Prefer,
        Some("disable") => SslMode::Disable,
        Some("require") => SslMode::Require,
        Some("verify-ca") => SslMode::VerifyCa,
        Some("verify-full") => SslMode::VerifyFull,
        Some(other) => return Err(Error::config(format!("unknown sslmode {other:?}"))),
    };
    let root_cert = conn.take("sslrootcert");
    match mode {
        SslMode::Prefer => {}
        SslMode::Disable => conn.set("sslmode", "disable"),
        _ => conn.set("sslmode", "require"),
    }
    Ok((conn.render(), TlsOptions { mode, root_cert }))
}

/// The rustls connector for `opts` (`ring` chosen explicitly, as everywhere in polytape).
pub(crate) fn connector(opts: &TlsOptions) -> Result<MakeRustlsConnect> {
    let provider = crate::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS: {e}")))?;
    let config = match opts.mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth(),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            // sslrootcert given: only those roots (as libpq); else the built-in web roots.
            let roots = crate::tls::root_store(
                opts.root_cert.as_deref(),
                opts.root_cert.is_none(),
                "sslrootcert",
            )?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::config(format!("TLS roots: {e}")))?;
            let verifier: Arc<dyn ServerCertVerifier> = if opts.mode == SslMode::VerifyCa {
                Arc::new(AnyName(webpki))
            } else {
                webpki
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// `sslmode=require`: encryption without checking who is at the other end, as libpq does.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain is checked, the host name is not.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_out_of_the_url() {
        let (rest, o) =
            split_tls_options("postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem&x=1")
                .expect("parses");
        assert_eq!(rest, "postgres://u@h/db?x=1&sslmode=require");
        assert_eq!(o.mode, SslMode::VerifyFull);
        assert_eq!(o.root_cert.as_deref(), Some("/ca.pem"));
        let (rest, o) = split_tls_options("host=h sslmode=require user=u").expect("parses");
        assert_eq!(rest, "host=h user=u sslmode=require");
        assert_eq!(o.mode, SslMode::Require);
        let (rest, o) = split_tls_options("postgres://u@h/db").expect("parses");
        assert_eq!(
            (rest.as_str(), o.mode),
            ("postgres://u@h/db", SslMode::Prefer)
        );
        assert!(split_tls_options("postgres://h/db?sslmode=sometimes").is_err());
    }
}
