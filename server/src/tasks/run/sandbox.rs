//! Starting the sandbox of a turn: continuing in the task's kept sandbox when its working tree is
//! where the branch is, otherwise a hardened sandbox from the repository's environment (see
//! [`super::environment`]): one begun from the warm pool or created while the host clones, when
//! the environment turns out to be the default one, else one made for the environment's image;
//! then the checkout is uploaded and the environment's maintenance runs.

use std::collections::BTreeMap;
use std::time::Duration;

use drydock_sandbox::{ExecSpec, Sandbox, SandboxError, SandboxSpec, Sandboxes};
use tracing::{Instrument, instrument};

use super::TaskRunner;
use super::agent::Launch;
use super::exec::run_captured;
use super::outcome::{Outcome, StepResult, sandbox_failed};
use super::turn::TurnContext;
use super::workspace::Workspace;

/// What a sandbox of a turn is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SandboxRole {
    /// The agent runs in it.
    Agent,
    /// The environment's setup runs in it, then it is committed into a snapshot.
    Setup,
}

impl TaskRunner {
    /// The sandbox the agent runs in: the kept one when it can be continued (else the agent
    /// cannot resume, and its plan is made again without), or a fresh one with the working tree.
    pub(super) async fn start_sandbox(
        &self,
        cx: &mut TurnContext,
        workspace: &Workspace,
        launch: &mut Launch,
    ) -> StepResult<Sandbox> {
        let kept = match launch.kept.take() {
            Some(sandbox) => self.continue_in(cx, sandbox, workspace).await?,
            None => None,
        };
        if let Some(sandbox) = kept {
            // The environment is not prepared again, but its network table still narrows the
            // agent's phase.
            if let Ok(def) =
                crate::environments::resolve(workspace.dir(), &cx.environment, cx.task.install_deps)
            {
                cx.phase_network = def.network;
            }
            self.open_egress(cx, &sandbox, SandboxRole::Agent).await?;
            return Ok(sandbox);
        }
        self.forgo_resume(cx, launch).await?;
        let agent_cli = launch.plan.argv.first().cloned().unwrap_or_default();
        let prepared = self.prepare_environment(cx, workspace, &agent_cli).await?;
        let sandbox = self
            .create_sandbox(cx, &prepared.image, &prepared.variables, SandboxRole::Agent)
            .await?;
        if prepared.check_tools {
            self.check_image(cx, &sandbox, &agent_cli).await?;
        }
        cx.say("info", "Uploading the working tree").await;
        // The egress relay and the upload are independent: both must be done before the agent
        // starts, neither needs the other.
        let (egress, upload) = tokio::join!(
            self.open_egress(cx, &sandbox, SandboxRole::Agent),
            sandbox.upload_dir("/workspace", workspace.dir()),
        );
        egress?;
        upload
            .map_err(|err| Outcome::failed(format!("could not upload the working tree: {err}")))?;
        if let Some(script) = &prepared.maintenance {
            // Maintenance is setup's kind of work (installs): it runs under setup's policy.
            self.enter_phase(cx, SandboxRole::Setup)?;
            self.run_maintenance(cx, &sandbox, script, prepared.setup_user)
                .await?;
            self.enter_phase(cx, SandboxRole::Agent)?;
        }
        Ok(sandbox)
    }

    /// Takes over the kept sandbox for a follow-up when its working tree is where the branch is
    /// on GitHub, or builds on it (work an earlier push could not deliver); otherwise removes it
    /// (a fresh one is then made from the branch).
    async fn continue_in(
        &self,
        cx: &mut TurnContext,
        sandbox: Sandbox,
        workspace: &Workspace,
    ) -> StepResult<Option<Sandbox>> {
        cx.sandbox = Some(sandbox.clone());
        let spec = ExecSpec::new(["git", "rev-parse", "HEAD"]).workdir("/workspace");
        let (_, head, _) = run_captured(&sandbox, &spec).await?;
        if String::from_utf8_lossy(&head).trim() == workspace.start_sha {
            cx.say("info", "Continuing in the task's sandbox").await;
            return Ok(Some(sandbox));
        }
        // A turn whose push GitHub refused left its work only here: when that work builds on
        // where the branch is on GitHub, the follow-up continues with it (and pushes it too).
        let descends = if workspace.start_sha.is_empty() {
            true
        } else {
            let spec = ExecSpec::new([
                "git",
                "merge-base",
                "--is-ancestor",
                &workspace.start_sha,
                "HEAD",
            ])
            .workdir("/workspace");
            run_captured(&sandbox, &spec).await?.0.success()
        };
        if descends {
            cx.say(
                "info",
                "Continuing in the task's sandbox, which holds work not yet on GitHub",
            )
            .await;
            return Ok(Some(sandbox));
        }
        cx.say(
            "info",
            "The branch is not where the kept sandbox left it; starting a fresh sandbox from the branch",
        )
        .await;
        cx.sandbox = None;
        if let Err(err) = sandbox.remove().await {
            tracing::error!(error = %err, "could not remove the kept sandbox");
        }
        Ok(None)
    }

    /// Begins starting a fresh sandbox in the background, unless the turn will continue in the
    /// task's kept sandbox: one for the default environment (drydock's image, no variables),
    /// taken from the warm pool when one is ready, otherwise created. It runs in its own tokio
    /// task while the host clones; [`create_sandbox`](Self::create_sandbox) uses it when the
    /// repository's environment turns out to want exactly that, and removes it otherwise. The end
    /// of the turn removes it whatever stage the turn stopped at.
    pub(super) async fn begin_sandbox(&self, cx: &mut TurnContext, launch: &Launch) {
        if launch.kept.is_some() || cx.creating.is_some() {
            return;
        }
        let Ok(sandboxes) = self.sandboxes().await else {
            // Said when the sandbox is needed (create_sandbox asks again).
            return;
        };
        let image = sandboxes.defaults().image.clone();
        let spec = self.sandbox_spec(&sandboxes, cx, &image, &BTreeMap::new(), SandboxRole::Agent);
        self.spawn_sandbox(cx, sandboxes, spec);
    }

    /// Starts a sandbox of `spec` in its own tokio task (a warm one when the pool has one of
    /// its shape), so a stop arriving mid-way cannot drop the handle of a container Docker
    /// already made.
    fn spawn_sandbox(&self, cx: &mut TurnContext, sandboxes: Sandboxes, spec: SandboxSpec) {
        let runner = self.clone();
        cx.creating_shape = Some(spec.shape().key());
        cx.creating = Some(tokio::spawn(
            async move {
                if let Some(sandbox) = runner.take_warm(&sandboxes, &spec).await {
                    return Ok::<_, SandboxError>(sandbox);
                }
                let sandbox = sandboxes.create(spec).await?;
                // Readied while the host clones (a warm sandbox was readied in the pool).
                ready_first_execs(&sandbox).await;
                Ok(sandbox)
            }
            .in_current_span(),
        ));
    }

    /// The spec of a sandbox of the task: drydock's hardening and limits, `image`, `variables`
    /// as its environment (plain values only: secrets go to single execs), and no network but
    /// the relay under a network policy.
    fn sandbox_spec(
        &self,
        sandboxes: &Sandboxes,
        cx: &TurnContext,
        image: &str,
        variables: &BTreeMap<String, String>,
        role: SandboxRole,
    ) -> SandboxSpec {
        let task = &cx.task;
        let mut spec = sandboxes
            .spec(task.id.clone())
            .deadline(self.sandbox_deadline(task));
        // The image is part of the spec, so the warm pool (keyed by the spec's shape) sees the
        // environment.
        spec.image = image.to_owned();
        for (name, value) in variables {
            spec = spec.env(name.clone(), value.clone());
        }
        if task.network_policy.is_some() {
            spec = under_policy(spec, role);
        }
        spec
    }

    /// How long a task's sandbox may live: a little longer than the turn (so the turn reports
    /// its own timeout), or a kept-alive sandbox's lifetime (each turn still has its deadline).
    fn sandbox_deadline(&self, task: &crate::store::Task) -> Duration {
        let deadline = Duration::from_secs(u64::try_from(task.max_duration_s).unwrap_or(3600) + 60);
        if task.keep_alive {
            deadline.max(self.inner.settings.keep_alive_lifetime)
        } else {
            deadline
        }
    }

    /// A hardened sandbox of the task from `image` with `variables`: the one begun while the
    /// host cloned when it has exactly this shape, else a new one (the begun one is removed).
    /// Recorded as the task's container (the link the reaper, restart reconciliation and
    /// previews read).
    #[instrument(skip_all, fields(task_id = %cx.task.id))]
    pub(super) async fn create_sandbox(
        &self,
        cx: &mut TurnContext,
        image: &str,
        variables: &BTreeMap<String, String>,
        role: SandboxRole,
    ) -> StepResult<Sandbox> {
        let sandboxes = self.sandboxes().await.map_err(|err| sandbox_failed(&err))?;
        let spec = self.sandbox_spec(&sandboxes, cx, image, variables, role);
        if cx.creating.is_some()
            && cx.creating_shape.as_deref() != Some(spec.shape().key().as_str())
        {
            self.discard_begun(cx).await;
        }
        if cx.creating.is_none() {
            self.spawn_sandbox(cx, sandboxes, spec);
        }
        cx.say("info", "Starting the sandbox").await;
        let creating = cx
            .creating
            .as_mut()
            .ok_or_else(|| Outcome::failed("the sandbox was never started"))?;
        let created = creating.await;
        cx.creating = None;
        cx.creating_shape = None;
        let sandbox = created
            .map_err(|_| Outcome::failed("creating the sandbox was interrupted"))?
            .map_err(|err| sandbox_failed(&err))?;
        let _ = self
            .inner
            .store
            .set_task_container(&cx.task.id, Some(sandbox.id()))
            .await;
        cx.sandbox = Some(sandbox.clone());
        Ok(sandbox)
    }

    /// Removes the sandbox begun while the host cloned: the environment wants another.
    async fn discard_begun(&self, cx: &mut TurnContext) {
        cx.creating_shape = None;
        if let Some(creating) = cx.creating.take()
            && let Ok(Ok(sandbox)) = creating.await
            && let Err(err) = sandbox.remove().await
        {
            tracing::error!(error = %err, "could not remove a sandbox the environment did not want");
        }
    }

    /// Switches the turn's proxy to the policy of `phase` (setup and maintenance, or the
    /// agent), when the task has a policy.
    pub(super) fn enter_phase(&self, cx: &mut TurnContext, phase: SandboxRole) -> StepResult<()> {
        let policy = cx.phase_policy(phase).map_err(Outcome::failed)?;
        if let (Some(proxy), Some(policy)) = (cx.proxy.as_ref(), policy) {
            proxy.set_policy(policy);
        }
        Ok(())
    }

    /// Under a network policy, starts the sandbox's relay and serves it with the task's egress
    /// proxy and model gateway, under the policy of `phase`, until the turn ends (or until the
    /// next sandbox of the turn opens its own: the setup sandbox's relay is replaced by the
    /// agent's).
    #[instrument(skip_all, fields(task_id = %cx.task.id))]
    pub(super) async fn open_egress(
        &self,
        cx: &mut TurnContext,
        sandbox: &Sandbox,
        phase: SandboxRole,
    ) -> StepResult<()> {
        let Some(policy) = cx.phase_policy(phase).map_err(Outcome::failed)? else {
            return Ok(());
        };
        let listener = sandbox
            .egress_listener(crate::egress::PROXY_PORT)
            .await
            .map_err(|err| {
                Outcome::failed(format!("could not open the sandbox's network: {err}"))
            })?;
        let Some(redactor) = cx.sink.as_ref().map(|s| s.redactor().clone()) else {
            return Err(Outcome::failed("the task's log is not open"));
        };
        let mode = cx.policy().map_or(policy.mode, |p| p.mode).as_str();
        let proxy = std::sync::Arc::new(crate::egress::proxy::TaskProxy {
            egress: self.inner.egress.clone(),
            task_id: cx.task.id.clone(),
            // Vendor hosts are for agents that keep their key inside; Copilot CLI on a user's
            // own provider key goes through the gateway and needs none of GitHub's.
            agent: if cx.task.key_in_sandbox {
                cx.task.agent.clone()
            } else {
                String::new()
            },
            turn: cx.number,
            policy: std::sync::RwLock::new(policy),
            redactor,
            connector_hosts: self.connector_hosts(&cx.task).await,
            allow_private_connectors: self.inner.settings.allow_private_connector_urls,
        });
        // A turn with a setup sandbox opens egress twice; the policy is said once.
        let first = cx.egress.is_none();
        cx.proxy = Some(proxy.clone());
        if let Some(old) = cx
            .egress
            .replace(crate::egress::proxy::serve(listener, proxy))
        {
            old.abort();
        }
        if !first {
            return Ok(());
        }
        if let Some(network) = &cx.phase_network {
            let phase = |asked: &Option<String>| {
                asked
                    .as_deref()
                    .map_or_else(|| format!("the task's {mode}"), str::to_owned)
            };
            let note = format!(
                "The environment narrows the network: setup and maintenance {}, the agent {}",
                phase(&network.setup),
                phase(&network.agent)
            );
            cx.say("info", &note).await;
        }
        let note = if cx.task.key_in_sandbox {
            format!(
                "Network policy: {mode}; this agent's key is inside the sandbox (its CLI cannot use drydock's model gateway)"
            )
        } else {
            format!("Network policy: {mode}; the agent's model calls go through drydock's gateway")
        };
        cx.say("info", &note).await;
        Ok(())
    }

    /// The hosts of the task's HTTP connectors: the agent reaches them through the proxy in
    /// every policy (they are part of the task).
    async fn connector_hosts(&self, task: &crate::store::Task) -> Vec<String> {
        let store = &self.inner.store;
        let mut hosts = Vec::new();
        for id in store
            .list_task_connector_ids(&task.id)
            .await
            .unwrap_or_default()
        {
            if let Ok(Some(c)) = store.get_connector(&task.user_id, &id).await
                && c.transport == "http"
                && let Some(host) = c
                    .url
                    .as_deref()
                    .and_then(|u| reqwest::Url::parse(u).ok())
                    .and_then(|u| {
                        u.host_str()
                            .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase())
                    })
            {
                hosts.push(host);
            }
        }
        hosts
    }
}

/// Readies the first execs of a task's sandbox (see [`Sandbox::ready_exec`]): the upload of the
/// working tree (as the sandbox user) and the agent (as the agent's user), so neither waits for
/// Docker's exec start. A failure only loses the head start (logged).
pub(super) async fn ready_first_execs(sandbox: &Sandbox) {
    let (upload, agent) = tokio::join!(
        sandbox.ready_exec(None),
        sandbox.ready_exec(Some(drydock_agents::AGENT_USER)),
    );
    if let Err(err) = upload.and(agent) {
        tracing::warn!(error = %err, "could not ready the sandbox's first execs");
    }
}

/// A sandbox under a network policy: no network at all, the only way out being the relay to
/// drydock's proxy and gateway. An agent's sandbox also gets the proxy variables; a setup
/// sandbox becomes a snapshot that later tasks (with another policy, or none) start from, so
/// they go to its setup exec instead, never into its image.
pub(super) fn under_policy(mut spec: SandboxSpec, role: SandboxRole) -> SandboxSpec {
    spec = spec.network(drydock_sandbox::NetworkMode::None);
    if role == SandboxRole::Agent {
        for (name, value) in crate::egress::proxy_env() {
            spec = spec.env(name, value);
        }
    }
    spec
}
