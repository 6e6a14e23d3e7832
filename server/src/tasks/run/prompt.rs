//! The words drydock writes for a task: its title, a follow-up's prompt with the earlier turns,
//! the commit message and the pull request body.

use crate::store::{Task, TaskMessage};

/// The first line of the prompt, at most 72 characters.
pub fn title_of(prompt: &str) -> String {
    let first = prompt
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("drydock task")
        .trim();
    if first.chars().count() <= 72 {
        first.to_owned()
    } else {
        let cut: String = first.chars().take(71).collect();
        format!("{}…", cut.trim_end())
    }
}

/// Most of the earlier conversation put into a follow-up's prompt, in bytes.
const CONTEXT_BUDGET: usize = 24 * 1024;
/// Most of one earlier message put into it.
const CONTEXT_MESSAGE_MAX: usize = 6 * 1024;
/// The line before the new request in a follow-up's prompt. Operator-defined agents may look for
/// it to tell the new request from the context.
pub(super) const NEW_REQUEST_MARKER: &str = "## New request";

/// The prompt of a follow-up that starts afresh: what the task is, the earlier turns (the
/// original request and then the most recent messages, within a budget, saying when something
/// was left out or cut), then the new request after [`NEW_REQUEST_MARKER`].
pub(super) fn follow_up_prompt(
    task: &Task,
    earlier: &[TaskMessage],
    turn: i64,
    message: &str,
) -> String {
    let earlier: Vec<&TaskMessage> = earlier
        .iter()
        .filter(|m| m.turn.is_some_and(|t| t < turn))
        .collect();
    let render = |m: &TaskMessage| {
        let who = if m.role == "user" {
            "Request"
        } else {
            "Your reply"
        };
        let mut text = m.content.trim().to_owned();
        let mut cut = false;
        if text.len() > CONTEXT_MESSAGE_MAX {
            let mut at = CONTEXT_MESSAGE_MAX;
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.truncate(at);
            cut = true;
        }
        format!(
            "### {who} (turn {})\n{text}{}\n",
            m.turn.unwrap_or_default(),
            if cut { "\n[… cut]" } else { "" }
        )
    };
    // The first request says what the task is; then as many of the latest messages as fit.
    let mut parts: Vec<String> = Vec::new();
    let mut used = 0;
    let first = earlier.first().map(|m| render(m));
    if let Some(first) = &first {
        used += first.len();
    }
    let mut left_out = 0;
    for m in earlier.iter().skip(1).rev() {
        let part = render(m);
        if used + part.len() > CONTEXT_BUDGET {
            left_out += 1;
            continue;
        }
        used += part.len();
        parts.push(part);
    }
    parts.reverse();
    let branch = task.branch.as_deref().unwrap_or("the task's branch");
    let mut prompt = format!(
        "This continues earlier work on {} (branch {branch}). The work of the earlier turns is \
         committed on this branch, which is checked out. The conversation so far:\n\n",
        task.repo
    );
    if let Some(first) = first {
        prompt.push_str(&first);
        prompt.push('\n');
    }
    if left_out > 0 {
        prompt.push_str(&format!(
            "[{left_out} earlier message(s) left out to keep this prompt short]\n\n"
        ));
    }
    for part in parts {
        prompt.push_str(&part);
        prompt.push('\n');
    }
    prompt.push_str(NEW_REQUEST_MARKER);
    prompt.push('\n');
    prompt.push_str(message);
    prompt
}

/// The message of the commit drydock makes for a turn: the request's title, the request wrapped
/// at 72 columns, and a line naming the agent, the model and the task.
pub(super) fn commit_message(
    task: &Task,
    request: &str,
    agent_name: &str,
    public_url: &str,
) -> String {
    format!(
        "{}\n\n{}\n\nMade by {agent_name}{} with drydock: {public_url}/tasks/{}",
        title_of(request),
        wrap(request, 72),
        task.model
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default(),
        task.id
    )
}

/// The body of the task's pull request: a link to the task, the request quoted, and the agent's
/// final reply (at most 4,000 characters); every part passes through `redact` before it is cut.
pub(super) fn pr_body(
    task: &Task,
    public_url: &str,
    reply: Option<&str>,
    redact: impl Fn(&str) -> String,
) -> String {
    let mut body = format!(
        "Task: {public_url}/tasks/{}\n\n> {}\n",
        task.id,
        redact(&task.prompt).replace('\n', "\n> ")
    );
    if let Some(message) = reply {
        // Redacted before it is cut, so no cut leaves part of a token unrecognised.
        let summary: String = redact(message).chars().take(4000).collect();
        body.push_str(&format!("\n### Summary from the agent\n\n{summary}\n"));
    }
    body
}

fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                out.push_str(&line);
                out.push('\n');
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.trim_end().to_owned()
}

/// The user's GitHub noreply address (`ID+login@users.noreply.HOST`), the commit author.
pub(super) fn noreply_email(github_url: &str, github_id: i64, login: &str) -> String {
    let host = github_url
        .split("://")
        .nth(1)
        .unwrap_or("github.com")
        .split(['/', ':'])
        .next()
        .unwrap_or("github.com");
    format!("{github_id}+{login}@users.noreply.{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_the_first_line_cut_at_72() {
        assert_eq!(title_of("\n  Fix the bug \nmore"), "Fix the bug");
        let long = "x".repeat(100);
        assert_eq!(title_of(&long).chars().count(), 72);
    }

    fn message(role: &str, turn: i64, content: String) -> TaskMessage {
        TaskMessage {
            id: format!("{role}{turn}"),
            task_id: "t1".into(),
            role: role.into(),
            content,
            turn: Some(turn),
            created_at: turn,
        }
    }

    #[test]
    fn follow_up_prompts_keep_the_first_request_and_the_latest_turns_within_bounds() {
        let task = Task {
            id: "t1".into(),
            user_id: "u".into(),
            title: "t".into(),
            prompt: "fix the parser".into(),
            repo: "o/r".into(),
            base_branch: Some("main".into()),
            branch: Some("drydock/fix-t1".into()),
            agent: "a".into(),
            model: None,
            status: "succeeded".into(),
            status_reason: None,
            install_deps: false,
            max_duration_s: 60,
            keep_alive: false,
            create_pr: true,
            container_id: None,
            commit_sha: None,
            pr_url: None,
            pr_number: None,
            event_seq: 0,
            runner_id: None,
            sandbox_instance: None,
            turns: 9,
            base_sha: None,
            sandbox_expires_at: None,
            preview_port: None,
            origin: "web".into(),
            source_url: None,
            network_policy: None,
            blocked_requests: 0,
            key_in_sandbox: false,
            input_tokens: 0,
            output_tokens: 0,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            cost_micro_usd: 0,
            created_at: 0,
            started_at: None,
            finished_at: None,
            updated_at: 0,
        };
        let mut earlier = vec![message("user", 1, "fix the parser".into())];
        for turn in 1..10 {
            if turn > 1 {
                earlier.push(message(
                    "user",
                    turn,
                    format!("request {turn} {}", "x".repeat(5000)),
                ));
            }
            earlier.push(message(
                "agent",
                turn,
                format!("reply {turn} {}", "y".repeat(9000)),
            ));
        }
        // The message of the turn being run is not context.
        earlier.push(message("user", 10, "now this".into()));
        let prompt = follow_up_prompt(&task, &earlier, 10, "now this");
        assert!(prompt.contains("o/r (branch drydock/fix-t1)"));
        assert!(prompt.contains("### Request (turn 1)\nfix the parser\n"));
        assert!(prompt.contains("### Your reply (turn 9)\nreply 9 "));
        assert!(prompt.contains("[… cut]"), "long replies are cut");
        assert!(prompt.contains("earlier message(s) left out to keep this prompt short"));
        assert!(
            !prompt.contains("request 2 "),
            "the oldest follow-ups go first"
        );
        assert!(prompt.ends_with("## New request\nnow this"));
        assert_eq!(prompt.matches("now this").count(), 1);
        assert!(prompt.len() < CONTEXT_BUDGET + 1024, "{}", prompt.len());
    }

    #[test]
    fn noreply_addresses_follow_the_github_host() {
        assert_eq!(
            noreply_email("https://github.com", 7, "octo"),
            "7+octo@users.noreply.github.com"
        );
        assert_eq!(
            noreply_email("https://ghe.corp.example/", 7, "octo"),
            "7+octo@users.noreply.ghe.corp.example"
        );
    }
}
