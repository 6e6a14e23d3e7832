//! Environments (issue 18): what a repository's sandbox starts from. Where an environment comes
//! from (first match wins: `.drydock/environment.toml`, `.devcontainer/devcontainer.json`, the
//! environment configured in drydock, drydock's default with setup for common lockfiles), what
//! it holds (base image, setup and maintenance scripts, variables, secrets), the key of its
//! snapshot and the snapshots on the Docker host (labels, listing, pruning).
//!
//! The runner's stage that uses this is `tasks::run::environment`; the HTTP surface is [`api`].

pub mod api;
pub mod files;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use drydock_sandbox::{ImageInfo, Sandboxes};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::SecretString;
use crate::store::EnvironmentRow;

/// Image repository of environment snapshots (`drydock-env:<key>`).
pub const SNAPSHOT_REPO: &str = "drydock-env";
/// Image repository of bases built from a repository's Dockerfile (`drydock-env-base:<key>`).
pub const BASE_REPO: &str = "drydock-env-base";
/// Label on every image drydock makes for environments: `snapshot` or `base`.
pub const LABEL_KIND: &str = "drydock.env.kind";
/// Label: the id of the user the image was made for.
pub const LABEL_USER: &str = "drydock.env.user";
/// Label: the repository (`owner/name`).
pub const LABEL_REPO: &str = "drydock.env.repo";
/// Label: the full cache key.
pub const LABEL_KEY: &str = "drydock.env.key";
/// Label: where the environment came from (a [`Source`] label).
pub const LABEL_SOURCE: &str = "drydock.env.source";

/// Where an environment came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    /// `.drydock/environment.toml`.
    File,
    /// `.devcontainer/devcontainer.json`.
    Devcontainer,
    /// Configured for the repository in drydock (UI or API).
    Configured,
    /// Nothing configured: drydock's image with setup for the lockfiles it finds.
    #[default]
    Default,
}

impl Source {
    /// How the task log and pages name it.
    pub fn label(self) -> &'static str {
        match self {
            Source::File => files::ENVIRONMENT_TOML,
            Source::Devcontainer => files::DEVCONTAINER_JSON,
            Source::Configured => "the environment configured in drydock",
            Source::Default => "drydock's default environment",
        }
    }
}

/// The image an environment starts from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Base {
    /// drydock's sandbox image.
    #[default]
    Default,
    /// An image the operator registered under this name (`DRYDOCK_ENVIRONMENT_IMAGES`), or
    /// named by its reference.
    Registered(String),
    /// Built from the repository's Dockerfile.
    Dockerfile {
        /// Build context, relative to the repository root.
        context: String,
        /// The Dockerfile, relative to the repository root.
        dockerfile: String,
        /// `ARG` values.
        args: BTreeMap<String, String>,
    },
}

/// Who setup and maintenance run as. The agent always runs as the sandbox user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetupUser {
    /// The sandbox user (uid 1000).
    #[default]
    Agent,
    /// uid 0, still with every capability dropped: it can write root-owned paths such as
    /// `/usr/local`, nothing more.
    Root,
}

impl SetupUser {
    /// The exec user.
    pub fn exec_user(self) -> Option<&'static str> {
        match self {
            SetupUser::Agent => None,
            SetupUser::Root => Some("0:0"),
        }
    }
}

/// The network policy of an environment's setup and agent phases (`[network]`): each narrows
/// the task's policy for that phase (see
/// [`NetworkPolicy::narrowed_for_phase`](crate::egress::NetworkPolicy::narrowed_for_phase)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    /// Policy while setup and maintenance run: `gateway` (or `none`), `registries`, `allowlist`
    /// or `open`.
    pub setup: Option<String>,
    /// Policy while the agent runs (the same names).
    pub agent: Option<String>,
}

/// An environment as defined by its source, before images are resolved.
#[derive(Debug, Clone, Default)]
pub struct Definition {
    /// Where it came from.
    pub source: Source,
    /// Base image.
    pub base: Base,
    /// Setup script (`sh`), once per cache key.
    pub setup: Option<String>,
    /// Who setup and maintenance run as.
    pub setup_user: SetupUser,
    /// Maintenance script (`sh`), on every start from a snapshot.
    pub maintenance: Option<String>,
    /// Files the snapshot depends on; `None` means the lockfiles present.
    pub inputs: Option<Vec<String>>,
    /// Plain variables (the sandbox's environment).
    pub variables: BTreeMap<String, String>,
    /// Network policy (not enforced here; see [`NetworkPolicy`]).
    pub network: Option<NetworkPolicy>,
    /// What the task log should say about the source (ignored keys).
    pub notices: Vec<String>,
}

/// A secret of an environment, opened for one turn.
#[derive(Debug, Clone)]
pub struct EnvSecret {
    /// Variable name.
    pub name: String,
    /// Value.
    pub value: SecretString,
    /// Given to the agent's process too.
    pub agent_may_see: bool,
    /// Version (part of the cache key, never the value).
    pub version: i64,
}

/// The environment configured in drydock for a repository, opened for a turn.
#[derive(Debug, Clone, Default)]
pub struct Configured {
    /// The stored row, when there is one.
    pub row: Option<EnvironmentRow>,
    /// Its secrets.
    pub secrets: Vec<EnvSecret>,
}

impl Configured {
    /// Its plain variables.
    pub fn variables(&self) -> BTreeMap<String, String> {
        self.row
            .as_ref()
            .and_then(|r| serde_json::from_str(&r.variables).ok())
            .unwrap_or_default()
    }

    /// Its rebuild generation.
    pub fn generation(&self) -> i64 {
        self.row.as_ref().map_or(0, |r| r.generation)
    }

    fn definition(&self) -> Option<Definition> {
        let row = self.row.as_ref()?;
        if row.image.is_none() && row.setup.is_none() && row.maintenance.is_none() {
            return None;
        }
        Some(Definition {
            source: Source::Configured,
            base: row.image.clone().map_or(Base::Default, Base::Registered),
            setup: row.setup.clone().filter(|s| !s.trim().is_empty()),
            setup_user: SetupUser::Agent,
            maintenance: row.maintenance.clone().filter(|s| !s.trim().is_empty()),
            inputs: None,
            variables: BTreeMap::new(),
            network: None,
            notices: Vec::new(),
        })
    }
}

/// Finds the environment of the checkout at `checkout`: the first source that exists wins.
/// Variables configured in drydock apply whatever the source (the file's win on a clash).
/// `auto_setup` is the task's "install dependencies" choice, used by the default environment.
pub fn resolve(
    checkout: &Path,
    configured: &Configured,
    auto_setup: bool,
) -> Result<Definition, files::FileError> {
    let read = |path: &str| std::fs::read_to_string(inside_checkout(checkout, path)?).ok();
    let mut def = if let Some(text) = read(files::ENVIRONMENT_TOML) {
        files::parse_environment_toml(&text)?
    } else if let Some(text) = read(files::DEVCONTAINER_JSON) {
        files::parse_devcontainer(&text)?
    } else if let Some(def) = configured.definition() {
        def
    } else {
        default_definition(checkout, auto_setup)
    };
    for (name, value) in configured.variables() {
        def.variables.entry(name).or_insert(value);
    }
    Ok(def)
}

/// `rel` under the checkout, when it exists and stays inside it after following symbolic links
/// (a repository's link to a host path is never read).
pub fn inside_checkout(checkout: &Path, rel: &str) -> Option<std::path::PathBuf> {
    let root = checkout.canonicalize().ok()?;
    let path = root.join(rel).canonicalize().ok()?;
    path.starts_with(&root).then_some(path)
}

/// Lockfiles and manifests, in the order their installs run.
const LOCKFILES: &[&str] = &[
    "pnpm-lock.yaml",
    "yarn.lock",
    "bun.lock",
    "bun.lockb",
    "package-lock.json",
    "npm-shrinkwrap.json",
    "package.json",
    "uv.lock",
    "poetry.lock",
    "requirements.txt",
    "pyproject.toml",
    "Cargo.toml",
    "Cargo.lock",
    "go.mod",
    "go.sum",
];

/// The lockfiles and manifests at the top of the checkout.
pub fn lockfiles_in(checkout: &Path) -> Vec<String> {
    LOCKFILES
        .iter()
        .filter(|f| checkout.join(f).is_file())
        .map(|f| (*f).to_owned())
        .collect()
}

/// drydock's default: its image, and (when `auto_setup`) a setup installing what the lockfiles
/// at the top of the checkout name. A tool missing from the image is skipped with a line saying
/// so.
pub fn default_definition(checkout: &Path, auto_setup: bool) -> Definition {
    let setup = if auto_setup {
        let commands = dependency_commands(checkout);
        (!commands.is_empty()).then(|| {
            let mut script = String::from("set -e\n");
            for (tool, command) in commands {
                script.push_str(&format!(
                    "if command -v {tool} >/dev/null 2>&1; then echo '+ {command}'; {command}; \
                     else echo 'drydock: {tool} is not in the image; skipping `{command}`' >&2; fi\n"
                ));
            }
            script
        })
    } else {
        None
    };
    Definition {
        source: Source::Default,
        setup,
        ..Definition::default()
    }
}

/// (tool, command) for each manifest found, one per ecosystem.
fn dependency_commands(checkout: &Path) -> Vec<(&'static str, &'static str)> {
    let has = |name: &str| checkout.join(name).is_file();
    let mut commands = Vec::new();
    if has("pnpm-lock.yaml") {
        commands.push(("pnpm", "pnpm install --frozen-lockfile"));
    } else if has("yarn.lock") {
        commands.push(("yarn", "yarn install --frozen-lockfile"));
    } else if has("bun.lockb") || has("bun.lock") {
        commands.push(("bun", "bun install --frozen-lockfile"));
    } else if has("package-lock.json") || has("npm-shrinkwrap.json") {
        commands.push(("npm", "npm ci"));
    } else if has("package.json") {
        commands.push(("npm", "npm install"));
    }
    if has("uv.lock") {
        commands.push(("uv", "uv sync --frozen"));
    } else if has("poetry.lock") {
        commands.push(("poetry", "poetry install --no-interaction --no-root"));
    } else if has("requirements.txt") {
        commands.push((
            "python3",
            "python3 -m pip install --user -r requirements.txt",
        ));
    } else if has("pyproject.toml") {
        commands.push(("python3", "python3 -m pip install --user -e ."));
    }
    if has("Cargo.toml") {
        commands.push(("cargo", "cargo fetch"));
    }
    if has("go.mod") {
        commands.push(("go", "go mod download"));
    }
    commands
}

/// Everything a snapshot depends on, hashed into its key. Never secret values.
#[derive(Debug)]
pub struct KeyInputs<'a> {
    /// Owner of the snapshot (snapshots are never shared between users).
    pub user_id: &'a str,
    /// `owner/name`.
    pub repo: &'a str,
    /// Id of the base image (`sha256:...`).
    pub base_image_id: &'a str,
    /// The definition (setup script, setup user, variables).
    pub definition: &'a Definition,
    /// The checkout (input files are read from it).
    pub checkout: &'a Path,
    /// Secret names and versions.
    pub secrets: &'a [EnvSecret],
    /// Rebuild generation.
    pub generation: i64,
}

/// The cache key: SHA-256 (hex) of the inputs. Input files are hashed by content (a missing
/// one counts as missing); secrets by name and version only.
pub fn cache_key(inputs: &KeyInputs<'_>) -> String {
    let mut h = Sha256::new();
    let mut field = |name: &str, value: &[u8]| {
        h.update(name.as_bytes());
        h.update((value.len() as u64).to_le_bytes());
        h.update(value);
    };
    field("v", b"drydock-environment-1");
    field("user", inputs.user_id.as_bytes());
    field("repo", inputs.repo.as_bytes());
    field("base", inputs.base_image_id.as_bytes());
    let def = inputs.definition;
    field("setup", def.setup.as_deref().unwrap_or("").as_bytes());
    field("setup_user", format!("{:?}", def.setup_user).as_bytes());
    for (name, value) in &def.variables {
        field("var", name.as_bytes());
        field("value", value.as_bytes());
    }
    let files = def
        .inputs
        .clone()
        .unwrap_or_else(|| lockfiles_in(inputs.checkout));
    for file in files {
        field("input", file.as_bytes());
        match inside_checkout(inputs.checkout, &file).and_then(|p| std::fs::read(p).ok()) {
            Some(bytes) => field("content", &Sha256::digest(&bytes)),
            None => field("missing", b""),
        }
    }
    let mut secrets: Vec<_> = inputs.secrets.iter().collect();
    secrets.sort_by(|a, b| a.name.cmp(&b.name));
    for secret in secrets {
        field("secret", secret.name.as_bytes());
        field("version", &secret.version.to_le_bytes());
    }
    field("generation", &inputs.generation.to_le_bytes());
    hex::encode(h.finalize())
}

/// The snapshot tag of a key.
pub fn snapshot_tag(key: &str) -> String {
    format!("{SNAPSHOT_REPO}:{}", &key[..key.len().min(32)])
}

/// Labels of an image made for `user_id`'s `repo`.
pub fn labels(
    kind: &str,
    user_id: &str,
    repo: &str,
    key: &str,
    source: Source,
) -> BTreeMap<String, String> {
    [
        (LABEL_KIND, kind),
        (LABEL_USER, user_id),
        (LABEL_REPO, repo),
        (LABEL_KEY, key),
        (LABEL_SOURCE, source.label()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The snapshots of `user_id`'s `repo`, newest first.
pub async fn snapshots_of(
    sandboxes: &Sandboxes,
    user_id: &str,
    repo: &str,
) -> Result<Vec<ImageInfo>, drydock_sandbox::SandboxError> {
    sandboxes
        .list_images(&[
            (LABEL_KIND, "snapshot"),
            (LABEL_USER, user_id),
            (LABEL_REPO, repo),
        ])
        .await
}

/// How long snapshots are kept and how many.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Older ones are removed.
    pub max_age: Duration,
    /// Per user and repository, newest first.
    pub per_repo: usize,
}

/// Removes `user_id`'s snapshots of `repo` (and bases built for it) beyond `retention`, never
/// one a container uses and never `keep`. Answers the tags removed.
pub async fn prune(
    sandboxes: &Sandboxes,
    user_id: &str,
    repo: &str,
    retention: Retention,
    keep: Option<&str>,
) -> Result<Vec<String>, drydock_sandbox::SandboxError> {
    let now = chrono::Utc::now().timestamp();
    let max_age = i64::try_from(retention.max_age.as_secs()).unwrap_or(i64::MAX);
    let mut removed = Vec::new();
    for kind in ["snapshot", "base"] {
        let images = sandboxes
            .list_images(&[
                (LABEL_KIND, kind),
                (LABEL_USER, user_id),
                (LABEL_REPO, repo),
            ])
            .await?;
        for (rank, image) in images.iter().enumerate() {
            if Some(image.id.as_str()) == keep {
                continue;
            }
            let expired = now - image.created_unix > max_age;
            if !expired && rank < retention.per_repo {
                continue;
            }
            if sandboxes.image_in_use(&image.id).await? {
                continue;
            }
            if sandboxes.remove_image(&image.id).await? {
                tracing::info!(image = %image.id, tags = ?image.tags, repo, "pruned environment image");
                removed.extend(image.tags.iter().cloned());
            }
        }
    }
    Ok(removed)
}

/// Operator-registered images, parsed from `name=image,name=image`.
pub fn registered_images(setting: &str) -> BTreeMap<String, String> {
    setting
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(n, i)| (n.trim().to_owned(), i.trim().to_owned()))
        .filter(|(n, i)| !n.is_empty() && !i.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_images_parse() {
        let r = registered_images("py=reg/py:3, jdk = reg/jdk:21,bad");
        assert_eq!(r.len(), 2);
        assert_eq!(r["jdk"], "reg/jdk:21");
    }

    #[test]
    fn the_key_changes_with_inputs_and_secret_versions_but_not_values() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("package-lock.json"), "{}").unwrap();
        let def = Definition {
            setup: Some("make".into()),
            ..Definition::default()
        };
        let secret = |value: &str, version| EnvSecret {
            name: "TOKEN".into(),
            value: SecretString::new(value.to_owned()),
            agent_may_see: false,
            version,
        };
        let key = |def: &Definition, secrets: &[EnvSecret]| {
            cache_key(&KeyInputs {
                user_id: "u",
                repo: "o/r",
                base_image_id: "sha256:1",
                definition: def,
                checkout: dir.path(),
                secrets,
                generation: 0,
            })
        };
        let a = key(&def, &[secret("one", 1)]);
        assert_eq!(a, key(&def, &[secret("two", 1)]));
        assert_ne!(a, key(&def, &[secret("one", 2)]));
        std::fs::write(dir.path().join("package-lock.json"), "{\"x\":1}").unwrap();
        assert_ne!(a, key(&def, &[secret("one", 1)]));
    }

    #[test]
    fn files_outside_the_checkout_are_never_read() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "setup = 'x'").unwrap();
        let repo = tempfile::tempdir().unwrap();
        std::fs::create_dir(repo.path().join(".drydock")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret"),
            repo.path().join(".drydock/environment.toml"),
        )
        .unwrap();
        assert!(inside_checkout(repo.path(), ".drydock/environment.toml").is_none());
        let def = resolve(repo.path(), &Configured::default(), false).unwrap();
        assert_eq!(def.source, Source::Default);
    }
}
