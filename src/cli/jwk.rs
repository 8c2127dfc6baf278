use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use jwks_operator::jose::{self, Algorithm, Curve, ImportedKey, KeySpec, PrivateKey, PublicKey};

use super::{CliError, read_input};

pub struct GenerateOptions {
    pub algorithm: Algorithm,
    pub key_size: Option<u32>,
    pub curve: Option<Curve>,
    pub cert_cn: Option<String>,
    pub cert_days: u32,
    pub out_dir: PathBuf,
    pub private: bool,
}

pub fn generate(options: GenerateOptions) -> Result<ExitCode, CliError> {
    let spec = KeySpec::new(options.algorithm, options.key_size, options.curve)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    std::fs::create_dir_all(&options.out_dir).map_err(|e| {
        CliError::Failed(format!("cannot create {}: {e}", options.out_dir.display()))
    })?;
    let key = PrivateKey::generate(spec).map_err(failed)?;
    let certificate = match &options.cert_cn {
        Some(common_name) => {
            let now = SystemTime::now();
            let validity = Duration::from_secs(u64::from(options.cert_days) * 86_400);
            Some(
                jose::self_signed_certificate(&key, common_name, now, now + validity)
                    .map_err(failed)?,
            )
        }
        None => None,
    };
    write_new_file(
        &options.out_dir.join("key.pem"),
        key.to_pkcs8_pem().map_err(failed)?.as_bytes(),
        0o600,
    )?;
    if let Some(der) = &certificate {
        let pem = pem::encode_config(
            &pem::Pem::new("CERTIFICATE", der.clone()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        );
        write_new_file(&options.out_dir.join("cert.pem"), pem.as_bytes(), 0o644)?;
    }
    print_key(&key, certificate.as_deref(), options.private)
}

pub fn from_pem(
    path: &Path,
    algorithm: Option<Algorithm>,
    private: bool,
) -> Result<ExitCode, CliError> {
    let text = read_input(path)?;
    let in_file = |e: jose::Error| CliError::Failed(format!("{}: {e}", path.display()));
    match jose::key_from_pem(&text).map_err(in_file)? {
        ImportedKey::Private(material) => {
            let algorithm = algorithm.unwrap_or_else(|| Algorithm::default_for(material.kind()));
            let key = PrivateKey::new(algorithm, material).map_err(in_file)?;
            print_key(&key, None, private)
        }
        ImportedKey::Public(_) if private => Err(CliError::Failed(format!(
            "{}: --private needs a private key, but this PEM holds a public key",
            path.display()
        ))),
        ImportedKey::Public(material) => {
            let algorithm = algorithm.unwrap_or_else(|| Algorithm::default_for(material.kind()));
            let kind = material.kind();
            if !algorithm.accepts(kind) {
                return Err(in_file(jose::Error::AlgorithmMismatch { algorithm, kind }));
            }
            print_json(
                &PublicKey {
                    algorithm,
                    material,
                }
                .to_jwk(),
            )
        }
    }
}

pub fn thumbprint(path: &Path) -> Result<ExitCode, CliError> {
    let text = read_input(path)?;
    let in_file = |e: jose::Error| CliError::Failed(format!("{}: {e}", path.display()));
    let looks_like_json = text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let thumbprint = if looks_like_json {
        let value: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| CliError::Failed(format!("{}: not valid JSON: {e}", path.display())))?;
        jose::thumbprint_of_json(&value).map_err(in_file)?
    } else {
        match jose::key_from_pem(&text).map_err(in_file)? {
            ImportedKey::Private(material) => jose::thumbprint(&material.public()),
            ImportedKey::Public(material) => jose::thumbprint(&material),
        }
    };
    println!("{thumbprint}");
    Ok(ExitCode::SUCCESS)
}

fn print_key(
    key: &PrivateKey,
    certificate: Option<&[u8]>,
    private: bool,
) -> Result<ExitCode, CliError> {
    if private {
        return print_json(&key.to_private_jwk().map_err(failed)?);
    }
    let jwk = key.public_key().to_jwk();
    print_json(&match certificate {
        Some(der) => jwk.with_certificate(der),
        None => jwk,
    })
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<ExitCode, CliError> {
    let json = serde_json::to_string_pretty(value).map_err(|e| CliError::Failed(e.to_string()))?;
    println!("{json}");
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` with `mode`, refusing to replace an existing file: a key is never lost.
fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CliError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => CliError::Failed(format!(
                "{} already exists; refusing to overwrite a key",
                path.display()
            )),
            _ => CliError::Failed(format!("cannot create {}: {e}", path.display())),
        })?;
    file.write_all(contents)
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))
}

fn failed(error: jose::Error) -> CliError {
    CliError::Failed(error.to_string())
}
