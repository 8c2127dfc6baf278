use std::path::Path;
use std::process::ExitCode;

use super::CliError;

pub fn run(out_dir: Option<&Path>) -> Result<ExitCode, CliError> {
    let files = jwks_operator::api::crd_files()
        .map_err(|e| CliError::Failed(format!("cannot render the CRDs: {e}")))?;
    for (name, yaml) in files {
        match out_dir {
            Some(dir) => {
                let path = dir.join(&name);
                std::fs::write(&path, yaml).map_err(|e| {
                    CliError::Failed(format!("cannot write {}: {e}", path.display()))
                })?;
            }
            None => print!("{yaml}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
