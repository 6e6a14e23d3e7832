//! Following a task's live log over SSE: lines are printed as they arrive; a dropped connection
//! is reopened with `Last-Event-ID` set to the last line printed, so nothing is lost or
//! printed twice; a spinner (only on a terminal) shows the task's current stage meanwhile.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use super::api::{ApiClient, ClientError};

/// Attempts to reconnect in a row before giving up.
const MAX_RETRIES: u32 = 30;

/// Prints one log event: its text (info lines marked), or a JSON line.
pub fn print_event(event: &Value, json_out: bool, spinner: Option<&ProgressBar>) {
    let line = if json_out {
        json!({ "type": "event", "seq": event["seq"], "kind": event["kind"], "text": event["text"] }).to_string()
    } else {
        let text = event["text"].as_str().unwrap_or_default();
        match event["kind"].as_str().unwrap_or_default() {
            "info" | "success" | "command" => format!("· {text}"),
            "error" => format!("! {text}"),
            _ => text.to_owned(),
        }
    };
    match spinner {
        Some(bar) => bar.suspend(|| println!("{line}")),
        None => println!("{line}"),
    }
    if let (Some(bar), Some("info" | "command")) = (spinner, event["kind"].as_str()) {
        let text: String = event["text"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(70)
            .collect();
        bar.set_message(text);
    }
}

/// Follows the log of task `id` after seq `after` until its `end` event.
pub async fn follow(
    client: &ApiClient,
    id: &str,
    after: i64,
    json_out: bool,
) -> Result<(), ClientError> {
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.set_message("waiting for the task to start");
    spinner.enable_steady_tick(Duration::from_millis(120));
    let bar = (!json_out).then_some(&spinner);
    let mut cursor = after;
    let mut retries = 0;
    let result = loop {
        match stream_once(client, id, &mut cursor, json_out, bar).await {
            Ok(true) => break Ok(()),
            Ok(false) => {}
            // A refusal (gone, not yours, signed out) is final; a proxy's 5xx is not.
            Err(err @ ClientError::Api { status: ..500, .. }) => break Err(err),
            Err(_) if retries < MAX_RETRIES => {}
            Err(err) => break Err(err),
        }
        retries += 1;
        if retries > MAX_RETRIES {
            break Err(ClientError::Connection("the live log kept dropping".into()));
        }
        spinner.set_message(format!("reconnecting (after line {cursor})"));
        tokio::time::sleep(Duration::from_millis(250 * u64::from(retries.min(8)))).await;
    };
    spinner.finish_and_clear();
    result
}

/// One connection: answers `Ok(true)` at the `end` event, `Ok(false)` when the stream broke.
async fn stream_once(
    client: &ApiClient,
    id: &str,
    cursor: &mut i64,
    json_out: bool,
    spinner: Option<&ProgressBar>,
) -> Result<bool, ClientError> {
    let resp = client.open_events(id, *cursor).await?;
    let mut events = resp.bytes_stream().eventsource();
    while let Some(event) = events.next().await {
        let Ok(event) = event else {
            return Ok(false);
        };
        if event.event == "end" {
            return Ok(true);
        }
        let Ok(value) = serde_json::from_str::<Value>(&event.data) else {
            continue;
        };
        let seq = value["seq"].as_i64().unwrap_or_default();
        if seq <= *cursor {
            continue;
        }
        print_event(&value, json_out, spinner);
        *cursor = seq;
    }
    Ok(false)
}
