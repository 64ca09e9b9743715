//! A bridge's outgoing byte stream: TCP, or TLS over it through a rustls *client*
//! connection (`bridge_cafile`, `bridge_certfile`/`bridge_keyfile`, `bridge_insecure`).
//!
//! Owns: the socket and, with TLS, the client connection's state; building a
//! `rustls::ClientConfig` from a bridge's files. Invariants: plaintext handed to TLS is
//! bounded by `PLAINTEXT_QUEUE_BYTES_MAX` (a full queue reads as `WouldBlock`); ciphertext
//! rustls wants to send is written whenever the socket takes it, after every read and
//! write; a TLS error is returned once as an `InvalidData` error naming it. Must not touch:
//! MQTT bytes (moved opaquely), the bridge's state, other sockets.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};

use crate::config::bridge::BridgeTls;

/// Plaintext accepted for sending but not yet encrypted and written.
pub const PLAINTEXT_QUEUE_BYTES_MAX: usize = 64 * 1024;

/// The client configuration for a bridge's TLS settings; `None` without `bridge_cafile`.
pub fn client_config(tls: &BridgeTls) -> Result<Option<Arc<ClientConfig>>, String> {
    let Some(cafile) = &tls.cafile else {
        return Ok(None);
    };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(cafile)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("bridge_cafile {}: {e}", cafile.display()))?;
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("bridge_cafile {}: {e}", cafile.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "bridge_cafile {}: no certificate in it",
            cafile.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("bridge_cafile {}: {e}", cafile.display()))?;
    let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure {
        Arc::new(AnyName(webpki))
    } else {
        webpki
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&tls.certfile, &tls.keyfile) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("bridge_certfile {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("bridge_keyfile {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("bridge_certfile/bridge_keyfile: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(Arc::new(config)))
}

/// `bridge_insecure`: the chain is verified, the host name is not.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A bridge's connection: TCP, with TLS when configured.
#[derive(Debug)]
pub struct Stream {
    /// The socket (registered with the shard's poll by the owner).
    pub tcp: TcpStream,
    tls: Option<Box<ClientConnection>>,
}

impl Stream {
    /// Plain TCP.
    pub fn plain(tcp: TcpStream) -> Stream {
        Stream { tcp, tls: None }
    }

    /// Start TLS as a client of `host` (a name or an IP address) over `tcp`.
    pub fn tls(tcp: TcpStream, config: Arc<ClientConfig>, host: &str) -> io::Result<Stream> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("TLS name: {e}")))?;
        let mut conn = ClientConnection::new(config, name)
            .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
        conn.set_buffer_limit(Some(PLAINTEXT_QUEUE_BYTES_MAX));
        Ok(Stream {
            tcp,
            tls: Some(Box::new(conn)),
        })
    }

    /// Plaintext from the peer: `Ok(0)` at the end of the stream, `WouldBlock` for none.
    pub fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            return self.tcp.read(buf);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if tls.read_tls(&mut self.tcp)? == 0 {
                return Ok(0);
            }
            if let Err(e) = tls.process_new_packets() {
                // The alert goes out if the socket takes it; the error is what matters.
                let _ = flush(tls, &mut self.tcp);
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("TLS: {e}"),
                ));
            }
            flush(tls, &mut self.tcp)?;
        }
    }

    /// Send plaintext; `WouldBlock` when neither the socket nor the TLS queue takes more.
    pub fn write_plain(&mut self, data: &[u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            return self.tcp.write(data);
        };
        let n = tls.writer().write(data)?;
        flush(tls, &mut self.tcp)?;
        if n == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Write the ciphertext TLS has queued (handshake, alerts, records), as far as the
    /// socket takes it.
    pub fn flush_tls(&mut self) -> io::Result<()> {
        match self.tls.as_mut() {
            Some(tls) => flush(tls, &mut self.tcp),
            None => Ok(()),
        }
    }
}

fn flush(tls: &mut ClientConnection, tcp: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(tcp) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
