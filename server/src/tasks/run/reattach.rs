//! Following an agent from another replica: the agent's output is kept in its sandbox as well as
//! streamed, so that the replica adopting a lost replica's turn can replay it, store what was
//! not stored yet, wait for the agent's exit status and run the rest of the turn.
//!
//! **Kept where.** The agent runs under a small `sh` script (through the `sandbox` crate's
//! ordinary exec, so Docker and Kubernetes alike) that copies its stdout and stderr with `tee`
//! into `/tmp/.drydock/turn-N/{stdout,stderr}` and on to the exec's own streams, which drydock
//! reads live as before (no file is polled on the live path). When the agent ends, the script
//! waits for both copies to be complete and then writes the exit status to `status`. The
//! copies ignore `SIGPIPE`: when the exec's stream dies with the replica that read it, they go
//! on writing the files. The script runs in the exec's process group, so stopping the turn
//! still ends all of it. The directory is made by the sandbox user (mode 0700); a symlink in
//! its place, or any failure to make it, runs the agent as before, unkept (then the turn cannot
//! be reattached and fails as it did before); so does an image without `tee`.
//!
//! **Where the log stops.** Each event made from the agent's output is stored with its stream
//! and its index among that stream's events, in the statement that stores it. The adopter
//! replays each file from its first byte through a fresh pipeline (same secrets, redaction,
//! line splitting, terminal rendering and output parser) and stores only the events past the
//! stored indexes: the pipeline is a function of each stream's bytes, so nothing is lost or
//! stored twice, and the parser's state (the final reply, the CLI's verdict) is rebuilt.
//!
//! **What the agent can do to the files.** It runs as the same user and may rewrite them, or
//! write a `status` early; all it gains is what it can do anyway: print other output, or end
//! its run early. The files are read by an exec as the sandbox user (a symlink leads nowhere
//! the agent could not read itself), every byte goes through the task's redaction as live
//! output does, the resume point is in the database, never in the sandbox, a `status` that is
//! not an exit code fails the turn, and the turn's deadline still applies to a file that never
//! ends. The files hold nothing the sandbox did not have: under a network policy the agent only
//! ever sees placeholders, and the GitHub token never enters a sandbox. A kept sandbox's next
//! turn removes the earlier turns' files.
//!
//! **What is rebuilt.** The adopter makes again what the turn holds in memory: the launch plan
//! (keys, connectors), the environment's secrets and so the redaction, the host checkout, and
//! under a network policy the task's egress proxy with a new relay in the sandbox (the old one
//! ended with the lost replica's exec; connections open through it were cut) and the model
//! gateway's grant of the placeholder key the agent holds (placeholders are derived from the key
//! every replica shares, see [`crate::egress::Egress::issue`]).
//!
//! What is not reattached: a turn lost before its agent started, a sandbox that is gone, and an agent that is gone without an exit status: those end
//! failed with a reason naming the lost replica. Across the replay, the order of stdout lines
//! relative to stderr lines follows the files, not the original arrival order (each stream's
//! own order is kept).

use std::time::Duration;

use drydock_agents::OutputParser;
use drydock_sandbox::{ExecExit, ExecSpec, Sandbox};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, instrument};

use super::TaskRunner;
use super::agent::Launch;
use super::exec::{read_logged, run_captured};
use super::outcome::{self, Outcome, StepResult, human_duration};
use super::turn::TurnContext;
use crate::store::{Task, now_ms};
use crate::tasks::logs::AgentEnd;

/// Where turns keep their agent's output in the sandbox.
const TURN_DIRS: &str = "/tmp/.drydock";

/// Runs `"$@"` (the agent) with its output copied into the turn's directory `$1` and on to
/// this exec's streams, then records its exit status there (see the module's documentation).
/// Pipes, not FIFOs: one `mkdir` is the only extra process before the agent starts (the two
/// `tee`s start beside it), and the agent keeps no descriptor but its three streams.
const KEEP_OUTPUT: &str = r#"d=$1; shift; b=${d%/*}
if [ -L "$b" ] || ! command -v tee >/dev/null || ! { { [ ! -d "$b" ] || rm -rf "$b"/turn-*; } && mkdir -p -m 700 "$b" "$d" && [ ! -L "$d" ] && : > "$d/stdout" && : > "$d/stderr"; } 2>/dev/null; then
  echo "drydock: the agent's output is not kept in its sandbox (no tee, or $d could not be made)" >&2
  exec "$@"
fi
echo $$ > "$d/pid"
exec 4>&1
{ { ("$@" 2>&3 3>&- 4>&-; echo $? > "$d/code") | (trap '' PIPE; exec tee -a "$d/stdout" 3>&- 4>&-); } 3>&1 1>&4 | (trap '' PIPE; exec tee -a "$d/stderr" >&2 4>&-); }
read -r c < "$d/code" || c=1
echo "$c" > "$d/status.new" && mv -f "$d/status.new" "$d/status"
exit "$c""#;

/// Writes what the turn's directory `$1` holds to this exec's stdout and stderr, following the
/// files until the exit status is there. Exit 0: all of it was written and the status is there;
/// 90: the files are not there; 91: the agent is gone without a status.
const FOLLOW: &str = r#"d=$1
[ -f "$d/stdout" ] && [ -f "$d/stderr" ] && [ -f "$d/pid" ] || exit 90
o=0; e=0
while :; do
  if [ -f "$d/status" ]; then f=1; else f=0; fi
  n=$(wc -c < "$d/stdout"); m=$(wc -c < "$d/stderr")
  if [ "$n" -gt "$o" ]; then tail -c +$((o+1)) "$d/stdout" | head -c $((n-o)); o=$n; fi
  if [ "$m" -gt "$e" ]; then tail -c +$((e+1)) "$d/stderr" | head -c $((m-e)) >&2; e=$m; fi
  [ $f = 1 ] && exit 0
  if ! kill -0 "$(cat "$d/pid")" 2>/dev/null; then [ -f "$d/status" ] || exit 91; continue; fi
  sleep 0.2
done"#;

/// Ends the agent of the turn whose directory is `$1` (its whole process group, as stopping a
/// live turn does) unless it has left its exit status.
const STOP: &str = r#"d=$1
[ -f "$d/status" ] && exit 0
p=$(cat "$d/pid" 2>/dev/null) || exit 0
read -r _ _ _ _ g _ < "/proc/$p/stat" 2>/dev/null && kill -9 "-$g" 2>/dev/null
exit 0"#;

/// The directory of turn `turn` in its sandbox.
fn turn_dir(turn: i64) -> String {
    format!("{TURN_DIRS}/turn-{turn}")
}

/// The argv that runs `argv` (the agent of turn `turn`) with its output kept in the sandbox.
pub(super) fn keeping_output(turn: i64, argv: &[String]) -> Vec<String> {
    let mut wrapped = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        KEEP_OUTPUT.to_owned(),
        "drydock-agent".to_owned(),
        turn_dir(turn),
    ];
    wrapped.extend(argv.iter().cloned());
    wrapped
}

impl TaskRunner {
    /// Takes over a running turn adopted from replica `lost`: follows its agent in its sandbox
    /// when that can be done, otherwise ends the turn failed with a reason naming `lost`.
    pub(super) async fn adopt_running(&self, task: Task, lost: &str) {
        // The row as adopted: its sandbox's label is recorded now.
        let task = match self.inner.store.get_task_for_runner(&task.id).await {
            Ok(Some(task)) => task,
            _ => task,
        };
        match self.reattachable(&task).await {
            Ok(sandbox) => {
                tracing::warn!(task_id = %task.id, lost, "reattaching to a lost replica's agent");
                let token = self.inner.shutdown.child_token();
                self.lock_running().insert(task.id.clone(), token.clone());
                let runner = self.clone();
                let lost = lost.to_owned();
                let span = tracing::info_span!("task", task_id = %task.id);
                tokio::spawn(
                    async move { runner.run_reattached(task, lost, sandbox, token).await }
                        .instrument(span),
                );
            }
            Err(why) => self.end_adopted(task, lost, &why).await,
        }
    }

    /// The task's sandbox, when the turn may be followed in it; otherwise why not.
    async fn reattachable(&self, task: &Task) -> Result<Sandbox, String> {
        let Some(container_id) = task.container_id.as_deref() else {
            return Err("the turn had no sandbox yet".to_owned());
        };
        let Some(sandboxes) = self.sandboxes_labelled_for(task).await else {
            return Err("the sandbox backend cannot be reached".to_owned());
        };
        let sandbox = sandboxes
            .get(container_id)
            .await
            .map_err(|_| "its sandbox is gone".to_owned())?;
        if !sandbox.is_running().await.unwrap_or(false) {
            return Err("its sandbox no longer runs".to_owned());
        }
        Ok(sandbox)
    }

    /// Runs the rest of an adopted turn until it ends, is stopped, or outlives the time the
    /// task allows (counted from the turn's start), then ends it as any turn ends.
    async fn run_reattached(
        self,
        task: Task,
        lost: String,
        sandbox: Sandbox,
        cancel: CancellationToken,
    ) {
        let number = task.turns.max(1);
        let message = match self.inner.store.turn_messages(&task.id, number).await {
            Ok((Some(message), _)) => message.content,
            _ => task.prompt.clone(),
        };
        let allowed = Duration::from_secs(u64::try_from(task.max_duration_s).unwrap_or(3600));
        let ran = Duration::from_millis(
            u64::try_from(now_ms() - task.started_at.unwrap_or_else(now_ms)).unwrap_or(0),
        );
        let mut cx = TurnContext::new(task, number, message);
        cx.sandbox = Some(sandbox.clone());
        let outcome = tokio::select! {
            outcome = self.execute_reattached(&mut cx, &lost, &sandbox) => {
                outcome.unwrap_or_else(|outcome| outcome)
            }
            () = cancel.cancelled() => outcome::cancelled(self.inner.shutdown.is_cancelled()),
            () = tokio::time::sleep(allowed.saturating_sub(ran)) => outcome::timed_out(allowed),
        };
        // A turn that ends before its agent did (stopped, timed out, a later stage failed with
        // the sandbox kept) must not leave the agent running: a live turn's exec would end it.
        if let Some(sandbox) = cx.sandbox.as_ref() {
            let dir = turn_dir(number);
            let stop = ExecSpec::new(["sh", "-c", STOP, "drydock-stop", dir.as_str()]);
            let _ = run_captured(sandbox, &stop).await;
        }
        self.end_turn(cx, outcome).await;
    }

    /// The stages of an adopted turn: what the turn needs rebuilt (its keys, connectors and
    /// secrets for the redaction, the host checkout, the egress proxy and relay under a network
    /// policy), the agent followed to its end, then hand-back and publishing as the original
    /// turn would have done them.
    async fn execute_reattached(
        &self,
        cx: &mut TurnContext,
        lost: &str,
        sandbox: &Sandbox,
    ) -> StepResult<Outcome> {
        let token = self.github_token(&cx.task).await?;
        let mut hidden = Vec::new();
        let plan = self.plan(cx, false, &mut Vec::new(), &mut hidden).await?;
        cx.environment = self.load_environment(&cx.task).await?;
        let launch = Launch {
            plan,
            resume: false,
            kept: None,
            notices: Vec::new(),
            hidden,
        };
        self.open_log(cx, &token, &launch)?;
        let me = self.inner.settings.runner_id.clone();
        cx.say(
            "info",
            &format!(
                "Replica {lost} was lost while running this turn; replica {me} follows the \
                 agent in its sandbox from where the log stops"
            ),
        )
        .await;
        let mut checkout = self.begin_checkout(cx, &token).await?;
        let source = self.locate_branch(cx, &token, &mut checkout).await?;
        let mut workspace = self.prepare_workspace(cx, &token, source, checkout).await?;
        if cx.policy().is_some() {
            // The relay in the sandbox ended with the lost replica's exec; the agent's network
            // is served from here now, narrowed by the repository's environment as before.
            let def = crate::environments::resolve(
                workspace.dir(),
                &cx.environment,
                cx.task.install_deps,
            )
            .map_err(|err| Outcome::failed(err.to_string()))?;
            cx.phase_network = def.network;
            self.open_egress(cx, sandbox, super::sandbox::SandboxRole::Agent)
                .await?;
        }
        let (exit, said) = match self.follow_agent(cx, sandbox, &launch).await {
            Ok(followed) => followed,
            Err(why) => {
                if let Some(sandbox) = cx.sandbox.take()
                    && let Err(err) = sandbox.remove().await
                {
                    tracing::error!(error = %err, "could not remove the sandbox");
                }
                self.remove_sandboxes_of(&cx.task.id, Some(lost)).await;
                let _ = self.inner.store.set_task_container(&cx.task.id, None).await;
                return Err(Outcome::failed(self.lost_reason(lost, &why)));
            }
        };
        let reply = self.agent_ended(cx, &exit, said).await?;
        let Some(work) = self.hand_back(cx, sandbox, &workspace).await? else {
            return Ok(Outcome::no_changes(cx.follow_up()));
        };
        self.publish(cx, &mut workspace, &work, reply.as_deref())
            .await
    }

    /// Replays the agent's kept output into the log from where the stored log stops, follows
    /// it until the agent has ended, and answers its exit status and what it said of its run;
    /// `Err` says why it cannot be followed.
    #[instrument(skip_all, fields(task_id = %cx.task.id))]
    async fn follow_agent(
        &self,
        cx: &mut TurnContext,
        sandbox: &Sandbox,
        launch: &Launch,
    ) -> Result<(ExecExit, AgentEnd), String> {
        let stored = self
            .inner
            .store
            .agent_events_stored(&cx.task.id, cx.number)
            .await
            .map_err(|_| "the database failed".to_owned())?;
        let dir = turn_dir(cx.number);
        let user = launch.plan.user.clone();
        let spec =
            ExecSpec::new(["sh", "-c", FOLLOW, "drydock-follow", dir.as_str()]).user(user.clone());
        let output = sandbox
            .exec(&spec)
            .await
            .map_err(|err| format!("its sandbox cannot be reached ({err})"))?;
        let Some(sink) = cx.sink.as_mut() else {
            return Err("internal: no log".to_owned());
        };
        let log = sink.agent_exec_log(
            Some(OutputParser::new(launch.plan.parser)),
            cx.number,
            stored,
        );
        let (followed, said) = read_logged(cx, output, log)
            .await
            .map_err(|outcome| outcome.reason)?;
        match followed.code() {
            Some(0) => {}
            Some(90) => return Err("the agent's output was not kept in its sandbox".to_owned()),
            Some(91) => return Err("its agent ended without leaving its exit status".to_owned()),
            _ => return Err(format!("following its agent failed ({followed})")),
        }
        let status = format!("{dir}/status");
        let (read, out, _) = run_captured(sandbox, &ExecSpec::new(["cat", &status]).user(user))
            .await
            .map_err(|outcome| outcome.reason)?;
        let code = String::from_utf8_lossy(&out)
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|code| read.success() && (0..=255).contains(code))
            .ok_or_else(|| "its agent's exit status could not be read".to_owned())?;
        Ok((ExecExit::Code(code), said))
    }

    /// The reason of an adopted turn that could not be followed.
    pub(super) fn lost_reason(&self, lost: &str, why: &str) -> String {
        let me = &self.inner.settings.runner_id;
        let lease = human_duration(self.inner.settings.lease);
        format!(
            "replica {lost} was lost while running this turn (no heartbeat for {lease}); \
             replica {me} adopted the task, but {why}, so the turn ended and its sandbox was \
             removed"
        )
    }
}
