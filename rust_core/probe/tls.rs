//! TLS for probes: the client configurations (verifying against the system roots plus
//! an optional private CA, or not verifying at all), the handshake with its errors
//! classified, certificate expiry, and the `tls` probe itself.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::config::{ConfigError, TlsSpec};
use super::net::connect;
use super::{elapsed_us, remaining, ErrorKind, Outcome, ProbeContext, Timings};

pub struct TlsConfigs {
    verified: Arc<ClientConfig>,
    insecure: Arc<ClientConfig>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsConfigs {
    pub fn new(extra_ca_pem: Option<&str>) -> Result<Self, ConfigError> {
        let mut roots = RootCertStore::empty();
        // A missing or partly unreadable system store is not fatal: probes against
        // public sites then fail verification visibly, with the reason in the result.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(pem) = extra_ca_pem {
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| ConfigError::new("extra_ca_pem", e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| ConfigError::new("extra_ca_pem", e.to_string()))?;
                added += 1;
            }
            if added == 0 {
                return Err(ConfigError::new("extra_ca_pem", "no certificate found"));
            }
        }
        let verified = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new("tls", e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let insecure = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new("tls", e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
            .with_no_client_auth();
        Ok(TlsConfigs {
            verified: Arc::new(with_http1(verified)),
            insecure: Arc::new(with_http1(insecure)),
        })
    }

    pub fn connector(&self, verify: bool) -> TlsConnector {
        TlsConnector::from(Arc::clone(if verify {
            &self.verified
        } else {
            &self.insecure
        }))
    }
}

fn with_http1(mut config: ClientConfig) -> ClientConfig {
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// `ssl_verify = false`: the handshake still happens (and is timed), nothing is checked.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
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

/// Classify a failed handshake.
pub fn handshake_error(err: &std::io::Error) -> (ErrorKind, String) {
    let tls = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    let kind = match tls {
        Some(rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => ErrorKind::CertExpired,
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => ErrorKind::CertHostname,
        _ => ErrorKind::TlsError,
    };
    let message = match tls {
        Some(e) => format!("TLS handshake failed: {e}"),
        None => format!("TLS handshake failed: {err}"),
    };
    (kind, message)
}

/// The leaf certificate's expiry: (Unix seconds, whole days left, may be negative).
pub fn expiry(stream: &TlsStream<TcpStream>) -> Option<(i64, i64)> {
    let (_, conn) = stream.get_ref();
    let leaf = conn.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let not_after = cert.validity().not_after.timestamp();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Some((not_after, (not_after - now).div_euclid(86_400)))
}

pub fn server_name(host: &str) -> Result<ServerName<'static>, (ErrorKind, String)> {
    ServerName::try_from(host.to_owned()).map_err(|_| {
        (
            ErrorKind::TlsError,
            format!("{host:?} is not a valid TLS server name"),
        )
    })
}

/// Handshake over an open connection, bounded by `deadline`.
pub async fn handshake(
    ctx: &ProbeContext,
    verify: bool,
    name: &str,
    tcp: TcpStream,
    deadline: Instant,
) -> Result<TlsStream<TcpStream>, (ErrorKind, String)> {
    let server = server_name(name)?;
    match tokio::time::timeout(
        remaining(deadline),
        ctx.tls.connector(verify).connect(server, tcp),
    )
    .await
    {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(handshake_error(&e)),
        Err(_) => Err((ErrorKind::Timeout, "TLS handshake timed out".to_owned())),
    }
}

/// The `tls` probe: connect, handshake, validate (chain and name unless `ssl_verify` is
/// off), and report the days to expiry; DEGRADED when nearer than the threshold.
pub async fn probe(spec: &TlsSpec, ctx: &ProbeContext, deadline: Instant) -> Outcome {
    let mut timings = Timings::default();
    let tcp = match connect(&spec.host, spec.port, deadline, &mut timings).await {
        Ok((tcp, _)) => tcp,
        Err((kind, msg)) => return Outcome::down(kind, msg).with_timings(timings),
    };
    let start = Instant::now();
    let stream = match handshake(ctx, spec.ssl_verify, &spec.server_name, tcp, deadline).await {
        Ok(s) => s,
        Err((kind, msg)) => return Outcome::down(kind, msg).with_timings(timings),
    };
    timings.tls_us = Some(elapsed_us(start));
    let version = stream
        .get_ref()
        .1
        .protocol_version()
        .map(|v| format!("{v:?}"));
    let Some((not_after, days)) = expiry(&stream) else {
        return Outcome::down(
            ErrorKind::TlsError,
            "the server sent no readable certificate",
        )
        .with_timings(timings);
    };
    let outcome = if days < 0 {
        // Reachable only with ssl_verify off: verification refuses expired chains.
        Outcome::down(ErrorKind::CertExpired, "the certificate has expired")
    } else if days < spec.expiry_threshold_days {
        Outcome::degraded(
            ErrorKind::CertExpiring,
            format!(
                "the certificate expires in {days} days (threshold {})",
                spec.expiry_threshold_days
            ),
        )
    } else {
        Outcome::up()
    };
    outcome
        .with_timings(timings)
        .detail("cert_expires_at", not_after)
        .detail("cert_days_left", days)
        .detail("tls_version", version)
}
