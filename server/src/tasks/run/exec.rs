//! Running commands in a turn's sandbox: streamed into the task's log (dependency installs, the
//! agent), or captured whole (short git commands).

use drydock_agents::OutputParser;
use drydock_sandbox::{ExecExit, ExecOutput, ExecSpec, OutputStream, Sandbox};
use futures::StreamExt;

use super::TaskRunner;
use super::outcome::{Outcome, StepResult, sandbox_failed};
use super::turn::TurnContext;
use crate::tasks::logs::{AgentEnd, ExecLog, LogSink};

impl TaskRunner {
    /// Runs an exec with its output streamed through the task's log (parsed into agent events
    /// when `parser` is given); answers how it exited and what the agent said of its run.
    pub(super) async fn exec_logged(
        &self,
        cx: &mut TurnContext,
        sandbox: &Sandbox,
        spec: ExecSpec,
        parser: Option<OutputParser>,
    ) -> StepResult<(ExecExit, AgentEnd)> {
        let output = sandbox
            .exec(&spec)
            .await
            .map_err(|err| sandbox_failed(&err))?;
        let Some(sink) = cx.sink.as_mut() else {
            return Err(Outcome::failed("internal: no log"));
        };
        let log = sink.exec_log(parser);
        read_logged(cx, output, log).await
    }
}

/// Reads an exec's output through the task's log into `log`'s events, to its end; answers how
/// the exec exited and what the agent said of its run.
pub(super) async fn read_logged(
    cx: &mut TurnContext,
    mut output: ExecOutput,
    mut log: ExecLog,
) -> StepResult<(ExecExit, AgentEnd)> {
    let Some(sink) = cx.sink.as_mut() else {
        return Err(Outcome::failed("internal: no log"));
    };
    let stored = |result: crate::store::StoreResult<()>| {
        result.map_err(|_| Outcome::failed("could not store the log"))
    };
    // Each read goes to the log's writer at once: stored and published straight away when
    // the writer is idle, taken with the next group when an append is still running.
    while let Some(chunk) = output.next().await {
        let chunk = chunk.map_err(|err| sandbox_failed(&err))?;
        sink.output(&mut log, chunk.stream, &chunk.data);
        stored(sink.submit().await)?;
    }
    let said = sink.finish_exec(log);
    stored(sink.flush().await)?;
    let exit = output.exit().await.map_err(|err| sandbox_failed(&err))?;
    Ok((exit, said))
}

/// The last meaningful line the latest logged exec printed (stderr first), redacted: what a
/// failure reason quotes.
pub(super) fn last_output(cx: &TurnContext) -> Option<String> {
    cx.sink
        .as_ref()
        .and_then(LogSink::last_output_line)
        .map(str::to_owned)
}

/// Reads an exec to its end: how it exited, its stdout and its stderr (for short commands).
pub(super) async fn capture(mut out: ExecOutput) -> StepResult<(ExecExit, Vec<u8>, Vec<u8>)> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    while let Some(chunk) = out.next().await {
        let chunk = chunk.map_err(|err| sandbox_failed(&err))?;
        match chunk.stream {
            OutputStream::Stdout => stdout.extend_from_slice(&chunk.data),
            _ => stderr.extend_from_slice(&chunk.data),
        }
    }
    let exit = out.exit().await.map_err(|err| sandbox_failed(&err))?;
    Ok((exit, stdout, stderr))
}

/// Runs a short command in the sandbox and captures it whole.
pub(super) async fn run_captured(
    sandbox: &Sandbox,
    spec: &ExecSpec,
) -> StepResult<(ExecExit, Vec<u8>, Vec<u8>)> {
    let out = sandbox
        .exec(spec)
        .await
        .map_err(|err| sandbox_failed(&err))?;
    capture(out).await
}
