//! The commands. Each returns an exit code or a [`CliError`] printed as one line.

pub mod cluster;
pub mod crds;
pub mod format;
pub mod jwk;
pub mod lint;
pub mod manual;
pub mod run;
pub mod serve;
pub mod status;

use std::path::Path;
use std::process::ExitCode;

/// A command failure: usage errors exit 2, everything else 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::from(2),
            CliError::Failed(_) => ExitCode::from(1),
        }
    }
}

/// Reads a file, or standard input for `-`.
pub fn read_input(path: &Path) -> Result<Vec<u8>, CliError> {
    let result = if path == Path::new("-") {
        let mut buffer = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buffer).map(|_| buffer)
    } else {
        std::fs::read(path)
    };
    result.map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
}
