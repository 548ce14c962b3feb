//! `tokengun-agent certs`: a private CA and certificates for a lab (agents and controllers), made
//! in pure Rust with `rcgen`, so nothing else needs to be installed.
//!
//! Files written to the folder: `ca.pem` + `ca-key.pem` (made once, reused by later calls to add
//! agents), and `NAME.pem` + `NAME-key.pem` per agent or controller. Keys are ECDSA P-256,
//! readable by their owner only.

use crate::auth::provider;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokengun_common::credentials::read_certs;
use tokengun_common::file_error::FileError;
use tokio_rustls::rustls;

/// The CA's subject, followed by a few hex digits of its key so that two labs' CAs differ by name
/// (a certificate from the other lab is then reported as from an unknown issuer).
const CA_COMMON_NAME: &str = "tokengun lab CA";
const CA_ORGANIZATION: &str = "tokengun";
/// How long the CA is valid.
const CA_VALID_DAYS: i64 = 3650;

/// What to make.
#[derive(Debug, Clone)]
pub struct CertRequest {
    /// Folder for every file (created if missing).
    pub dir: PathBuf,
    /// One entry per agent: the names and addresses controllers dial it by (the first names
    /// its files).
    pub agents: Vec<Vec<String>>,
    /// One client certificate per name, for controllers.
    pub controllers: Vec<String>,
    /// Validity of agent and controller certificates, in days.
    pub valid_days: u32,
}

/// Certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{0} already exists; delete it or choose another name")]
    Exists(PathBuf),
    #[error("{name:?} is not a usable host name or IP address: {reason}")]
    Name { name: String, reason: String },
    #[error("{0} is named twice; each agent and controller needs its own name")]
    Duplicate(String),
    #[error(
        "{dir}/ca.pem and ca-key.pem do not make a usable CA ({reason}); restore them or use a fresh --dir"
    )]
    ForeignCa { dir: PathBuf, reason: String },
    #[error("{dir} has only one of ca.pem and ca-key.pem; restore the other or use a fresh --dir")]
    HalfCa { dir: PathBuf },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("nothing to make: name at least one --agent or --controller")]
    Nothing,
}

fn ca_params(key: &KeyPair) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let tag: String = key
        .public_key_raw()
        .iter()
        .rev()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    p.distinguished_name
        .push(DnType::CommonName, format!("{CA_COMMON_NAME} {tag}"));
    p.distinguished_name
        .push(DnType::OrganizationName, CA_ORGANIZATION);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn validity(p: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // An hour back: clocks across a lab are seldom exactly together.
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(days);
}

/// A file name for a host name or address (`::1` -> `__1`).
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), CertError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CertError::Exists(path.to_path_buf())
        } else {
            FileError::write(path)(e).into()
        }
    })?;
    std::io::Write::write_all(&mut f, text.as_bytes()).map_err(FileError::write(path))?;
    Ok(())
}

/// Loads the folder's CA, or makes one. Returns the issuer and whether it was made now.
fn load_or_make_ca(dir: &Path) -> Result<(Issuer<'static, KeyPair>, bool), CertError> {
    let cert_path = dir.join("ca.pem");
    let key_path = dir.join("ca-key.pem");
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let pem = std::fs::read_to_string(&key_path).map_err(FileError::read(&key_path))?;
            let key = KeyPair::from_pem(&pem).map_err(|e| CertError::ForeignCa {
                dir: dir.to_path_buf(),
                reason: format!("ca-key.pem: {e}"),
            })?;
            let cert = std::fs::read_to_string(&cert_path).map_err(FileError::read(&cert_path))?;
            let issuer =
                Issuer::from_ca_cert_pem(&cert, key).map_err(|e| CertError::ForeignCa {
                    dir: dir.to_path_buf(),
                    reason: format!("ca.pem: {e}"),
                })?;
            Ok((issuer, false))
        }
        (false, false) => {
            let key = KeyPair::generate()?;
            let mut params = ca_params(&key);
            validity(&mut params, CA_VALID_DAYS);
            let cert = params.self_signed(&key)?;
            write(&cert_path, &cert.pem(), false)?;
            write(&key_path, &key.serialize_pem(), true)?;
            Ok((Issuer::new(params, key), true))
        }
        _ => Err(CertError::HalfCa {
            dir: dir.to_path_buf(),
        }),
    }
}

/// Checks that a certificate just signed chains to the folder's `ca.pem` (it does not when the
/// CA there was made elsewhere, under another name).
fn verify_chain(dir: &Path, leaf: &rcgen::Certificate, name: &str) -> Result<(), CertError> {
    let foreign = |reason: String| CertError::ForeignCa {
        dir: dir.to_path_buf(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs("ca.pem", &dir.join("ca.pem")).map_err(|e| foreign(e.to_string()))? {
        roots.add(c).map_err(|e| foreign(e.to_string()))?;
    }
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| foreign(e.to_string()))?;
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| foreign(e.to_string()))?;
    use rustls::client::danger::ServerCertVerifier;
    verifier
        .verify_server_cert(
            leaf.der(),
            &[],
            &server_name,
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .map(drop)
        .map_err(|e| foreign(e.to_string()))
}

/// Makes what `req` asks for; returns the files written.
pub fn make(req: &CertRequest) -> Result<Vec<PathBuf>, CertError> {
    if req.agents.is_empty() && req.controllers.is_empty() {
        return Err(CertError::Nothing);
    }
    let mut stems = vec!["ca".to_string(), "ca-key".to_string()];
    let mut leaves = Vec::new();
    for names in &req.agents {
        let names: Vec<String> = names.iter().map(|n| n.trim().to_string()).collect();
        let Some(first) = names.first().filter(|n| !n.is_empty()) else {
            continue;
        };
        leaves.push((file_stem(first), names.clone(), true));
    }
    for name in &req.controllers {
        leaves.push((file_stem(name.trim()), vec![name.trim().to_string()], false));
    }
    for (stem, names, _) in &leaves {
        if stems.contains(stem) {
            return Err(CertError::Duplicate(names[0].clone()));
        }
        stems.push(stem.clone());
    }
    std::fs::create_dir_all(&req.dir).map_err(FileError::write(&req.dir))?;
    // Leaves are checked for collisions before the CA is touched, so a refusal leaves no debris.
    for (stem, _, _) in &leaves {
        for path in [
            req.dir.join(format!("{stem}.pem")),
            req.dir.join(format!("{stem}-key.pem")),
        ] {
            if path.exists() {
                return Err(CertError::Exists(path));
            }
        }
    }
    let (issuer, made) = load_or_make_ca(&req.dir)?;
    if !made {
        // A probe certificate must chain to the CA on disk, or that CA was made elsewhere.
        let mut probe = CertificateParams::new(vec!["probe.invalid".to_string()])?;
        probe.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut probe, 1);
        let probe = probe.signed_by(&KeyPair::generate()?, &issuer)?;
        verify_chain(&req.dir, &probe, "probe.invalid")?;
    }
    let mut written = Vec::new();
    if made {
        written.extend([req.dir.join("ca.pem"), req.dir.join("ca-key.pem")]);
    }
    for (stem, names, is_agent) in leaves {
        let bad = |e: rcgen::Error| CertError::Name {
            name: names.join(","),
            reason: e.to_string(),
        };
        let mut params = CertificateParams::new(names.clone()).map_err(bad)?;
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if is_agent {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        validity(&mut params, i64::from(req.valid_days));
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer).map_err(bad)?;
        let cert_path = req.dir.join(format!("{stem}.pem"));
        let key_path = req.dir.join(format!("{stem}-key.pem"));
        write(&cert_path, &cert.pem(), false)?;
        write(&key_path, &key.serialize_pem(), true)?;
        written.extend([cert_path, key_path]);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_call_reuses_the_ca_and_refuses_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let req = CertRequest {
            dir: dir.path().to_path_buf(),
            agents: vec![vec!["gpu1.lab".into(), "10.0.0.5".into()]],
            controllers: vec!["controller".into()],
            valid_days: 30,
        };
        let files = make(&req).unwrap();
        assert_eq!(files.len(), 6, "{files:?}");
        let ca_before = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let again = CertRequest {
            agents: vec![vec!["gpu2.lab".into()]],
            controllers: vec![],
            ..req.clone()
        };
        let files = make(&again).unwrap();
        assert_eq!(files.len(), 2, "only the new agent's files: {files:?}");
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca_before);
        assert!(matches!(make(&req), Err(CertError::Exists(_))));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("gpu2.lab-key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "keys are private: {mode:o}");
        }
    }

    #[test]
    fn a_ca_made_elsewhere_is_reused_and_a_mismatched_key_refused() {
        let dir = tempfile::tempdir().unwrap();
        // A CA made by another tool, under another name, is reused as it is.
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "someone else");
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = p.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("ca-key.pem"), key.serialize_pem()).unwrap();
        let req = |name: &str| CertRequest {
            dir: dir.path().to_path_buf(),
            agents: vec![vec![name.to_string()]],
            controllers: vec![],
            valid_days: 30,
        };
        make(&req("gpu0.lab")).unwrap();
        // The key beside it replaced by another: what it signs would not chain to ca.pem.
        let other = KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("ca-key.pem"), other.serialize_pem()).unwrap();
        let e = make(&req("gpu1.lab")).unwrap_err();
        assert!(matches!(e, CertError::ForeignCa { .. }), "{e}");
        assert!(!dir.path().join("gpu1.lab.pem").exists());
    }
}
