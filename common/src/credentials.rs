//! The credential files of the controller <-> agent link (PEM certificates and keys, the bearer
//! token's variable): read and checked the same way by the agent (`serve --tls-*`) and the
//! controller (`--agent-ca`, `--agent-cert`, `--agent-key`), so a bad file is named alike.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};

/// Environment variable holding the bearer token (when no token file is given).
pub const TOKEN_ENV: &str = "TOKENGUN_AGENT_TOKEN";

/// A credential file could not be read or holds no usable PEM.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read {flag} {path}: {source}")]
    Read {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{flag} {path}: {reason}")]
    Pem {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// The bytes of the file `flag` names.
pub fn read_file(flag: &'static str, path: &Path) -> Result<Vec<u8>, CredentialError> {
    std::fs::read(path).map_err(|source| CredentialError::Read {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the certificates of a PEM file (at least one).
pub fn read_certs(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, CredentialError> {
    let bytes = read_file(flag, path)?;
    let pem_err = |reason: String| CredentialError::Pem {
        flag,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(pem_err(
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(
    flag: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, CredentialError> {
    let bytes = read_file(flag, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| CredentialError::Pem {
        flag,
        path: path.to_path_buf(),
        reason: format!("holds no private key ({e})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named_with_their_flag() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = read_certs("--agent-ca", &missing).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot read --agent-ca {}: ", missing.display())),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert_eq!(
            read_certs("--agent-ca", &empty).unwrap_err().to_string(),
            format!(
                "--agent-ca {}: holds no certificate (expected -----BEGIN CERTIFICATE-----)",
                empty.display()
            )
        );
        assert!(
            read_key("--agent-key", &empty)
                .unwrap_err()
                .to_string()
                .contains("holds no private key")
        );
    }
}
