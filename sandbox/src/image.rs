//! The sandbox image drydock makes itself: its recipe (the files under `sandbox/image/`, embedded
//! in the binary), its content-addressed tag, and the build.
//!
//! There is one copy of the build steps: `sandbox/image/build-offline` for hosts without a
//! container registry, `sandbox/image/Dockerfile` for hosts that can pull its base image. Both
//! are compiled into the binary; [`Images::build`] runs the script (written to a private
//! temporary directory) or sends the Dockerfile to the daemon, and reports the stages it goes
//! through as [`BuildEvent`]s.

use std::collections::VecDeque;
use std::process::Stdio;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{BuildImageOptions, CreateImageOptions, TagImageOptions};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tracing::{info, warn};

use crate::error::{Result, SandboxError, docker_status};

/// The offline build script, `sandbox/image/build-offline`.
pub const BUILD_OFFLINE: &str = include_str!("../image/build-offline");

/// The Dockerfile, `sandbox/image/Dockerfile`.
pub const DOCKERFILE: &str = include_str!("../image/Dockerfile");

/// How many of a build's last output lines are kept for a failure report.
const TAIL_LINES: usize = 30;

/// How long the registry gets to start answering a pull of the Dockerfile's base image before
/// the build falls back to the offline recipe.
const PULL_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests of an image build may last as long as the build.
const BUILD_REQUEST_TIMEOUT: Duration = Duration::from_secs(3 * 60 * 60);

/// The first 16 hex digits of the SHA-256 of the recipe (script and Dockerfile): it changes
/// whenever a new drydock changes how the image is made.
pub fn recipe_hash() -> String {
    let mut hasher = Sha256::new();
    hasher.update(BUILD_OFFLINE.as_bytes());
    hasher.update([0u8]);
    hasher.update(DOCKERFILE.as_bytes());
    let digest = hasher.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// drydock's own image under repository `name`: `{name}:recipe-{recipe_hash}`.
pub fn default_image(name: &str) -> String {
    format!("{name}:recipe-{}", recipe_hash())
}

/// The image the Dockerfile starts from (its first `FROM`).
pub fn dockerfile_base() -> &'static str {
    DOCKERFILE
        .lines()
        .find_map(|line| line.trim().strip_prefix("FROM "))
        .map(str::trim)
        .unwrap_or("node:22-bookworm")
}

/// Which recipe builds the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BuildMethod {
    /// The Dockerfile when the Docker host has or can pull its base image, otherwise offline.
    #[default]
    Auto,
    /// `build-offline`: Debian packages and npm only, no container registry (needs root).
    Offline,
    /// The Dockerfile (needs the base image from a registry).
    Dockerfile,
}

/// How to build the image.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Which recipe.
    pub method: BuildMethod,
    /// The Debian mirror of the offline recipe (default: the first one of the machine's apt
    /// sources that serves the suite).
    pub debian_mirror: Option<String>,
}

/// What a build reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// A new stage began.
    Stage {
        /// 1-based number of the stage.
        step: u32,
        /// How many stages the build has.
        total: u32,
        /// What the stage does.
        title: String,
    },
    /// A line of the build's output.
    Line(String),
}

/// Parses a stage line of `build-offline` (`==> [12:00:00] step 2/5: what`) or of the classic
/// Docker builder (`Step 2/9 : RUN ...`).
pub fn parse_stage(line: &str) -> Option<BuildEvent> {
    let (numbers, title) = if let Some(rest) = line.strip_prefix("==> [") {
        let rest = rest.split_once("] ")?.1.strip_prefix("step ")?;
        rest.split_once(": ")?
    } else {
        let rest = line.strip_prefix("Step ")?;
        rest.split_once(" : ")?
    };
    let (step, total) = numbers.split_once('/')?;
    Some(BuildEvent::Stage {
        step: step.trim().parse().ok()?,
        total: total.trim().parse().ok()?,
        title: title.trim().to_owned(),
    })
}

/// Image work on a Docker host: presence checks and builds.
#[derive(Debug, Clone)]
pub struct Images {
    docker: Docker,
    host: String,
}

impl Images {
    /// Connects to the daemon at `host`, or `DOCKER_HOST`, or the local socket; over mutual
    /// TLS with the certificates in `tls_cert_path` (see [`crate::docker_client`]).
    pub async fn connect(
        host: Option<&str>,
        tls_cert_path: Option<&std::path::Path>,
    ) -> Result<Self> {
        let host = host
            .map(str::to_owned)
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| crate::client::DEFAULT_HOST.to_owned());
        let unavailable = |detail: String| SandboxError::DaemonUnavailable {
            host: host.clone(),
            detail,
        };
        let docker = crate::client::docker_client(&host, tls_cert_path)
            .map_err(|e| crate::client::client_error(&host, tls_cert_path, &e))?
            .with_timeout(BUILD_REQUEST_TIMEOUT);
        let docker = tokio::time::timeout(Duration::from_secs(5), docker.negotiate_version())
            .await
            .map_err(|_| unavailable("no answer within 5 s".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(Self { docker, host })
    }

    /// The daemon's address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The daemon's version and API version, e.g. `27.3.1 (API 1.47)`.
    pub async fn version(&self) -> Result<String> {
        let v = self.docker.version().await?;
        Ok(format!(
            "{} (API {})",
            v.version.unwrap_or_else(|| "unknown".into()),
            v.api_version.unwrap_or_else(|| "unknown".into())
        ))
    }

    /// Whether `image` is on the Docker host.
    pub async fn exists(&self, image: &str) -> Result<bool> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(err) if docker_status(&err) == Some(404) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Builds the image `tag` (`name:tag`) with `method`, reporting progress to `on_event`.
    /// The offline recipe also tags its result `name:offline-<inputs hash>` and `name:offline`.
    pub async fn build(
        &self,
        tag: &str,
        options: &BuildOptions,
        mut on_event: impl FnMut(BuildEvent) + Send,
    ) -> Result<()> {
        let method = match options.method {
            BuildMethod::Auto => {
                if self.base_available(&mut on_event).await {
                    BuildMethod::Dockerfile
                } else {
                    BuildMethod::Offline
                }
            }
            other => other,
        };
        match method {
            BuildMethod::Dockerfile => self.build_dockerfile(tag, &mut on_event).await,
            _ => {
                self.build_offline(tag, options.debian_mirror.as_deref(), &mut on_event)
                    .await
            }
        }
    }

    /// Whether the Dockerfile's base image is here or can be pulled (pulling it if so).
    async fn base_available(&self, on_event: &mut (impl FnMut(BuildEvent) + Send)) -> bool {
        let base = dockerfile_base();
        if matches!(self.exists(base).await, Ok(true)) {
            return true;
        }
        on_event(BuildEvent::Line(format!("pulling {base}")));
        let options = CreateImageOptions {
            from_image: Some(base.to_owned()),
            ..Default::default()
        };
        let mut pull = self.docker.create_image(Some(options), None, None);
        match tokio::time::timeout(PULL_PROBE_TIMEOUT, pull.next()).await {
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(err))) => {
                on_event(BuildEvent::Line(format!(
                    "{base} cannot be pulled ({err}); using the offline recipe"
                )));
                return false;
            }
            Ok(None) | Err(_) => {
                on_event(BuildEvent::Line(format!(
                    "no registry answered for {base}; using the offline recipe"
                )));
                return false;
            }
        }
        while let Some(item) = pull.next().await {
            if let Err(err) = item {
                on_event(BuildEvent::Line(format!(
                    "pulling {base} failed ({err}); using the offline recipe"
                )));
                return false;
            }
        }
        true
    }

    async fn build_dockerfile(
        &self,
        tag: &str,
        on_event: &mut (impl FnMut(BuildEvent) + Send),
    ) -> Result<()> {
        info!(image = %tag, "building the sandbox image from its Dockerfile");
        let mut context = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(DOCKERFILE.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        context.append_data(&mut header, "Dockerfile", DOCKERFILE.as_bytes())?;
        let context = context.into_inner()?;
        let options = BuildImageOptions {
            dockerfile: "Dockerfile".into(),
            t: Some(tag.to_owned()),
            rm: true,
            forcerm: true,
            ..Default::default()
        };
        let mut tail = VecDeque::new();
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(context.into())));
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(err) => return Err(build_failed(err.to_string(), tail)),
            };
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(build_failed(detail, tail));
            }
            for line in info.stream.unwrap_or_default().lines() {
                let line = line.trim_end();
                if line.is_empty() {
                    continue;
                }
                push_tail(&mut tail, line);
                on_event(parse_stage(line).unwrap_or_else(|| BuildEvent::Line(line.to_owned())));
            }
        }
        if !self.exists(tag).await? {
            return Err(build_failed(
                "the build ended without producing the image".into(),
                tail,
            ));
        }
        Ok(())
    }

    async fn build_offline(
        &self,
        tag: &str,
        debian_mirror: Option<&str>,
        on_event: &mut (impl FnMut(BuildEvent) + Send),
    ) -> Result<()> {
        let (name, _) = tag
            .rsplit_once(':')
            .ok_or_else(|| SandboxError::Invalid(format!("image {tag} has no tag")))?;
        info!(image = %tag, "building the sandbox image with the offline recipe");
        let dir = tempfile::tempdir()?;
        let script = dir.path().join("build-offline");
        tokio::fs::write(&script, BUILD_OFFLINE).await?;
        let mut command = tokio::process::Command::new("bash");
        command
            .arg(&script)
            .env("DRYDOCK_IMAGE_NAME", name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so an abandoned build (drydock shutting down) can be ended
            // whole: debootstrap and npm run as children of the script.
            .process_group(0);
        if let Some(mirror) = debian_mirror {
            command.env("DRYDOCK_DEBIAN_MIRROR", mirror);
        }
        if self.host != crate::client::DEFAULT_HOST {
            command.env("DOCKER_HOST", &self.host);
        }
        let mut child = command
            .spawn()
            .map_err(|err| build_failed(format!("cannot start bash: {err}"), VecDeque::new()))?;
        let mut group = ProcessGroup(child.id());
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| build_failed("the build's stdout is missing".into(), VecDeque::new()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| build_failed("the build's stderr is missing".into(), VecDeque::new()))?;
        let out = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text).await;
            text
        });
        let mut tail = VecDeque::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            push_tail(&mut tail, &line);
            on_event(parse_stage(&line).unwrap_or(BuildEvent::Line(line)));
        }
        let status = child.wait().await?;
        group.0 = None;
        let printed = out.await.unwrap_or_default();
        if !status.success() {
            return Err(build_failed(format!("build-offline {status}"), tail));
        }
        let Some(built) = printed.lines().map(str::trim).rfind(|l| !l.is_empty()) else {
            return Err(build_failed(
                "build-offline printed no image tag".into(),
                tail,
            ));
        };
        let (repo, tag_part) = tag
            .rsplit_once(':')
            .ok_or_else(|| SandboxError::Invalid(format!("image {tag} has no tag")))?;
        self.docker
            .tag_image(
                built,
                Some(TagImageOptions {
                    repo: Some(repo.to_owned()),
                    tag: Some(tag_part.to_owned()),
                }),
            )
            .await?;
        info!(image = %tag, built = %built, "sandbox image built");
        Ok(())
    }
}

/// Ends the build's process group (with SIGTERM, so the script's clean-up runs) when the build
/// is dropped before the script exits.
struct ProcessGroup(Option<u32>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            warn!(pgid, "sandbox image build abandoned; ending it");
            let _ = std::process::Command::new("kill")
                .args(["-TERM", "--", &format!("-{pgid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn push_tail(tail: &mut VecDeque<String>, line: &str) {
    if tail.len() == TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line.to_owned());
}

fn build_failed(detail: String, tail: VecDeque<String>) -> SandboxError {
    warn!(%detail, "sandbox image build failed");
    SandboxError::ImageBuild {
        detail,
        tail: tail.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_lines_of_both_recipes_are_parsed() {
        assert_eq!(
            parse_stage("==> [10:43:06] step 2/5: Debian base system (debootstrap)"),
            Some(BuildEvent::Stage {
                step: 2,
                total: 5,
                title: "Debian base system (debootstrap)".into()
            })
        );
        assert_eq!(
            parse_stage("Step 3/9 : RUN apt-get update"),
            Some(BuildEvent::Stage {
                step: 3,
                total: 9,
                title: "RUN apt-get update".into()
            })
        );
        assert_eq!(parse_stage("==> [10:43:06] building x"), None);
        assert_eq!(parse_stage("    debootstrap: I: Retrieving"), None);
    }

    #[test]
    fn the_default_image_is_named_by_the_recipe() {
        let image = default_image("drydock-sandbox");
        assert_eq!(image, format!("drydock-sandbox:recipe-{}", recipe_hash()));
        assert_eq!(recipe_hash().len(), 16);
        assert_eq!(dockerfile_base(), "node:22-bookworm");
        // Every stage line of the script has the shape drydock parses.
        let stages = BUILD_OFFLINE
            .lines()
            .filter(|l| l.trim_start().starts_with("stage "))
            .count();
        assert_eq!(stages, 5);
    }
}
