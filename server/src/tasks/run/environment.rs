//! The environment stage of a fresh sandbox: find the repository's environment, make its base
//! image (drydock's, an operator-registered one, or built from the repository's Dockerfile),
//! and start from its snapshot when one matches the cache key; otherwise run setup in a sandbox
//! of its own, check that no setup-only secret stayed in its filesystem, and commit it into the
//! snapshot the task then starts from. Maintenance runs on every start from a cached snapshot.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use drydock_sandbox::{ContextBuild, ExecSpec, Sandbox};
use futures::StreamExt;
use tracing::instrument;

use super::TaskRunner;
use super::exec::{last_output, run_captured};
use super::outcome::{Outcome, StepResult, exit_outcome, sandbox_failed};
use super::sandbox::SandboxRole;
use super::turn::TurnContext;
use super::workspace::Workspace;
use crate::environments::{
    self, Base, Configured, Definition, EnvSecret, KeyInputs, Retention, SetupUser, Source,
};
use crate::store::{SetupRecord, Task};

/// Lines of a setup log kept for the repository's environment page.
const KEPT_SETUP_LINES: usize = 200;

/// What the task's sandbox starts from.
pub(super) struct Prepared {
    /// Image to create the sandbox from.
    pub image: String,
    /// Plain variables: the sandbox's environment.
    pub variables: BTreeMap<String, String>,
    /// Maintenance to run after the upload (only when starting from a cached snapshot).
    pub maintenance: Option<String>,
    /// Who maintenance runs as.
    pub setup_user: SetupUser,
    /// The base is not drydock's and no setup sandbox checked it yet: check the tools.
    pub check_tools: bool,
}

impl TaskRunner {
    /// The environment configured in drydock for the task's repository, secrets opened.
    pub(super) async fn load_environment(&self, task: &Task) -> StepResult<Configured> {
        let store = &self.inner.store;
        let failed =
            |_| Outcome::failed("could not read the repository's environment: the database failed");
        let row = store
            .get_environment(&task.user_id, &task.repo)
            .await
            .map_err(failed)?;
        let mut secrets = Vec::new();
        if row.is_some() {
            for s in store
                .list_environment_secrets(&task.user_id, &task.repo)
                .await
                .map_err(failed)?
            {
                let value = self.inner.secrets.open_str(&s.value_enc).map_err(|_| {
                    Outcome::failed(format!(
                        "the environment secret {} cannot be opened (was ENCRYPTION_KEY changed?); set it again",
                        s.name
                    ))
                })?;
                secrets.push(EnvSecret {
                    name: s.name,
                    value: crate::config::SecretString::new(value),
                    agent_may_see: s.agent_may_see,
                    version: s.version,
                });
            }
        }
        Ok(Configured { row, secrets })
    }

    /// Finds the environment, makes its image and, on a cache miss, runs setup and snapshots it.
    #[instrument(skip_all, fields(task_id = %cx.task.id))]
    pub(super) async fn prepare_environment(
        &self,
        cx: &mut TurnContext,
        workspace: &Workspace,
        agent_cli: &str,
    ) -> StepResult<Prepared> {
        let checkout = workspace.dir().to_owned();
        let def = environments::resolve(&checkout, &cx.environment, cx.task.install_deps)
            .map_err(|err| Outcome::failed(format!("{err}{}", self.edit_hint(&cx.task))))?;
        for notice in &def.notices {
            cx.say("info", notice).await;
        }
        cx.phase_network = def.network.clone();
        if def.network.is_some() {
            if cx.policy().is_none() {
                cx.say(
                    "info",
                    "The environment's [network] table is not enforced: network policies are off on this server",
                )
                .await;
            }
            // A bad entry fails the task now, before any sandbox runs.
            for phase in [SandboxRole::Setup, SandboxRole::Agent] {
                cx.phase_policy(phase)
                    .map_err(|err| Outcome::failed(format!("{err}{}", self.edit_hint(&cx.task))))?;
            }
        }
        let base = self.base_image(cx, &def, &checkout).await?;
        let mut prepared = Prepared {
            image: base.clone(),
            variables: def.variables.clone(),
            maintenance: None,
            setup_user: def.setup_user,
            check_tools: def.base != Base::Default,
        };
        let Some(setup) = def.setup.clone() else {
            let text = match def.source {
                Source::Default => "Environment: drydock's default (nothing to set up)".to_owned(),
                source => format!("Environment: from {} (no setup)", source.label()),
            };
            cx.say("info", &text).await;
            return Ok(prepared);
        };
        if self.inner.settings.kubernetes.is_some() {
            // A snapshot is an image, and pods only run images their nodes can pull: without a
            // registry drydock pushes to, setup runs in the task's own pod on every start,
            // after the upload, followed by maintenance (with the same secrets maintenance gets).
            let text = format!(
                "Environment: from {}; setup runs in the task's pod on every start (no snapshots on Kubernetes: they would need a registry the nodes pull from)",
                def.source.label()
            );
            cx.say("info", &text).await;
            prepared.maintenance = Some(match &def.maintenance {
                Some(maintenance) => format!("{setup}\n{maintenance}"),
                None => setup,
            });
            return Ok(prepared);
        }
        let sandboxes = self.sandboxes().await.map_err(|err| sandbox_failed(&err))?;
        let base_id = sandboxes
            .image(&base)
            .await
            .map_err(|err| sandbox_failed(&err))?
            .map(|i| i.id)
            .ok_or_else(|| {
                Outcome::failed(format!(
                    "the environment's image {base} is not on the Docker host"
                ))
            })?;
        let key = environments::cache_key(&KeyInputs {
            user_id: &cx.task.user_id,
            repo: &cx.task.repo,
            base_image_id: &base_id,
            definition: &def,
            checkout: &checkout,
            secrets: &cx.environment.secrets,
            generation: cx.environment.generation(),
        });
        let tag = environments::snapshot_tag(&key);
        if let Some(snapshot) = sandboxes
            .image(&tag)
            .await
            .map_err(|err| sandbox_failed(&err))?
        {
            let age = chrono::Utc::now().timestamp() - snapshot.created_unix;
            let text = format!(
                "Environment: from {}, cached {} (setup skipped)",
                def.source.label(),
                ago(age)
            );
            cx.say("info", &text).await;
            prepared.image = tag;
            prepared.maintenance = def.maintenance.clone();
            prepared.check_tools = false;
            return Ok(prepared);
        }
        let text = format!(
            "Environment: from {}; running setup (no snapshot for this setup yet)",
            def.source.label()
        );
        cx.say("info", &text).await;
        let snapshot = self
            .run_setup(cx, &def, &setup, &base, &key, workspace, agent_cli)
            .await?;
        if let Err(err) = environments::prune(
            &sandboxes,
            &cx.task.user_id,
            &cx.task.repo,
            self.retention(),
            Some(&snapshot),
        )
        .await
        {
            tracing::warn!(error = %err, "could not prune environment snapshots");
        }
        prepared.image = tag;
        prepared.check_tools = false;
        Ok(prepared)
    }

    /// Snapshot retention from the settings.
    pub(super) fn retention(&self) -> Retention {
        Retention {
            max_age: self.inner.settings.snapshot_max_age,
            per_repo: self.inner.settings.snapshots_per_repo,
        }
    }

    fn edit_hint(&self, task: &Task) -> String {
        format!(
            " (edit the environment: {}/environments/{})",
            self.inner.settings.public_url, task.repo
        )
    }

    /// The image reference the environment starts from, built first when it comes from the
    /// repository's Dockerfile (once per Dockerfile, build arguments and context contents).
    async fn base_image(
        &self,
        cx: &mut TurnContext,
        def: &Definition,
        checkout: &Path,
    ) -> StepResult<String> {
        match &def.base {
            Base::Default => Ok(self.inner.settings.image.clone()),
            Base::Registered(name) => {
                let images = &self.inner.settings.environment_images;
                if let Some(image) = images.get(name) {
                    return Ok(image.clone());
                }
                if images.values().any(|i| i == name) {
                    return Ok(name.clone());
                }
                let offered: Vec<&str> = images.keys().map(String::as_str).collect();
                Err(Outcome::failed(format!(
                    "the environment names the image {name:?}, which the operator has not registered (offered: {}){}",
                    if offered.is_empty() {
                        "none".to_owned()
                    } else {
                        offered.join(", ")
                    },
                    self.edit_hint(&cx.task)
                )))
            }
            Base::Dockerfile { .. } if self.inner.settings.kubernetes.is_some() => {
                Err(Outcome::failed(format!(
                    "the environment builds its image from the repository's Dockerfile, which drydock does not do on Kubernetes: pods run only images their nodes can pull, and drydock runs no registry to push a build to; use an image the operator registered (DRYDOCK_ENVIRONMENT_IMAGES) and present on the nodes{}",
                    self.edit_hint(&cx.task)
                )))
            }
            Base::Dockerfile {
                context,
                dockerfile,
                args,
            } => {
                self.build_base(cx, checkout, context, dockerfile, args)
                    .await
            }
        }
    }

    async fn build_base(
        &self,
        cx: &mut TurnContext,
        checkout: &Path,
        context: &str,
        dockerfile: &str,
        args: &BTreeMap<String, String>,
    ) -> StepResult<String> {
        let hint = self.edit_hint(&cx.task);
        let bad = move |what: String| Outcome::failed(format!("{what}{hint}"));
        let context_dir = inside(checkout, context).ok_or_else(|| {
            bad(format!(
                "the build context {context:?} is not a folder inside the repository"
            ))
        })?;
        let dockerfile_path = inside(checkout, dockerfile)
            .filter(|p| p.is_file())
            .ok_or_else(|| {
                bad(format!(
                    "the Dockerfile {dockerfile:?} is not a file inside the repository"
                ))
            })?;
        let relative = dockerfile_path
            .strip_prefix(&context_dir)
            .map_err(|_| {
                bad(format!(
                    "the Dockerfile {dockerfile:?} is outside its build context {context:?}"
                ))
            })?
            .to_string_lossy()
            .into_owned();
        // The context's contents are named by git's tree id, so an unchanged context is not
        // sent to Docker again.
        let tree = git_tree(checkout, context).await.unwrap_or_default();
        let mut key_text = format!(
            "{}\n{}\n{dockerfile}\n{context}\n{tree}\n",
            cx.task.user_id, cx.task.repo
        );
        for (k, v) in args {
            key_text.push_str(&format!("{k}={v}\n"));
        }
        key_text.push_str(&std::fs::read_to_string(&dockerfile_path).unwrap_or_default());
        let key = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(key_text.as_bytes()));
        let tag = format!("{}:{}", environments::BASE_REPO, &key[..32]);
        let sandboxes = self.sandboxes().await.map_err(|err| sandbox_failed(&err))?;
        if sandboxes
            .image(&tag)
            .await
            .map_err(|err| sandbox_failed(&err))?
            .is_some()
        {
            return Ok(tag);
        }
        cx.say(
            "info",
            &format!("Building the environment's image from {dockerfile}"),
        )
        .await;
        let build = ContextBuild {
            dockerfile: relative,
            args: args.clone(),
            labels: environments::labels(
                "base",
                &cx.task.user_id,
                &cx.task.repo,
                &key,
                Source::File,
            ),
            // The repository's own RUN steps: under a network policy they get no network at all
            // (the build cannot use the task's proxy; downloads belong in setup, which does).
            network: if cx.task.network_policy.is_some() {
                "none".to_owned()
            } else {
                self.inner.settings.network.clone()
            },
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let building = {
            let tag = tag.clone();
            tokio::spawn(async move {
                sandboxes
                    .build_from_context(&context_dir, &tag, &build, |line| {
                        let _ = tx.send(line.to_owned());
                    })
                    .await
            })
        };
        // Each line reaches the log as it comes, so a long build shows its progress.
        while let Some(line) = rx.recv().await {
            let kind = if line.starts_with("Step ") {
                "info"
            } else {
                "stdout"
            };
            cx.say(kind, &line).await;
        }
        match building.await {
            Ok(Ok(())) => Ok(tag),
            Ok(Err(drydock_sandbox::SandboxError::ImageBuild { detail, tail })) => {
                let last = tail.last().cloned().unwrap_or_default();
                Err(bad(format!(
                    "building the environment's image from {dockerfile} failed: {}",
                    cx.redact(if detail.is_empty() { &last } else { &detail })
                )))
            }
            Ok(Err(err)) => Err(sandbox_failed(&err)),
            Err(_) => Err(Outcome::failed(
                "building the environment's image was interrupted",
            )),
        }
    }

    /// Runs setup in a sandbox of its own and commits it into the snapshot `key`; answers the
    /// snapshot's image id. The sandbox is removed whatever happens.
    #[allow(clippy::too_many_arguments)]
    async fn run_setup(
        &self,
        cx: &mut TurnContext,
        def: &Definition,
        setup: &str,
        base: &str,
        key: &str,
        workspace: &Workspace,
        agent_cli: &str,
    ) -> StepResult<String> {
        let sandbox = self
            .create_sandbox(cx, base, &def.variables, SandboxRole::Setup)
            .await?;
        let result = self
            .setup_in(cx, &sandbox, def, setup, key, workspace, agent_cli)
            .await;
        cx.sandbox = None;
        if let Err(err) = sandbox.remove().await {
            tracing::error!(error = %err, "could not remove the setup sandbox");
        }
        let _ = self.inner.store.set_task_container(&cx.task.id, None).await;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn setup_in(
        &self,
        cx: &mut TurnContext,
        sandbox: &Sandbox,
        def: &Definition,
        setup: &str,
        key: &str,
        workspace: &Workspace,
        agent_cli: &str,
    ) -> StepResult<String> {
        if def.base != Base::Default {
            self.check_tools(cx, sandbox, agent_cli).await?;
        }
        // Setup runs under the task's network policy too (its downloads go through the proxy).
        self.open_egress(cx, sandbox, SandboxRole::Setup).await?;
        sandbox
            .upload_dir("/workspace", workspace.dir())
            .await
            .map_err(|err| Outcome::failed(format!("could not upload the working tree: {err}")))?;
        let first_seq = self.current_seq(&cx.task).await;
        cx.say("info", "Environment setup").await;
        cx.line("command", "setup");
        let spec = self.script_spec(
            setup,
            def.setup_user,
            &cx.environment.secrets,
            cx.task.network_policy.is_some(),
        );
        let (exit, _) = self.exec_logged(cx, sandbox, spec, None).await?;
        if !exit.success() {
            let outcome =
                exit_outcome(&exit, "the environment's setup", last_output(cx).as_deref());
            self.record_setup(cx, def.source, "failed", first_seq).await;
            return Err(Outcome::failed(format!(
                "{}{}",
                outcome.reason,
                self.edit_hint(&cx.task)
            )));
        }
        // The snapshot keeps what setup made, not the checkout: tracked files and git's own
        // data are removed (the next task uploads its own), untracked ones (node_modules,
        // target, .venv) stay.
        let clean = ExecSpec::shell("git ls-files -z | xargs -0 rm -f -- && rm -rf .git")
            .workdir("/workspace");
        let (cleaned, _, stderr) = run_captured(sandbox, &clean).await?;
        if !cleaned.success() {
            cx.say_stderr(&cx.redact(&String::from_utf8_lossy(&stderr)))
                .await;
            return Err(Outcome::failed(
                "could not clear the checkout out of the setup sandbox",
            ));
        }
        let hidden: Vec<&EnvSecret> = cx
            .environment
            .secrets
            .iter()
            .filter(|s| !s.agent_may_see)
            .collect();
        if !hidden.is_empty()
            && let Some((name, path)) = find_secret(sandbox, &hidden).await?
        {
            self.record_setup(cx, def.source, "failed", first_seq).await;
            return Err(Outcome::failed(format!(
                "setup left the setup-only secret {name} in {path}; no snapshot was made (setup must not write secrets to files){}",
                self.edit_hint(&cx.task)
            )));
        }
        let labels =
            environments::labels("snapshot", &cx.task.user_id, &cx.task.repo, key, def.source);
        let tag = environments::snapshot_tag(key);
        let (repo, tag_part) = tag
            .split_once(':')
            .unwrap_or((environments::SNAPSHOT_REPO, key));
        let id = sandbox
            .commit(repo, tag_part, labels)
            .await
            .map_err(|err| sandbox_failed(&err))?;
        cx.say("info", &format!("Environment snapshot {tag} made"))
            .await;
        self.record_setup(cx, def.source, "succeeded", first_seq)
            .await;
        Ok(id)
    }

    /// Checks that an image not made by drydock has what drydock needs; fails naming what is
    /// missing.
    async fn check_tools(
        &self,
        cx: &TurnContext,
        sandbox: &Sandbox,
        agent_cli: &str,
    ) -> StepResult<()> {
        let tools = ["git", "python3", agent_cli];
        let script = "for t in \"$@\"; do command -v \"$t\" >/dev/null 2>&1 || echo \"$t\"; done";
        let mut argv = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            script.to_owned(),
            "check".to_owned(),
        ];
        argv.extend(tools.iter().map(|t| (*t).to_owned()));
        let (_, out, _) = run_captured(sandbox, &ExecSpec::new(argv)).await?;
        let missing: Vec<String> = String::from_utf8_lossy(&out)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|t| match t {
                "git" => "git (drydock hands work back with it)".to_owned(),
                "python3" => "python3 (for drydock's relays)".to_owned(),
                cli => format!("{cli} (the agent's CLI)"),
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(Outcome::failed(format!(
            "the environment's image lacks what drydock needs: {}{}",
            missing.join(", "),
            self.edit_hint(&cx.task)
        )))
    }

    /// The check of an image for a sandbox that had no setup.
    pub(super) async fn check_image(
        &self,
        cx: &TurnContext,
        sandbox: &Sandbox,
        agent_cli: &str,
    ) -> StepResult<()> {
        self.check_tools(cx, sandbox, agent_cli).await
    }

    /// Runs maintenance after the upload into a sandbox started from a cached snapshot.
    #[instrument(skip_all)]
    pub(super) async fn run_maintenance(
        &self,
        cx: &mut TurnContext,
        sandbox: &Sandbox,
        script: &str,
        user: SetupUser,
    ) -> StepResult<()> {
        cx.say("info", "Environment maintenance").await;
        cx.line("command", "maintenance");
        let spec = self.script_spec(
            script,
            user,
            &cx.environment.secrets,
            cx.task.network_policy.is_some(),
        );
        let (exit, _) = self.exec_logged(cx, sandbox, spec, None).await?;
        if !exit.success() {
            let outcome = exit_outcome(
                &exit,
                "the environment's maintenance",
                last_output(cx).as_deref(),
            );
            return Err(Outcome::failed(format!(
                "{}{}",
                outcome.reason,
                self.edit_hint(&cx.task)
            )));
        }
        Ok(())
    }

    /// A setup or maintenance exec: `sh -e` in the working tree, every secret of the environment
    /// in this exec's environment only, and the proxy variables when a network policy applies.
    fn script_spec(
        &self,
        script: &str,
        user: SetupUser,
        secrets: &[EnvSecret],
        policy: bool,
    ) -> ExecSpec {
        let mut spec = ExecSpec::new(["sh", "-ec", script]).workdir("/workspace");
        if let Some(user) = user.exec_user() {
            spec = spec.user(user).env("HOME", "/root");
        }
        if policy {
            for (name, value) in crate::egress::proxy_env() {
                spec = spec.env(name, value);
            }
        }
        for secret in secrets {
            spec = spec.env(secret.name.clone(), secret.value.expose());
        }
        spec
    }

    async fn current_seq(&self, task: &Task) -> i64 {
        match self.inner.store.get_task(&task.user_id, &task.id).await {
            Ok(Some(t)) => t.event_seq,
            _ => 0,
        }
    }

    /// Stores the setup's log (its last lines, already redacted) and how it ended.
    async fn record_setup(&self, cx: &mut TurnContext, source: Source, status: &str, after: i64) {
        cx.flush_log().await;
        let events = self
            .inner
            .store
            .list_task_events_after(&cx.task.id, after, 100_000)
            .await
            .unwrap_or_default();
        let skip = events.len().saturating_sub(KEPT_SETUP_LINES);
        let log: Vec<String> = events
            .iter()
            .skip(skip)
            .map(|e| format!("{}: {}", e.kind, e.text))
            .collect();
        let record = SetupRecord {
            source: source.label(),
            status,
            log: &log.join("\n"),
        };
        if let Err(err) = self
            .inner
            .store
            .record_environment_setup(&cx.task.user_id, &cx.task.repo, &record)
            .await
        {
            tracing::error!(error = %err, "could not record the setup");
        }
    }
}

use crate::environments::inside_checkout as inside;

/// git's id of the tree at `dir` in the checkout's HEAD.
async fn git_tree(checkout: &Path, dir: &str) -> Option<String> {
    let spec = if dir == "." || dir.is_empty() {
        "HEAD^{tree}".to_owned()
    } else {
        format!("HEAD:{}", dir.trim_end_matches('/'))
    };
    let out = tokio::process::Command::new("git")
        .arg("-C")
        .arg(checkout)
        .args(["rev-parse", &spec])
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Looks for any of `secrets` in what the sandbox added or changed (read by Docker, whatever
/// the file modes); answers the first secret's name and where it was found.
async fn find_secret(
    sandbox: &Sandbox,
    secrets: &[&EnvSecret],
) -> StepResult<Option<(String, String)>> {
    let changes = sandbox
        .changes()
        .await
        .map_err(|err| sandbox_failed(&err))?;
    let added: std::collections::HashSet<&str> = changes
        .iter()
        .filter(|c| c.added)
        .map(|c| c.path.as_str())
        .collect();
    let parents: std::collections::HashSet<&str> = changes
        .iter()
        .filter_map(|c| Path::new(&c.path).parent()?.to_str())
        .collect();
    // Added paths whose parent was not added (their archives hold everything below), and
    // modified paths that are not directories of other changes (modified files).
    let roots: Vec<&str> = changes
        .iter()
        .filter(|c| {
            let parent = Path::new(&c.path)
                .parent()
                .and_then(Path::to_str)
                .unwrap_or("/");
            if c.added {
                !added.contains(parent)
            } else {
                !parents.contains(c.path.as_str())
            }
        })
        .map(|c| c.path.as_str())
        .filter(|p| !p.starts_with("/proc") && !p.starts_with("/sys") && !p.starts_with("/dev"))
        .collect();
    let longest = secrets
        .iter()
        .map(|s| s.value.expose().len())
        .max()
        .unwrap_or(0);
    for root in roots {
        let mut stream = sandbox.download(root);
        let mut window: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            window.extend_from_slice(&chunk);
            for secret in secrets {
                let needle = secret.value.expose().as_bytes();
                if !needle.is_empty() && window.windows(needle.len()).any(|w| w == needle) {
                    return Ok(Some((secret.name.clone(), root.to_owned())));
                }
            }
            // Keep only what a value split across reads could still start in.
            let keep = longest.saturating_sub(1).min(window.len());
            window.drain(..window.len() - keep);
        }
    }
    Ok(None)
}

/// "2 h ago", "5 min ago", "just now".
fn ago(secs: i64) -> String {
    let d = Duration::from_secs(u64::try_from(secs.max(0)).unwrap_or(0));
    match d.as_secs() {
        0..60 => "just now".to_owned(),
        60..3600 => format!("{} min ago", d.as_secs() / 60),
        s => format!("{} h ago", s / 3600),
    }
}

impl TaskRunner {
    /// Prunes the snapshots of every repository with an environment in this database (those of
    /// other drydock databases sharing the Docker host are left alone).
    pub(super) async fn prune_snapshots(&self) {
        if self.inner.settings.kubernetes.is_some() {
            // No snapshots are made there.
            return;
        }
        let Ok(sandboxes) = self.sandboxes().await else {
            return;
        };
        let images = match sandboxes
            .list_images(&[(environments::LABEL_KIND, "snapshot")])
            .await
        {
            Ok(images) => images,
            Err(err) => {
                tracing::warn!(error = %err, "could not list environment snapshots");
                return;
            }
        };
        let mut repos: Vec<(String, String)> = images
            .iter()
            .filter_map(|i| {
                Some((
                    i.labels.get(environments::LABEL_USER)?.clone(),
                    i.labels.get(environments::LABEL_REPO)?.clone(),
                ))
            })
            .collect();
        repos.sort();
        repos.dedup();
        for (user_id, repo) in repos {
            if !matches!(
                self.inner.store.get_environment(&user_id, &repo).await,
                Ok(Some(_))
            ) {
                continue;
            }
            if let Err(err) =
                environments::prune(&sandboxes, &user_id, &repo, self.retention(), None).await
            {
                tracing::warn!(error = %err, repo, "could not prune environment snapshots");
            }
        }
    }
}
