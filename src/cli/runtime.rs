//! `envlayer runtime`: the in-container installer of runtime-install images.

use super::Result;
use std::path::PathBuf;

pub async fn runtime(install_only: bool, command: Vec<String>) -> Result<()> {
    let dir = std::env::var_os("ENVLAYER_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(envlayer::runtime_install::RUNTIME_DIR));
    envlayer::runtime_install::ensure_installed(&dir, &super::progress::Lines).await?;
    if install_only {
        return Ok(());
    }
    let command = if command.is_empty() { vec!["/bin/sh".to_string()] } else { command };
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&command[0]).args(&command[1..]).exec();
    Err(format!("cannot run {:?}: {err}", command[0]).into())
}
