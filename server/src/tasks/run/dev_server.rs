//! Dev-server previews: after a turn whose sandbox is kept, the project's `npm run dev` is
//! started in it and the preview is recorded once it listens (the HTTP relay is `tasks::preview`).

use std::time::Duration;

use drydock_sandbox::{ExecSpec, Sandbox};

use super::TaskRunner;
use crate::store::Task;

/// How long a dev server may take to listen before the preview is given up.
const PREVIEW_START_TIMEOUT: Duration = Duration::from_secs(90);

impl TaskRunner {
    /// Starts the project's dev script (`npm run dev`) in a kept sandbox, unless it already runs,
    /// and records the preview once it listens on `port`.
    pub(super) async fn start_preview(&self, task: &Task, sandbox: &Sandbox, port: u16) {
        let store = &self.inner.store;
        let note = |text: String| self.note(&task.id, "info", text);
        if sandbox.connect_port(port).await.is_err() {
            // The dev server gets its own session so it outlives this exec.
            let script = r#"cd /workspace || exit 1
[ -f package.json ] || exit 3
node -e 'const s = require("./package.json").scripts || {}; process.exit(typeof s.dev === "string" ? 0 : 3)' || exit 3
setsid npm run dev </dev/null >/tmp/drydock-preview.log 2>&1 &"#;
            let base = format!("/tasks/{}/preview/", task.id);
            let spec = ExecSpec::shell(script)
                .workdir("/workspace")
                .env("PORT", port.to_string())
                .env("DRYDOCK_PREVIEW_BASE", base);
            let exit = match sandbox.exec(&spec).await {
                Ok(out) => out.exit().await,
                Err(err) => Err(err),
            };
            match exit {
                Ok(exit) if exit.success() => {}
                Ok(exit) if exit.code() == Some(3) => return,
                Ok(exit) => {
                    return note(format!("Preview: the dev script could not start ({exit})")).await;
                }
                Err(err) => {
                    return note(format!("Preview: the dev script could not start ({err})")).await;
                }
            }
            let started = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if sandbox.connect_port(port).await.is_ok() {
                    break;
                }
                if started.elapsed() > PREVIEW_START_TIMEOUT
                    || !sandbox.is_running().await.unwrap_or(false)
                {
                    return note(format!(
                        "Preview: the dev server did not listen on port {port} within {} s (its output is in /tmp/drydock-preview.log in the sandbox)",
                        PREVIEW_START_TIMEOUT.as_secs()
                    ))
                    .await;
                }
            }
        }
        if let Err(err) = store
            .set_task_preview(&task.id, Some(i64::from(port)))
            .await
        {
            tracing::error!(error = %err, "could not record the preview");
            return;
        }
        note(format!(
            "Preview ready: {}/tasks/{}/preview/",
            self.inner.settings.public_url, task.id
        ))
        .await;
        if let Ok(Some(task)) = store.get_task_for_runner(&task.id).await {
            self.announce(
                &task.user_id,
                &task.id,
                &task.status,
                task.status_reason.clone(),
            );
        }
    }
}
