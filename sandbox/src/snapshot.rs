//! Images made from sandboxes and from repositories: committing a sandbox into a snapshot image,
//! building an image from a build context on the host, listing images by label, telling whether
//! a container still uses one, removing them, and reading what a sandbox changed (to check a
//! snapshot before it is made).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bollard::models::ContainerConfig;
use bollard::query_parameters::{
    BuildImageOptions, CommitContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tracing::info;

use crate::client::Sandboxes;
use crate::error::{Result, SandboxError, docker_status};
use crate::sandbox::Sandbox;

/// An image on the Docker host, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Image id (`sha256:...`).
    pub id: String,
    /// Its `name:tag` references.
    pub tags: Vec<String>,
    /// Creation time, unix seconds.
    pub created_unix: i64,
    /// Size of the image with all its layers, in bytes.
    pub size_bytes: i64,
    /// All labels.
    pub labels: BTreeMap<String, String>,
}

/// How to build an image from a directory on the host (a repository's Dockerfile).
#[derive(Debug, Clone, Default)]
pub struct ContextBuild {
    /// The Dockerfile's path inside the context, `/`-separated.
    pub dockerfile: String,
    /// `ARG` values.
    pub args: BTreeMap<String, String>,
    /// Labels of the image.
    pub labels: BTreeMap<String, String>,
    /// Network of `RUN` steps (Docker's network mode names: `none`, `bridge`, `host`, ...).
    pub network: String,
}

/// A path a sandbox changed relative to its image, from Docker's change list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Absolute path.
    pub path: String,
    /// `true` when added, `false` when modified (deleted paths are not listed).
    pub added: bool,
}

impl Sandbox {
    /// Commits the sandbox's filesystem into the image `repo:tag` with `labels` (the container's
    /// own configuration otherwise: user, working directory, plain environment). Answers the
    /// new image's id. The sandbox keeps running.
    pub async fn commit(
        &self,
        repo: &str,
        tag: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<String> {
        let options = CommitContainerOptionsBuilder::new()
            .container(&self.shared.id)
            .repo(repo)
            .tag(tag)
            .comment("drydock environment snapshot")
            .pause(true)
            .build();
        let config = ContainerConfig {
            labels: Some(labels.into_iter().collect::<HashMap<_, _>>()),
            ..Default::default()
        };
        let made = self
            .shared
            .backend
            .docker("an environment snapshot (docker commit)", "snapshot images would need a registry the nodes pull from, which drydock does not run")?
            .commit_container(options, config)
            .await
            .map_err(|e| self.shared.map_gone(e))?;
        info!(container_id = %self.shared.id, image = %format!("{repo}:{tag}"), "sandbox committed");
        Ok(made.id)
    }

    /// The paths added or modified since the sandbox started (deleted ones left out).
    pub async fn changes(&self) -> Result<Vec<Change>> {
        let changes = self
            .shared
            .backend
            .docker("listing a sandbox's changed files", "")?
            .container_changes(&self.shared.id)
            .await
            .map_err(|e| self.shared.map_gone(e))?
            .unwrap_or_default();
        Ok(changes
            .into_iter()
            .filter_map(|c| {
                use bollard::models::ChangeType;
                match c.kind {
                    ChangeType::_1 => Some(Change {
                        path: c.path,
                        added: true,
                    }),
                    ChangeType::_0 => Some(Change {
                        path: c.path,
                        added: false,
                    }),
                    _ => None,
                }
            })
            .collect())
    }

    /// A tar stream of `path` (a file or a whole directory) as it is in the sandbox, read by
    /// Docker directly (no exec, so file modes do not hide anything).
    pub fn download(&self, path: &str) -> BoxStream<'static, Result<Bytes>> {
        let options = DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let shared = self.shared.clone();
        let docker = match self.shared.backend.docker("downloading from a sandbox", "") {
            Ok(d) => d,
            Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
        };
        docker
            .download_from_container(&self.shared.id, Some(options))
            .map(move |item| item.map_err(|e| shared.map_gone(e)))
            .boxed()
    }
}

impl Sandboxes {
    /// The Docker client for `what`, or a clear error on Kubernetes: images there live on the
    /// nodes and would need a registry drydock does not run.
    fn backend_docker(&self, what: &str) -> Result<&bollard::Docker> {
        self.docker().map_err(|_| {
            SandboxError::not_on_kubernetes(what, "snapshot images would need a registry the nodes pull from, which drydock does not run")
        })
    }

    /// The image `image` (name or id), or `None` when the host does not have it.
    pub async fn image(&self, image: &str) -> Result<Option<ImageInfo>> {
        match self
            .backend_docker("inspecting an image")?
            .inspect_image(image)
            .await
        {
            Ok(i) => Ok(Some(ImageInfo {
                id: i.id.unwrap_or_default(),
                tags: i.repo_tags.unwrap_or_default(),
                created_unix: i
                    .created
                    .as_deref()
                    .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                    .map_or(0, |c| c.timestamp()),
                size_bytes: i.size.unwrap_or_default(),
                labels: i
                    .config
                    .and_then(|c| c.labels)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            })),
            Err(e) if docker_status(&e) == Some(404) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Images carrying all of `labels` (`key=value`), newest first.
    pub async fn list_images(&self, labels: &[(&str, &str)]) -> Result<Vec<ImageInfo>> {
        let mut filters = HashMap::new();
        filters.insert(
            "label",
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        );
        let options = ListImagesOptionsBuilder::new().filters(&filters).build();
        let mut images: Vec<ImageInfo> = self
            .backend_docker("listing images")?
            .list_images(Some(options))
            .await?
            .into_iter()
            // Docker filtered already; checking again keeps the promise of never touching an
            // image that is not ours.
            .filter(|i| {
                labels
                    .iter()
                    .all(|(k, v)| i.labels.get(*k) == Some(&(*v).to_owned()))
            })
            .map(|i| ImageInfo {
                id: i.id,
                tags: i.repo_tags,
                created_unix: i.created,
                size_bytes: i.size,
                labels: i.labels.into_iter().collect(),
            })
            .collect();
        images.sort_by_key(|i| std::cmp::Reverse(i.created_unix));
        Ok(images)
    }

    /// Whether any container, running or not, was created from the image `id`.
    pub async fn image_in_use(&self, id: &str) -> Result<bool> {
        let mut filters = HashMap::new();
        filters.insert("ancestor", vec![id.to_owned()]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        Ok(!self
            .backend_docker("checking an image's use")?
            .list_containers(Some(options))
            .await?
            .is_empty())
    }

    /// Removes the image `id` unless a container uses it (Docker refuses, never forced).
    /// Answers whether it was removed.
    pub async fn remove_image(&self, id: &str) -> Result<bool> {
        let options = RemoveImageOptionsBuilder::new()
            .force(false)
            .noprune(false)
            .build();
        match self
            .backend_docker("removing an image")?
            .remove_image(id, Some(options), None)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if matches!(docker_status(&e), Some(404 | 409)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Builds the image `tag` from the directory `context` on this machine, reporting each
    /// output line to `on_line`. Fails with [`SandboxError::ImageBuild`] and the build's last
    /// lines when a step fails.
    pub async fn build_from_context(
        &self,
        context: &Path,
        tag: &str,
        build: &ContextBuild,
        mut on_line: impl FnMut(&str) + Send,
    ) -> Result<()> {
        let docker = self.backend_docker("building an image")?;
        let dir = context.to_owned();
        let tar = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut archive = tar::Builder::new(Vec::new());
            archive.follow_symlinks(false);
            archive.append_dir_all(".", &dir)?;
            archive.into_inner()
        })
        .await
        .map_err(|e| SandboxError::Invalid(format!("packing the build context failed: {e}")))??;
        let options = BuildImageOptions {
            dockerfile: build.dockerfile.clone(),
            t: Some(tag.to_owned()),
            rm: true,
            forcerm: true,
            networkmode: Some(build.network.clone()),
            buildargs: Some(build.args.clone().into_iter().collect()),
            labels: Some(build.labels.clone().into_iter().collect()),
            ..Default::default()
        };
        let mut tail: Vec<String> = Vec::new();
        let mut stream = docker.build_image(options, None, Some(bollard::body_full(tar.into())));
        let failed = |detail: String, tail: Vec<String>| SandboxError::ImageBuild { detail, tail };
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| failed(e.to_string(), tail.clone()))?;
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(failed(detail, tail));
            }
            for line in info.stream.unwrap_or_default().lines() {
                let line = line.trim_end();
                if line.is_empty() {
                    continue;
                }
                if tail.len() == 30 {
                    tail.remove(0);
                }
                tail.push(line.to_owned());
                on_line(line);
            }
        }
        if self.image(tag).await?.is_none() {
            return Err(failed(
                "the build ended without producing the image".into(),
                tail,
            ));
        }
        Ok(())
    }
}
