//! The agent stages: deciding what to run for a turn (its prompt, whether it resumes its own
//! session, the launch plan with the user's key and connectors), then running it with its output
//! streamed into the task's log and its final reply kept in the conversation.

use std::collections::BTreeMap;

use drydock_agents::{LaunchPlan, LaunchRequest, McpServer, McpTransport, OutputParser};
use drydock_sandbox::{ExecSpec, Sandbox};
use tracing::instrument;

use super::TaskRunner;
use super::exec::{last_output, read_logged};
use super::outcome::{Outcome, StepResult, judge_agent};
use super::turn::TurnContext;

/// What a turn runs: the launch plan, and whether it resumes the agent's own session in the
/// kept sandbox found for it.
pub(super) struct Launch {
    /// argv, environment and config files of the agent CLI.
    pub plan: LaunchPlan,
    /// The agent resumes its session (the prompt is the new message alone).
    pub resume: bool,
    /// The task's kept sandbox, when a follow-up found it still running.
    pub kept: Option<Sandbox>,
    /// Connectors left out and why, for the task's log once it is open.
    pub notices: Vec<String>,
    /// Secrets the plan does not carry but the log must never show (the real key behind a
    /// gateway placeholder).
    pub hidden: Vec<String>,
}

impl TaskRunner {
    /// Decides what to run. A follow-up continues in the kept sandbox when there is one,
    /// resuming the agent's own session where its CLI can; otherwise it starts afresh from the
    /// branch with the earlier turns in its prompt.
    pub(super) async fn prepare_agent(&self, cx: &TurnContext) -> StepResult<Launch> {
        let kept = if cx.follow_up() {
            self.live_sandbox(&cx.task).await
        } else {
            None
        };
        let resume = kept.is_some()
            && self
                .inner
                .agents
                .get(&cx.task.agent)
                .is_ok_and(|a| a.supports_resume());
        let mut notices = Vec::new();
        let mut hidden = Vec::new();
        let plan = self.plan(cx, resume, &mut notices, &mut hidden).await?;
        Ok(Launch {
            plan,
            resume,
            kept,
            notices,
            hidden,
        })
    }

    /// The kept sandbox could not be used after all: nothing to resume, so the earlier turns go
    /// into the prompt.
    pub(super) async fn forgo_resume(
        &self,
        cx: &TurnContext,
        launch: &mut Launch,
    ) -> StepResult<()> {
        if launch.resume {
            launch.plan = self
                .plan(cx, false, &mut Vec::new(), &mut launch.hidden)
                .await?;
            launch.resume = false;
        }
        Ok(())
    }

    /// The prompt of a turn: the message itself on the first turn and when the agent resumes its
    /// own session; otherwise the message after the earlier turns (bounded).
    async fn turn_prompt(&self, cx: &TurnContext, resume: bool) -> StepResult<String> {
        if !cx.follow_up() || resume {
            return Ok(cx.message.clone());
        }
        let earlier = self
            .inner
            .store
            .list_task_messages(&cx.task.id)
            .await
            .map_err(|_| Outcome::failed("could not read the task's conversation"))?;
        Ok(super::prompt::follow_up_prompt(
            &cx.task,
            &earlier,
            cx.number,
            &cx.message,
        ))
    }

    /// The launch plan, with the one key the chosen model needs: under a network policy, when
    /// the agent's CLI can use the model gateway, a placeholder standing for the key during this
    /// turn (the real key goes to `hidden`, for redaction) and the gateway's URL.
    pub(super) async fn plan(
        &self,
        cx: &TurnContext,
        resume: bool,
        notices: &mut Vec<String>,
        hidden: &mut Vec<String>,
    ) -> StepResult<LaunchPlan> {
        let task = &cx.task;
        let agent = self.inner.agents.get(&task.agent).map_err(|_| {
            Outcome::failed(format!("the agent {} is no longer offered", task.agent))
        })?;
        let model_provider = task
            .model
            .as_deref()
            .and_then(|id| agent.models.iter().find(|m| m.id == id))
            .and_then(|m| m.provider.as_deref());
        let provider = crate::agents_api::model_provider(agent, model_provider).map(str::to_owned);
        let mut keys = BTreeMap::new();
        if let Some(provider) = provider {
            let row = self
                .inner
                .store
                .get_api_key(&task.user_id, &provider)
                .await
                .map_err(|_| Outcome::failed("could not read your API key"))?
                .ok_or_else(|| {
                    Outcome::failed(format!(
                        "no {provider} API key is configured; add one in Settings → API keys"
                    ))
                })?;
            let key = self.inner.secrets.open_str(&row.key_enc).map_err(|_| {
                Outcome::failed(format!(
                    "your {provider} API key could not be decrypted; set it again"
                ))
            })?;
            keys.insert(provider, key);
        }
        let base_urls = self.inner.settings.base_urls.clone();
        let mut gateway_urls = BTreeMap::new();
        if task.network_policy.is_some() && !task.key_in_sandbox {
            for (provider, key) in &mut keys {
                // The agent's own base URL (an operator agent's endpoint) is where the gateway
                // forwards; the agent itself is given the gateway.
                let Some(upstream) = self.inner.egress.upstream_for(agent, provider) else {
                    return Err(Outcome::failed(format!(
                        "drydock's model gateway has no upstream for {provider}"
                    )));
                };
                let token = self.inner.egress.issue(
                    &task.id,
                    &task.user_id,
                    cx.number,
                    provider,
                    crate::config::SecretString::new(key.clone()),
                    upstream,
                );
                hidden.push(std::mem::replace(key, token));
                gateway_urls.insert(provider.clone(), crate::egress::gateway_url(provider));
            }
        }
        let request = LaunchRequest {
            agent: task.agent.clone(),
            model: task.model.clone(),
            prompt: self.turn_prompt(cx, resume).await?,
            keys,
            base_urls,
            gateway_urls,
            mcp_servers: self.mcp_servers(cx, notices).await?,
            resume,
        };
        self.inner
            .agents
            .plan(&request)
            .map_err(|err| Outcome::failed(format!("cannot run the agent: {err}")))
    }

    /// The connectors chosen for the task, opened for the agent's config (a connector deleted
    /// since the task was submitted is left out, and so is an OAuth connector without a usable
    /// token, with a notice saying why).
    async fn mcp_servers(
        &self,
        cx: &TurnContext,
        notices: &mut Vec<String>,
    ) -> StepResult<Vec<McpServer>> {
        let store = &self.inner.store;
        let task = &cx.task;
        let ids = store
            .list_task_connector_ids(&task.id)
            .await
            .map_err(|_| Outcome::failed("could not read the task's connectors"))?;
        let open = |sealed: Option<&str>, name: &str| -> StepResult<BTreeMap<String, String>> {
            let Some(sealed) = sealed else {
                return Ok(BTreeMap::new());
            };
            self.inner
                .secrets
                .open_str(sealed)
                .ok()
                .and_then(|json| serde_json::from_str(&json).ok())
                .ok_or_else(|| {
                    Outcome::failed(format!(
                        "the secrets of connector {name} could not be decrypted; set them again"
                    ))
                })
        };
        let mut servers = Vec::new();
        for id in ids {
            let Some(c) = store
                .get_connector(&task.user_id, &id)
                .await
                .map_err(|_| Outcome::failed("could not read the task's connectors"))?
            else {
                continue;
            };
            let transport = match c.transport.as_str() {
                "http" => {
                    let mut headers = open(c.headers_enc.as_deref(), &c.name)?;
                    if c.auth == "oauth" {
                        match self.connector_token(&c).await {
                            Ok(token) => {
                                headers.insert("Authorization".into(), format!("Bearer {token}"));
                            }
                            Err(problem) => {
                                notices.push(format!(
                                    "Connector {} is left out of this task: {problem}",
                                    c.name
                                ));
                                continue;
                            }
                        }
                    }
                    McpTransport::Http {
                        url: c.url.clone().unwrap_or_default(),
                        headers,
                    }
                }
                _ => McpTransport::Stdio {
                    command: c.command.clone().unwrap_or_default(),
                    args: serde_json::from_str(&c.args).unwrap_or_default(),
                    env: open(c.env_enc.as_deref(), &c.name)?,
                },
            };
            servers.push(McpServer {
                name: c.name.clone(),
                transport,
            });
        }
        Ok(servers)
    }

    /// This server's OAuth connector refresh locks (the API's connection tests share them).
    pub(crate) fn connector_refresh_locks(&self) -> &crate::connectors::tokens::RefreshLocks {
        &self.inner.settings.connector_refresh_locks
    }

    /// A usable access token of an OAuth connector, refreshed single-flight when it is about to
    /// expire (see [`crate::connectors::tokens`]).
    async fn connector_token(
        &self,
        c: &crate::store::Connector,
    ) -> Result<String, crate::connectors::tokens::GrantProblem> {
        let source = crate::connectors::tokens::TokenSource {
            store: &self.inner.store,
            secrets: &self.inner.secrets,
            allow_private: self.inner.settings.allow_private_connector_urls,
            locks: &self.inner.settings.connector_refresh_locks,
            backoff_ms: i64::try_from(self.inner.settings.connector_backoff.as_millis())
                .unwrap_or(i64::MAX),
        };
        Ok(source.fresh_grant(c, false).await?.access_token)
    }

    /// Writes the agent's config files into the sandbox, runs the agent with its output in the
    /// log, and keeps its final reply (redacted) in the conversation; answers that reply.
    #[instrument(skip_all, fields(task_id = %cx.task.id))]
    pub(super) async fn run_agent(
        &self,
        cx: &mut TurnContext,
        sandbox: &Sandbox,
        launch: &Launch,
    ) -> StepResult<Option<String>> {
        let plan = &launch.plan;
        for file in &plan.files {
            sandbox
                .write_file(&file.path, &file.contents, file.mode, None)
                .await
                .map_err(|err| Outcome::failed(format!("could not write {}: {err}", file.path)))?;
        }
        let agent_name = self.agent_name(&cx.task);
        cx.say("info", &format!("Running {agent_name}")).await;
        // The agent's output is also kept in the sandbox, so that another replica can follow it
        // should this one be lost (see `reattach`); it is read live from the exec as before.
        let mut spec = ExecSpec::new(super::reattach::keeping_output(cx.number, &plan.argv))
            .workdir(plan.workdir.clone())
            .user(plan.user.clone());
        for (name, value) in &plan.env {
            spec = spec.env(name.clone(), value.clone());
        }
        let output = sandbox
            .exec(&spec)
            .await
            .map_err(|err| super::outcome::sandbox_failed(&err))?;
        let Some(sink) = cx.sink.as_mut() else {
            return Err(Outcome::failed("internal: no log"));
        };
        let log = sink.agent_exec_log(Some(OutputParser::new(plan.parser)), cx.number, (0, 0));
        let (exit, said) = read_logged(cx, output, log).await?;
        self.agent_ended(cx, &exit, said).await
    }

    /// After the agent's exec ended: judges how it went (a warning, or the outcome of a failed
    /// run) and keeps its final reply (redacted) in the conversation, once per turn; answers that
    /// reply.
    pub(super) async fn agent_ended(
        &self,
        cx: &mut TurnContext,
        exit: &drydock_sandbox::ExecExit,
        said: crate::tasks::logs::AgentEnd,
    ) -> StepResult<Option<String>> {
        if let Some(warning) = judge_agent(exit, said.verdict.as_ref(), last_output(cx).as_deref())?
        {
            cx.say("error", &warning).await;
            cx.warnings.push(warning);
        }
        let reply = said.reply;
        if let Some(reply) = &reply {
            let replied = self
                .inner
                .store
                .turn_messages(&cx.task.id, cx.number)
                .await
                .is_ok_and(|(_, replied)| replied);
            if !replied {
                let text = cx.redact(reply);
                let _ = self
                    .inner
                    .store
                    .insert_task_message(&cx.task.id, "agent", &text, Some(cx.number))
                    .await;
            }
        }
        Ok(reply)
    }

    /// The agent's display name ("Claude Code"), or its id when it is no longer offered.
    pub(super) fn agent_name(&self, task: &crate::store::Task) -> String {
        self.inner
            .agents
            .get(&task.agent)
            .map_or(task.agent.clone(), |a| a.name.clone())
    }
}
