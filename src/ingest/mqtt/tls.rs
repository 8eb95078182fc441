//! TLS for `mqtts://` brokers (rustls with the ring provider): the broker's
//! certificate is checked against `ca_file` or, without one, the system's
//! trusted roots; `client_cert` + `client_key` authenticate the gateway.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::{pki_types::CertificateDer, ClientConfig, RootCertStore};

use super::super::IngestError;
use crate::config::MqttSourceConfig;

/// The rustls client configuration of an `mqtts://` source.
pub fn client_config(cfg: &MqttSourceConfig) -> Result<ClientConfig, IngestError> {
    let mut roots = RootCertStore::empty();
    match &cfg.ca_file {
        Some(path) => {
            let certs = read_certs(path, "ca_file")?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(bad("ca_file", path, "holds no usable CA certificate"));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(IngestError::Config(
                    "mqtts:// without `ca_file` needs the system's trusted certificates, and none were found \
                     (install ca-certificates, or set ca_file)"
                        .into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| IngestError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    match (&cfg.client_cert, &cfg.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "client_cert")?;
            if chain.is_empty() {
                return Err(bad("client_cert", cert, "holds no certificate"));
            }
            let file = File::open(key).map_err(|e| bad("client_key", key, &e.to_string()))?;
            let key_der = rustls_pemfile::private_key(&mut BufReader::new(file))
                .map_err(|e| bad("client_key", key, &e.to_string()))?
                .ok_or_else(|| bad("client_key", key, "holds no PEM private key"))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                bad("client_cert", cert, &format!("cannot be used with client_key `{}`: {e}", key.display()))
            })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, IngestError> {
    let file = File::open(path).map_err(|e| bad(key, path, &e.to_string()))?;
    rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(key, path, &format!("is not PEM: {e}")))
}

fn bad(key: &str, path: &Path, why: &str) -> IngestError {
    IngestError::Config(format!("{key} `{}`: {why}", path.display()))
}
