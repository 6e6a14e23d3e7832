//! The `drydock` command-line client: `login`, `task run|list|show|logs|diff|stop|message`.
//!
//! It talks only to a drydock server's public API (the OpenAPI document at `/api/openapi.json`
//! is its contract) with a personal API token, stored by `drydock login` in the user's config
//! directory (mode 0600). `task run` and `task logs -f` follow the live log over SSE and
//! reconnect with `Last-Event-ID`, so a dropped connection loses no line.

mod api;
mod follow;
mod store;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use self::api::{ApiClient, ClientError};

/// The client's User-Agent starts with this (the server records such tasks as `cli`).
pub const USER_AGENT_PREFIX: &str = "drydock-cli/";

/// Options every client subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct ClientOptions {
    /// drydock server URL (default: the one saved by `drydock login`).
    #[arg(long, env = "DRYDOCK_URL")]
    pub url: Option<String>,
    /// Personal API token (default: the one saved by `drydock login`); prefer the environment.
    #[arg(long, env = "DRYDOCK_TOKEN", hide_env_values = true)]
    pub token: Option<crate::config::SecretString>,
    /// Directory of the client's settings (default: the user's config directory + /drydock).
    #[arg(long, env = "DRYDOCK_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// Print machine-readable JSON (one object per line while following a log).
    #[arg(long, global = true)]
    pub json: bool,
}

/// `drydock login --url URL`: `--url` says where drydock is (e.g. https://drydock.example);
/// `--token` or DRYDOCK_TOKEN skips the prompt.
#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    /// Client options.
    #[command(flatten)]
    pub options: ClientOptions,
}

/// `drydock task …`.
#[derive(Debug, Clone, Subcommand)]
pub enum TaskCommand {
    /// Start a task and follow its log until it ends; exits 0 when it succeeded.
    Run(RunArgs),
    /// List your tasks, newest first.
    List {
        /// Only tasks with this status.
        #[arg(long)]
        status: Option<String>,
        /// Client options.
        #[command(flatten)]
        options: ClientOptions,
    },
    /// Show one task.
    Show {
        /// Task id.
        id: String,
        /// Client options.
        #[command(flatten)]
        options: ClientOptions,
    },
    /// Print a task's log; with -f follow it until the task ends.
    Logs {
        /// Task id.
        id: String,
        /// Follow the live log.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Client options.
        #[command(flatten)]
        options: ClientOptions,
    },
    /// Print the changes a task made (unified diff).
    Diff {
        /// Task id.
        id: String,
        /// Client options.
        #[command(flatten)]
        options: ClientOptions,
    },
    /// Stop a queued or running task.
    Stop {
        /// Task id.
        id: String,
        /// Client options.
        #[command(flatten)]
        options: ClientOptions,
    },
    /// Send a follow-up: it runs as the task's next turn on the same branch.
    Message {
        /// Task id.
        id: String,
        /// What to do next, or `-` to read it from standard input.
        prompt: String,
        /// Client options.
        #[command(flatten)]
        options: ClientOptions,
    },
}

/// `drydock task run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Repository, owner/name.
    #[arg(long)]
    pub repo: String,
    /// Agent id (see the server's agents).
    #[arg(long, default_value = "claude")]
    pub agent: String,
    /// Model id (the agent's default when absent).
    #[arg(long)]
    pub model: Option<String>,
    /// Branch to start from (the repository's default when absent).
    #[arg(long)]
    pub branch: Option<String>,
    /// Open a pull request when done.
    #[arg(long)]
    pub pr: bool,
    /// What the agent should do, or `-` to read it from standard input.
    pub prompt: String,
    /// Client options.
    #[command(flatten)]
    pub options: ClientOptions,
}

/// The client subcommands, for a binary that only has those.
#[derive(Debug, Clone, Subcommand)]
pub enum ClientCommand {
    /// Save a server URL and a personal API token for the other commands.
    Login(LoginArgs),
    /// Run and follow tasks.
    #[command(subcommand)]
    Task(TaskCommand),
}

impl ClientCommand {
    /// The client subcommand among the binary's subcommands, if it is one.
    pub fn from_command(command: crate::config::Command) -> Option<Self> {
        match command {
            crate::config::Command::Login(args) => Some(ClientCommand::Login(args)),
            crate::config::Command::Task(task) => Some(ClientCommand::Task(task)),
            _ => None,
        }
    }
}

/// Runs a client subcommand; the exit code says how it went (0 success, 1 the task did not
/// succeed, 2 the client could not do its job, 3 the server refused the request).
pub async fn run(command: ClientCommand) -> ExitCode {
    let outcome = match command {
        ClientCommand::Login(args) => login(args).await,
        ClientCommand::Task(task) => run_task_command(task).await,
    };
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("drydock: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn read_prompt(prompt: &str) -> Result<String, ClientError> {
    if prompt != "-" {
        return Ok(prompt.to_owned());
    }
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).map_err(|err| {
        ClientError::Usage(format!(
            "could not read the prompt from standard input: {err}"
        ))
    })?;
    Ok(text)
}

async fn login(args: LoginArgs) -> Result<ExitCode, ClientError> {
    let Some(url) = args.options.url.as_deref() else {
        return Err(ClientError::Usage(
            "say where drydock is: drydock login --url URL".into(),
        ));
    };
    let url = url.trim().trim_end_matches('/').to_owned();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ClientError::Usage(
            "the URL must start with https:// (or http://)".into(),
        ));
    }
    let token = match args.options.token {
        Some(token) => token.expose().to_owned(),
        // On a terminal the token is read without echo; piped in, it is read as a line.
        None if std::io::stdin().is_terminal() => rpassword::prompt_password(format!(
            "Create a token at {url}/settings/tokens and paste it here (it is not shown): "
        ))
        .map_err(|err| ClientError::Usage(format!("could not read the token: {err}")))?
        .trim()
        .to_owned(),
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|err| ClientError::Usage(format!("could not read the token: {err}")))?;
            line.trim().to_owned()
        }
    };
    if !token.starts_with(crate::tokens::TOKEN_PREFIX) {
        return Err(ClientError::Usage(
            "that is not a drydock token (they start with ddt_)".into(),
        ));
    }
    let client = ApiClient::new(&url, &token)?;
    let me = client.me().await?;
    let path = store::save(
        args.options.config_dir.as_deref(),
        &store::Saved { url, token },
    )?;
    if args.options.json {
        println!("{}", json!({ "login": me.login, "config": path }));
    } else {
        eprintln!("Logged in as {} (saved to {}).", me.login, path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn client_for(options: &ClientOptions) -> Result<ApiClient, ClientError> {
    let saved = store::load(options.config_dir.as_deref())?;
    let url = options
        .url
        .clone()
        .or_else(|| saved.as_ref().map(|s| s.url.clone()))
        .ok_or_else(|| {
            ClientError::Usage("no server: run `drydock login --url URL` first".into())
        })?;
    let token = options
        .token
        .as_ref()
        .map(|t| t.expose().to_owned())
        .or_else(|| saved.map(|s| s.token))
        .ok_or_else(|| {
            ClientError::Usage("no token: run `drydock login --url URL` first".into())
        })?;
    ApiClient::new(url.trim_end_matches('/'), &token)
}

async fn run_task_command(command: TaskCommand) -> Result<ExitCode, ClientError> {
    match command {
        TaskCommand::Run(args) => {
            let client = client_for(&args.options)?;
            let prompt = read_prompt(&args.prompt)?;
            let task = client
                .create_task(&json!({
                    "repo": args.repo,
                    "agent": args.agent,
                    "model": args.model,
                    "base_branch": args.branch,
                    "create_pr": args.pr,
                    "prompt": prompt,
                }))
                .await?;
            let id = task["id"].as_str().unwrap_or_default().to_owned();
            if args.options.json {
                println!("{}", json!({ "type": "task", "task": task }));
            } else {
                eprintln!("Task {id}: {}/tasks/{id}", client.base());
            }
            follow::follow(&client, &id, 0, args.options.json).await?;
            finish(&client, &id, args.options.json).await
        }
        TaskCommand::List { status, options } => {
            let client = client_for(&options)?;
            let list = client.list_tasks(status.as_deref()).await?;
            if options.json {
                println!("{list}");
            } else {
                let tasks = list["tasks"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                match task_table(tasks) {
                    Some(table) => print!("{table}"),
                    None => eprintln!(
                        "No tasks{}.",
                        status.map(|s| format!(" {s}")).unwrap_or_default()
                    ),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Show { id, options } => {
            let client = client_for(&options)?;
            let task = client.task(&id).await?;
            if options.json {
                println!("{task}");
            } else {
                for key in [
                    "id",
                    "title",
                    "status",
                    "status_reason",
                    "repo",
                    "branch",
                    "agent",
                    "model",
                    "origin",
                    "source_url",
                    "pr_url",
                    "turns",
                ] {
                    match &task[key] {
                        serde_json::Value::Null => {}
                        serde_json::Value::String(s) => println!("{key}: {s}"),
                        other => println!("{key}: {other}"),
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Logs {
            id,
            follow: live,
            options,
        } => {
            let client = client_for(&options)?;
            if live {
                follow::follow(&client, &id, 0, options.json).await?;
                return finish(&client, &id, options.json).await;
            }
            let mut after = 0;
            loop {
                let page = client.events_page(&id, after).await?;
                let events = page["events"].as_array().cloned().unwrap_or_default();
                for event in &events {
                    follow::print_event(event, options.json, None);
                }
                let next = page["next_after"].as_i64().unwrap_or(after);
                if events.is_empty() || next == after {
                    break;
                }
                after = next;
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Diff { id, options } => {
            let client = client_for(&options)?;
            let diff = client.diff(&id).await?;
            if options.json {
                println!("{diff}");
            } else {
                print!("{}", diff["patch"].as_str().unwrap_or_default());
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Stop { id, options } => {
            let client = client_for(&options)?;
            let task = client.stop(&id).await?;
            if options.json {
                println!("{task}");
            } else {
                eprintln!(
                    "Task {id} is {}.",
                    task["status"].as_str().unwrap_or("stopping")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Message {
            id,
            prompt,
            options,
        } => {
            let client = client_for(&options)?;
            let prompt = read_prompt(&prompt)?;
            let message = client.message(&id, &prompt).await?;
            if options.json {
                println!("{message}");
            } else {
                eprintln!(
                    "Sent; it runs as the task's next turn. Follow it with `drydock task logs -f {id}`."
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads the task's final state, prints it, and answers the exit code it deserves.
async fn finish(client: &ApiClient, id: &str, json_out: bool) -> Result<ExitCode, ClientError> {
    let task = client.task(id).await?;
    let status = task["status"].as_str().unwrap_or_default().to_owned();
    if json_out {
        println!("{}", json!({ "type": "end", "task": task }));
    } else {
        let reason = task["status_reason"].as_str().unwrap_or_default();
        eprintln!("Task {id} {}: {reason}", status.replace('_', " "));
        if let Some(pr) = task["pr_url"].as_str() {
            eprintln!("Pull request: {pr}");
        }
    }
    Ok(if status == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The task list as a table with a header row and columns as wide as their widest cell; full ids,
/// so each can be pasted into `drydock task show`. `None` when there are no tasks.
fn task_table(tasks: &[serde_json::Value]) -> Option<String> {
    const COLUMNS: [(&str, &str); 5] = [
        ("ID", "id"),
        ("STATUS", "status"),
        ("ORIGIN", "origin"),
        ("REPO", "repo"),
        ("TITLE", "title"),
    ];
    if tasks.is_empty() {
        return None;
    }
    // Statuses read as words ("in progress"); names and titles stay as they are.
    let cell = |task: &serde_json::Value, key: &str| -> String {
        let text = task[key].as_str().unwrap_or_default();
        if key == "status" {
            text.replace('_', " ")
        } else {
            text.to_owned()
        }
    };
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|task| COLUMNS.iter().map(|(_, key)| cell(task, key)).collect())
        .collect();
    let widths: Vec<usize> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (head, _))| {
            rows.iter()
                .map(|row| row[i].chars().count())
                .chain([head.len()])
                .max()
                .unwrap_or_default()
        })
        .collect();
    let line = |cells: Vec<&str>| -> String {
        let last = cells.len() - 1;
        let mut out = String::new();
        for (i, text) in cells.into_iter().enumerate() {
            if i == last {
                out.push_str(text);
            } else {
                out.push_str(&format!("{text:<width$}  ", width = widths[i]));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut table = line(COLUMNS.iter().map(|(head, _)| *head).collect());
    for row in &rows {
        table.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    Some(table)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_binarys_command_line_is_consistent() {
        crate::config::Cli::command().debug_assert();
    }
}
