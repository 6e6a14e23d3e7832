//! Where `drydock login` keeps the server URL and token: `<config dir>/drydock/client.json`,
//! the directory mode 0700 and the file 0600, written whole through a temporary file.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::api::ClientError;

/// What is saved.
#[derive(Serialize, Deserialize)]
pub struct Saved {
    /// Server URL without a trailing slash.
    pub url: String,
    /// The personal API token.
    pub token: String,
}

fn dir(config_dir: Option<&Path>) -> Result<PathBuf, ClientError> {
    match config_dir {
        Some(dir) => Ok(dir.to_owned()),
        None => dirs::config_dir()
            .map(|d| d.join("drydock"))
            .ok_or_else(|| {
                ClientError::Usage("no config directory: set DRYDOCK_CONFIG_DIR".into())
            }),
    }
}

/// Saves the URL and token; answers the file's path.
pub fn save(config_dir: Option<&Path>, saved: &Saved) -> Result<PathBuf, ClientError> {
    let dir = dir(config_dir)?;
    let fail =
        |what: &str, err: std::io::Error| ClientError::Usage(format!("could not {what}: {err}"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| fail("create the config directory", e))?;
    let path = dir.join("client.json");
    let tmp = dir.join(".client.json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| fail("write the config file", e))?;
    let text =
        serde_json::to_string_pretty(saved).map_err(|e| ClientError::Usage(e.to_string()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| fail("write the config file", e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail("protect the config file", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| fail("write the config file", e))?;
    Ok(path)
}

/// The saved URL and token, if any.
pub fn load(config_dir: Option<&Path>) -> Result<Option<Saved>, ClientError> {
    let path = dir(config_dir)?.join("client.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|_| {
            ClientError::Usage(format!(
                "{} is damaged: run `drydock login` again",
                path.display()
            ))
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(ClientError::Usage(format!(
            "could not read {}: {err}",
            path.display()
        ))),
    }
}
