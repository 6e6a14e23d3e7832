//! The sandbox image's state, one answer for the log, the pages, `/readyz`, `/admin` and the
//! scheduler: checking, ready, being built (which stage, since when), failed (the build's last
//! lines), missing, or unknown (Docker does not answer).
//!
//! drydock's own image (`DRYDOCK_SANDBOX_IMAGE` unset) is built in the background when it is
//! missing; tasks wait in the queue meanwhile. A named image is never built: when it is missing
//! drydock says so and tasks fail fast, as they always did.

use std::sync::Arc;
use std::time::{Duration, Instant};

use drydock_sandbox::{BuildEvent, BuildMethod, BuildOptions, Images, SandboxError};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ImageBuild};

/// How often a missing, failed or unreachable image is looked for again (a build made by
/// `drydock image build` or by hand is noticed this way).
const RECHECK_EVERY: Duration = Duration::from_secs(5);

/// Where the image is at.
#[derive(Debug, Clone)]
pub enum ImageState {
    /// Not looked at yet.
    Checking,
    /// On the Docker host.
    Ready,
    /// Being built.
    Building {
        /// Current stage (0 before the first).
        step: u32,
        /// Stages in all (0 until known).
        total: u32,
        /// What the current stage does.
        stage: String,
        /// When the build began.
        started: Instant,
        /// The same, in unix milliseconds (for pages).
        started_ms: i64,
    },
    /// The build failed.
    Failed {
        /// What ended it.
        detail: String,
        /// Its last output lines (URL credentials masked).
        tail: Vec<String>,
    },
    /// Not on the Docker host, and drydock does not build it.
    Missing,
    /// Docker does not answer.
    Unknown(String),
}

/// The image's state as the API, probes and pages show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ImageStatus {
    /// The image sandboxes run.
    pub image: String,
    /// `checking`, `ready`, `building`, `failed`, `missing` or `unknown`; `not_checked` on
    /// Kubernetes, where the nodes pull the image.
    pub state: &'static str,
    /// Whether the operator named it (`DRYDOCK_SANDBOX_IMAGE`); drydock builds only its own.
    pub named: bool,
    /// The build's current stage, 1-based.
    pub step: Option<u32>,
    /// The build's stages in all.
    pub total: Option<u32>,
    /// What the current stage does.
    pub stage: Option<String>,
    /// When the build began (unix milliseconds).
    pub started_at: Option<i64>,
    /// Seconds the build has taken so far.
    pub elapsed_s: Option<u64>,
    /// One sentence for people.
    pub message: String,
}

/// The sandbox image service, shared through `AppState`.
#[derive(Debug)]
pub struct SandboxImage {
    image: String,
    named: bool,
    build: ImageBuild,
    options: BuildOptions,
    docker_host: Option<String>,
    docker_cert_path: Option<std::path::PathBuf>,
    /// Sandboxes are Kubernetes pods: the image lives on the nodes (or a registry they pull
    /// from), out of drydock's sight, so it is neither checked nor built here.
    kubernetes: bool,
    state: watch::Sender<ImageState>,
}

impl SandboxImage {
    /// The service for the image `config` resolves to; nothing is checked until [`start`].
    ///
    /// [`start`]: SandboxImage::start
    pub fn new(config: &Config) -> Arc<Self> {
        Arc::new(Self {
            image: config.resolve_sandbox_image(),
            named: config.sandbox_image_is_named(),
            build: config.sandbox_image_build,
            options: build_options(config),
            docker_host: config.docker_host.clone(),
            docker_cert_path: config.docker_cert_path.clone(),
            kubernetes: config.sandbox_backend == crate::config::SandboxBackend::Kubernetes,
            state: watch::Sender::new(ImageState::Checking),
        })
    }

    /// The image sandboxes run.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// The current state.
    pub fn state(&self) -> ImageState {
        self.state.borrow().clone()
    }

    /// Whether the image is on the Docker host.
    pub fn is_ready(&self) -> bool {
        matches!(*self.state.borrow(), ImageState::Ready)
    }

    /// Why queued tasks must wait, while they must: the image is being checked, built, or its
    /// build failed. A missing named image lets tasks go (they fail fast with that message).
    pub fn queue_reason(&self) -> Option<String> {
        match &*self.state.borrow() {
            ImageState::Checking => Some("waiting for the sandbox image check".into()),
            ImageState::Building {
                step, total, stage, ..
            } if *total > 0 => Some(format!(
                "waiting for the sandbox image to be built (step {step} of {total}: {stage})"
            )),
            ImageState::Building { .. } => {
                Some("waiting for the sandbox image to be built".into())
            }
            ImageState::Failed { .. } => Some(
                "waiting for the sandbox image: its build failed; an operator can retry with `drydock image build`".into(),
            ),
            ImageState::Ready | ImageState::Missing | ImageState::Unknown(_) => None,
        }
    }

    /// For the scheduler: when queued tasks must wait for the image, records why on each of
    /// `queued` (and tells their pages) and answers true; answers false when they may start.
    pub async fn hold_queued(
        &self,
        queued: &[crate::store::Task],
        store: &crate::store::Store,
        hub: &crate::tasks::EventHub,
    ) -> bool {
        let Some(reason) = self.queue_reason() else {
            return false;
        };
        for task in queued {
            match store.set_queued_reason(&task.id, Some(&reason)).await {
                Ok(true) => hub.status_changed(crate::tasks::hub::StatusChange {
                    user_id: task.user_id.clone(),
                    task_id: task.id.clone(),
                    status: "queued".into(),
                    status_reason: Some(reason.clone()),
                }),
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(error = %err, task_id = %task.id, "could not record why a task waits")
                }
            }
        }
        true
    }

    /// The state as the API, probes and pages show it.
    pub fn status(&self) -> ImageStatus {
        let state = self.state();
        let mut status = ImageStatus {
            image: self.image.clone(),
            state: "checking",
            named: self.named,
            step: None,
            total: None,
            stage: None,
            started_at: None,
            elapsed_s: None,
            message: format!("Checking the sandbox image {}.", self.image),
        };
        match state {
            ImageState::Checking => {}
            // Nothing here can see the nodes' images: say so rather than "ready".
            ImageState::Ready if self.kubernetes => {
                status.state = "not_checked";
                status.message = format!(
                    "Sandboxes run on Kubernetes: the nodes pull {} (from a registry they reach, \
                     or loaded on them); drydock neither checks nor builds it there.",
                    self.image
                );
            }
            ImageState::Ready => {
                status.state = "ready";
                status.message = format!("The sandbox image {} is ready.", self.image);
            }
            ImageState::Building {
                step,
                total,
                stage,
                started,
                started_ms,
            } => {
                let elapsed = started.elapsed().as_secs();
                status.state = "building";
                status.started_at = Some(started_ms);
                status.elapsed_s = Some(elapsed);
                status.message = if total > 0 {
                    status.step = Some(step);
                    status.total = Some(total);
                    status.stage = Some(stage);
                    format!(
                        "Preparing the sandbox image — step {step} of {total}, {}",
                        fmt_elapsed(elapsed)
                    )
                } else {
                    format!("Preparing the sandbox image — {}", fmt_elapsed(elapsed))
                };
            }
            ImageState::Failed { detail, .. } => {
                status.state = "failed";
                status.message = format!(
                    "Building the sandbox image {} failed ({detail}). Retry with `drydock image build` on the server; tasks start once the image is there.",
                    self.image
                );
            }
            ImageState::Missing => {
                status.state = "missing";
                status.message = if self.named {
                    format!(
                        "The sandbox image {} (DRYDOCK_SANDBOX_IMAGE) is not on the Docker host, and drydock builds only its own: tasks fail until it is there. Build it, or unset DRYDOCK_SANDBOX_IMAGE to let drydock build its image.",
                        self.image
                    )
                } else {
                    format!(
                        "The sandbox image {} is not on the Docker host and DRYDOCK_SANDBOX_IMAGE_BUILD is off: tasks fail until it is there. Build it with `drydock image build`.",
                        self.image
                    )
                };
            }
            ImageState::Unknown(detail) => {
                status.state = "unknown";
                status.message = format!(
                    "Docker does not answer, so the sandbox image {} cannot be checked: {detail}",
                    self.image
                );
            }
        }
        status
    }

    /// The failed build's last lines (empty unless it failed).
    pub fn failure_tail(&self) -> Vec<String> {
        match &*self.state.borrow() {
            ImageState::Failed { tail, .. } => tail.clone(),
            _ => Vec::new(),
        }
    }

    /// Looks for the image in the background: builds drydock's own image when it is missing, and
    /// keeps looking for a missing or failed one until it is there or `shutdown`.
    pub fn start(self: &Arc<Self>, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = this.watch_until_ready() => {}
            }
        });
    }

    async fn watch_until_ready(&self) {
        if self.kubernetes {
            // A pod whose image the node cannot pull fails to start with ImageNotPulled, which
            // the task reports.
            tracing::info!(image = %self.image, "sandboxes run on Kubernetes: the sandbox image must be on the nodes or in a registry they pull from; drydock neither checks nor builds it there");
            self.state.send_replace(ImageState::Ready);
            return;
        }
        let mut built_once = false;
        loop {
            match Images::connect(
                self.docker_host.as_deref(),
                self.docker_cert_path.as_deref(),
            )
            .await
            {
                Err(err) => self.set_unknown(&err),
                Ok(images) => match images.exists(&self.image).await {
                    Err(err) => self.set_unknown(&err),
                    Ok(true) => {
                        tracing::info!(image = %self.image, "the sandbox image is ready");
                        self.state.send_replace(ImageState::Ready);
                        return;
                    }
                    Ok(false) if self.named || self.build == ImageBuild::Off => {
                        if !matches!(*self.state.borrow(), ImageState::Missing) {
                            self.state.send_replace(ImageState::Missing);
                            tracing::warn!(image = %self.image, named = self.named, "{}", self.status().message);
                        }
                    }
                    Ok(false) if !built_once => {
                        built_once = true;
                        if self.build_with(&images).await.is_ok() {
                            return;
                        }
                    }
                    Ok(false) => {}
                },
            }
            tokio::time::sleep(RECHECK_EVERY).await;
        }
    }

    fn set_unknown(&self, err: &SandboxError) {
        let detail = err.to_string();
        let changed = !matches!(&*self.state.borrow(), ImageState::Unknown(d) if *d == detail);
        if changed {
            tracing::warn!(image = %self.image, error = %detail, "cannot check the sandbox image: Docker does not answer");
            self.state.send_replace(ImageState::Unknown(detail));
        }
    }

    /// Builds the image, keeping the state and the log up to date.
    async fn build_with(&self, images: &Images) -> Result<(), SandboxError> {
        let started = Instant::now();
        tracing::info!(image = %self.image, method = ?self.build, "the sandbox image is not on the Docker host; building it in the background (tasks wait in the queue)");
        self.state.send_replace(ImageState::Building {
            step: 0,
            total: 0,
            stage: String::new(),
            started,
            started_ms: crate::store::now_ms(),
        });
        let result = images
            .build(&self.image, &self.options, |event| {
                if let BuildEvent::Stage { step, total, title } = event {
                    let elapsed_s = started.elapsed().as_secs();
                    tracing::info!(image = %self.image, step, total, elapsed_s, "sandbox image: step {step}/{total}: {title}");
                    self.state.send_modify(|state| {
                        if let ImageState::Building {
                            step: s,
                            total: t,
                            stage,
                            ..
                        } = state
                        {
                            *s = step;
                            *t = total;
                            *stage = title;
                        }
                    });
                } else if let BuildEvent::Line(line) = event {
                    tracing::debug!(image = %self.image, "sandbox image build: {}", mask_credentials(&line));
                }
            })
            .await;
        match result {
            Ok(()) => {
                tracing::info!(image = %self.image, elapsed_s = started.elapsed().as_secs(), "the sandbox image is built; queued tasks start now");
                self.state.send_replace(ImageState::Ready);
                Ok(())
            }
            Err(err) => {
                let (detail, tail) = match &err {
                    SandboxError::ImageBuild { detail, tail } => (detail.clone(), tail.clone()),
                    other => (other.to_string(), Vec::new()),
                };
                let tail: Vec<String> = tail.iter().map(|l| mask_credentials(l)).collect();
                tracing::error!(image = %self.image, elapsed_s = started.elapsed().as_secs(), detail = %mask_credentials(&detail), last_lines = %tail.join("\n"), "building the sandbox image failed; retry with `drydock image build`");
                self.state.send_replace(ImageState::Failed {
                    detail: mask_credentials(&detail),
                    tail,
                });
                Err(err)
            }
        }
    }
}

/// How the settings ask for the image to be built.
pub fn build_options(config: &Config) -> BuildOptions {
    BuildOptions {
        method: match config.sandbox_image_build {
            ImageBuild::Offline => BuildMethod::Offline,
            ImageBuild::Dockerfile => BuildMethod::Dockerfile,
            ImageBuild::Auto | ImageBuild::Off => BuildMethod::Auto,
        },
        debian_mirror: config.debian_mirror.clone(),
    }
}

/// `1 min 20 s`, `45 s`, `1 h 2 min`.
pub fn fmt_elapsed(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min {} s", seconds / 60, seconds % 60),
        _ => format!("{} h {} min", seconds / 3600, (seconds % 3600) / 60),
    }
}

/// Replaces the user-info part of URLs (`scheme://user:password@host`) with `***`, so a mirror
/// or registry credential in build output never reaches a page or the log.
pub fn mask_credentials(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c.is_whitespace())
            .unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str("***");
                rest = &tail[userinfo_end..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// `drydock image build`: builds drydock's own image in the foreground with a progress bar on
/// stderr; fails when the build does (its last lines are printed).
pub async fn build_in_foreground(config: &Config) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};

    if config.sandbox_image_is_named() {
        anyhow::bail!(
            "DRYDOCK_SANDBOX_IMAGE names your own image ({}); drydock builds only its own ({}). Unset DRYDOCK_SANDBOX_IMAGE to use drydock's image.",
            config.resolve_sandbox_image(),
            drydock_sandbox::image::default_image(&config.sandbox_image_name)
        );
    }
    let image = config.resolve_sandbox_image();
    let images = Images::connect(
        config.docker_host.as_deref(),
        config.docker_cert_path.as_deref(),
    )
    .await?;
    if images.exists(&image).await? {
        eprintln!("The sandbox image {image} is already on the Docker host.");
        return Ok(());
    }
    eprintln!("Building the sandbox image {image} on {}", images.host());
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let progress = Arc::new(std::sync::Mutex::new((0u32, 0u32, String::new())));
    let draw = {
        let progress = progress.clone();
        move |final_line: bool| {
            let (step, total, stage) = progress.lock().map(|p| p.clone()).unwrap_or_default();
            let width = 24usize;
            let filled = if stage == "done" {
                width
            } else if total > 0 {
                (width * step.saturating_sub(1) as usize) / total as usize
            } else {
                0
            };
            let bar = format!("[{}>{}]", "=".repeat(filled), " ".repeat(width - filled));
            let line = format!(
                "{bar} step {step}/{total} {stage} ({})",
                fmt_elapsed(started.elapsed().as_secs())
            );
            let mut err = std::io::stderr();
            if tty {
                let _ = write!(err, "\r\x1b[2K{line}");
                if final_line {
                    let _ = writeln!(err);
                }
            } else {
                let _ = writeln!(err, "{line}");
            }
            let _ = err.flush();
        }
    };
    let ticker = tty.then(|| {
        let draw = draw.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                draw(false);
            }
        })
    });
    let options = build_options(config);
    let build = images.build(&image, &options, |event| {
        if let BuildEvent::Stage { step, total, title } = event {
            if tty {
                // Finish the previous stage's line, then start this one.
                draw(true);
            }
            if let Ok(mut p) = progress.lock() {
                *p = (step, total, title);
            }
            draw(false);
        }
    });
    // Ctrl-C stops the build (its whole process group) rather than leaving it running.
    let result = tokio::select! {
        result = build => result,
        _ = tokio::signal::ctrl_c() => {
            eprintln!();
            anyhow::bail!("interrupted: the build was stopped");
        }
    };
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    if result.is_ok()
        && let Ok(mut p) = progress.lock()
    {
        p.0 = p.1;
        p.2 = "done".into();
    }
    draw(true);
    match result {
        Ok(()) => {
            eprintln!(
                "Built {image} in {}.",
                fmt_elapsed(started.elapsed().as_secs())
            );
            Ok(())
        }
        Err(SandboxError::ImageBuild { detail, tail }) => {
            eprintln!("Last lines of the build:");
            for line in tail {
                eprintln!("  {}", mask_credentials(&line));
            }
            anyhow::bail!(
                "building the sandbox image failed: {}",
                mask_credentials(&detail)
            )
        }
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_masked() {
        assert_eq!(
            mask_credentials("fetch https://bob:s3cret@mirror.example/debian and http://plain/x"),
            "fetch https://***@mirror.example/debian and http://plain/x"
        );
        assert_eq!(mask_credentials("no url here"), "no url here");
    }

    #[test]
    fn elapsed_times_read_as_people_say_them() {
        assert_eq!(fmt_elapsed(45), "45 s");
        assert_eq!(fmt_elapsed(80), "1 min 20 s");
        assert_eq!(fmt_elapsed(3720), "1 h 2 min");
    }
}
