#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

//! Network policies and the model gateway (issue 17), end to end with real Docker: sandboxes
//! of tasks with a policy reach only drydock's proxy and gateway; everything else fails to
//! connect. Every address used here is on this machine: listeners the test opens on loopback
//! and on all addresses, reached through the proxy (which the test lets reach private
//! addresses, as the connector tests do) or not at all; the sandbox's own routing table shows
//! there is no route anywhere.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use axum::response::Response;
use axum::routing::post;
use drydock_tests::TestDb;
use drydock_tests::hunt::{self, contains};
use drydock_tests::tasks::{SCRIPTED_AGENT, TaskEnv, containers_of};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

/// A plain HTTP listener of the test: answers every request with a fixed text and records the
/// request line of each.
struct Listener {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Listener {
    async fn start(bind: &str) -> Self {
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&head)
                        .lines()
                        .next()
                        .unwrap_or("(nothing)")
                        .to_owned();
                    record.lock().unwrap().push(line);
                    let body = "hello from the test's listener";
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tcp.write_all(resp.as_bytes()).await;
                });
            }
        });
        Self { addr, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// The Docker host's own address on its default bridge (an address of this machine).
fn host_bridge_address() -> String {
    let out = std::process::Command::new("docker")
        .args([
            "network",
            "inspect",
            "bridge",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The lines of a task's log, joined.
async fn log_text(env: &TaskEnv, id: &str) -> String {
    env.log(id).await.join("\n")
}

/// The routing table check every policy test runs: only the header line, no route at all
/// (`/proc/net/route` lists IPv4 routes of every interface but loopback's own).
const ROUTES: &str = r#"
echo "--- routes"; tail -n +2 /proc/net/route | sed 's/^/route: /'; echo "routes end"
echo "--- interfaces"; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sed 's/^/iface: /'
"#;

fn assert_no_routes(log: &str) {
    assert!(log.contains("agent: routes end"), "{log}");
    assert!(
        !log.contains("agent: route: "),
        "the sandbox has a route:\n{log}"
    );
    let ifaces: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("agent: iface: "))
        .collect();
    assert_eq!(ifaces, vec!["lo"], "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_reaches_allowed_hosts_through_the_proxy_and_nothing_else() {
    // 127.0.0.2: loopback, but not in the sandbox's NO_PROXY (127.0.0.1, localhost).
    let allowed = Listener::start("127.0.0.2:0").await;
    let everywhere = Listener::start("0.0.0.0:0").await;
    let host = host_bridge_address();
    let env = TaskEnv::start(
        TestDb::sqlite().await,
        &[
            "--network-policy",
            "allowlist",
            "--egress-allow-private",
            "true",
        ],
    )
    .await;

    // Another user's sandbox, listening on all its addresses while the first one runs.
    let other = env
        .submit(
            r#"python3 - <<'EOF'
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8000)); s.listen(5); s.settimeout(40)
print("other sandbox listening", flush=True)
try:
    c, a = s.accept(); print("other sandbox was reached from", a)
except socket.timeout:
    print("other sandbox: nobody connected")
EOF"#,
            json!({ "create_pr": false, "network": { "mode": "allowlist", "presets": [] } }),
        )
        .await;
    while !log_text(&env, &other)
        .await
        .contains("other sandbox listening")
    {
        let t = env.task(&other).await;
        assert!(
            matches!(t["status"].as_str(), Some("queued" | "running")),
            "{t}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let port = allowed.addr.port();
    let everywhere_port = everywhere.addr.port();
    let script = format!(
        r#"
echo "proxy: $HTTPS_PROXY"
echo "--- allowed"; curl -sS --max-time 20 http://127.0.0.2:{port}/hello; echo; echo "allowed exit $?"
echo "--- not listed"; curl -sS --max-time 20 -X POST -d x http://not-listed.invalid/upload; echo; echo "not listed exit $?"
echo "--- not listed https"; curl -sS --max-time 20 https://not-listed.invalid/; echo "https exit $?"
echo "--- host listener via proxy"; curl -sS --max-time 20 http://{host}:{everywhere_port}/; echo; echo "host via proxy exit $?"
echo "--- no proxy"; curl -sS --noproxy '*' --max-time 10 http://127.0.0.2:{port}/hello; echo "noproxy exit $?"
echo "--- host listener direct"; curl -sS --noproxy '*' --max-time 10 http://{host}:{everywhere_port}/; echo "host direct exit $?"
echo "--- other sandbox"; curl -sS --noproxy '*' --max-time 10 http://127.0.0.1:8000/; echo "other exit $?"
{ROUTES}
"#
    );
    let id = env
        .submit(
            &script,
            json!({ "create_pr": false, "network": { "mode": "allowlist", "presets": [], "allow": ["127.0.0.2"] } }),
        )
        .await;
    let task = env.wait_done(&id).await;
    let log = log_text(&env, &id).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{log}");

    // The allowed host answered through the proxy.
    assert!(log.contains("agent: proxy: http://127.0.0.1:3128"), "{log}");
    assert!(
        log.contains("agent: hello from the test's listener"),
        "{log}"
    );
    assert_eq!(allowed.seen(), vec!["GET /hello HTTP/1.1"], "{log}");
    // Not on the list: refused, logged and counted, for plain HTTP and for HTTPS tunnels.
    assert!(
        log.contains(
            "error: blocked: POST http://not-listed.invalid/upload (not on the allowlist)"
        ),
        "{log}"
    );
    assert!(
        log.contains("error: blocked: CONNECT not-listed.invalid:443 (not on the allowlist)"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "error: blocked: GET http://{host}:{everywhere_port}/ (not on the allowlist)"
        )),
        "{log}"
    );
    assert_eq!(task["blocked_requests"], 3, "{task}");
    let blocked = task["blocked"].as_array().unwrap();
    assert!(
        blocked
            .iter()
            .any(|b| b["method"] == "POST" && b["url"] == "http://not-listed.invalid/upload"),
        "{task}"
    );
    // Without the proxy nothing connects: not the allowed host, not the host's listener on all
    // addresses, not another sandbox; there is no route.
    assert!(log.contains("agent: noproxy exit 7"), "{log}");
    assert!(!log.contains("agent: host direct exit 0"), "{log}");
    assert!(!log.contains("agent: other exit 0"), "{log}");
    assert!(everywhere.seen().is_empty(), "{:?}", everywhere.seen());
    assert_no_routes(&log);
    let other_task = env.wait_done(&other).await;
    let other_log = log_text(&env, &other).await;
    assert_eq!(other_task["status"], "succeeded", "{other_log}");
    assert!(
        other_log.contains("agent: other sandbox: nobody connected"),
        "{other_log}"
    );

    // The task page lists the policy and what was blocked.
    let page = env.get_page(&format!("/tasks/{id}")).await;
    assert!(page.contains("allowlist: 127.0.0.2"), "{page}");
    assert!(
        page.contains("POST http://not-listed.invalid/upload"),
        "{page}"
    );
    assert!(containers_of(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_methods_refuse_post_and_allow_get() {
    let allowed = Listener::start("127.0.0.2:0").await;
    let env = TaskEnv::start(
        TestDb::postgres().await,
        &[
            "--network-policy",
            "allowlist",
            "--egress-allow-private",
            "true",
        ],
    )
    .await;
    let port = allowed.addr.port();
    let script = format!(
        r#"
curl -sS --max-time 20 http://127.0.0.2:{port}/read; echo; echo "get exit $?"
curl -sS --max-time 20 -X POST -d secret=1 http://127.0.0.2:{port}/write; echo; echo "post exit $?"
"#
    );
    let id = env
        .submit(
            &script,
            json!({ "create_pr": false,
                    "network": { "presets": [], "allow": ["127.0.0.2"], "read_only": true } }),
        )
        .await;
    let task = env.wait_done(&id).await;
    let log = log_text(&env, &id).await;
    assert_eq!(task["status"], "succeeded", "{log}");
    assert_eq!(allowed.seen(), vec!["GET /read HTTP/1.1"], "{log}");
    assert!(
        log.contains(&format!(
            "error: blocked: POST http://127.0.0.2:{port}/write (read-only methods: only GET, HEAD and OPTIONS)"
        )),
        "{log}"
    );
    assert_eq!(task["network"]["read_only"], true);
    assert_eq!(task["blocked_requests"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_still_cannot_reach_the_host_or_other_sandboxes() {
    let loopback = Listener::start("127.0.0.2:0").await;
    let everywhere = Listener::start("0.0.0.0:0").await;
    let host = host_bridge_address();
    // The operator allows `open`, and private addresses stay refused (the default).
    let env = TaskEnv::start(
        TestDb::sqlite().await,
        &["--network-policy", "open", "--network-policy-max", "open"],
    )
    .await;
    let (lp, ep) = (loopback.addr.port(), everywhere.addr.port());
    let script = format!(
        r#"
curl -sS --max-time 20 http://127.0.0.2:{lp}/; echo; echo "loopback via proxy exit $?"
curl -sS --max-time 20 http://{host}:{ep}/; echo; echo "host via proxy exit $?"
curl -sS --max-time 20 https://{host}:{ep}/; echo "host tunnel exit $?"
curl -sS --noproxy '*' --max-time 10 http://{host}:{ep}/; echo "host direct exit $?"
{ROUTES}
"#
    );
    let id = env.submit(&script, json!({ "create_pr": false })).await;
    let task = env.wait_done(&id).await;
    let log = log_text(&env, &id).await;
    assert_eq!(task["status"], "succeeded", "{log}");
    assert_eq!(task["network"]["mode"], "open", "{task}");
    assert!(
        log.contains(&format!(
            "error: blocked: GET http://127.0.0.2:{lp}/ (127.0.0.2 resolves to a loopback address)"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "error: blocked: GET http://{host}:{ep}/ ({host} resolves to a private address)"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("error: blocked: CONNECT {host}:{ep}")),
        "{log}"
    );
    assert!(!log.contains("agent: host direct exit 0"), "{log}");
    assert!(loopback.seen().is_empty() && everywhere.seen().is_empty());
    assert_no_routes(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_may_only_narrow_the_operators_policy() {
    // The operator's default is gateway; the maximum stays allowlist.
    let env = TaskEnv::start(TestDb::sqlite().await, &["--network-policy", "gateway"]).await;
    let (status, body) = env
        .submit_raw("true", json!({ "network": { "mode": "open" } }))
        .await;
    assert_eq!(status, reqwest::StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most the allowlist network policy"),
        "{body}"
    );
    let (status, body) = env
        .submit_raw(
            "true",
            json!({ "network": { "allow": ["https://x.test/path"] } }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // An entry allows its subdomains: a top-level domain alone would allow a whole registry.
    let (status, body) = env
        .submit_raw("true", json!({ "network": { "allow": ["com"] } }))
        .await;
    assert_eq!(status, reqwest::StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("single label"), "{body}");
    // The default is the operator's: gateway.
    let id = env.submit("true", json!({ "create_pr": false })).await;
    assert_eq!(env.task(&id).await["network"]["mode"], "gateway");
    env.wait_done(&id).await;
}

// ---------------------------------------------------------------------------------------------
// The model gateway, with a scripted agent that calls it like a CLI would.

/// The user's real Anthropic key: only the stand-in accepts it.
const REAL_KEY: &str = "sk-ant-api03-gateway-test-Zq8Xw3Lm5Nv7Bp2Rt4Yc6Hd9Kf1Gs0Ja";

/// A scripted agent with an Anthropic key and a base-URL variable, as Claude Code has.
const GATEWAY_AGENT: &str = r#"
[[agents]]
id = "scripted-gw"
name = "Scripted gateway agent"
argv = ["sh", "-c", "eval \"${1##*## New request}\"", "scripted-agent", "{prompt}", "{resume}"]
resume = ["--resume-session"]
parser = "text"
keys = [{ provider = "anthropic", env = ["ANTHROPIC_API_KEY"], base_url_env = "ANTHROPIC_BASE_URL" }]
models = [{ id = "claude-sonnet-4-5", name = "Sonnet" }]
"#;

/// A streaming Messages stand-in that holds its last event until the test releases it, so a
/// test can see the first token arrive before the last is sent.
#[derive(Default)]
struct StandIn {
    keys: Mutex<Vec<String>>,
    release: Notify,
    hold: bool,
    /// Answer with a chunked JSON body (no `Content-Length`, not SSE) instead of events.
    chunked: bool,
}

async fn messages(State(s): State<Arc<StandIn>>, headers: HeaderMap) -> Response {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    s.keys.lock().unwrap().push(key.clone());
    if key != REAL_KEY {
        return Response::builder()
            .status(AxStatus::UNAUTHORIZED)
            .body(Body::from(
                r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            ))
            .unwrap();
    }
    if s.chunked {
        // A JSON array sent in pieces as they are ready, as a chunked HTTP/1.1 body.
        let s2 = s.clone();
        let pieces = futures::stream::unfold(0u8, move |step| {
            let s = s2.clone();
            async move {
                let piece = match step {
                    0 => "[{\"text\":\"first-chunk\"}\n".to_owned(),
                    1 => {
                        if s.hold {
                            s.release.notified().await;
                        }
                        ",{\"text\":\"last-chunk\"}]\n".to_owned()
                    }
                    _ => return None,
                };
                Some((Ok::<_, std::convert::Infallible>(piece), step + 1))
            }
        });
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(pieces))
            .unwrap();
    }
    let s2 = s.clone();
    let stream = async_stream(s2, key);
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// The stream of a Messages answer; its first event quotes the key the request carried (as a
/// careless provider or proxy might), which must never reach the sandbox.
fn async_stream(
    s: Arc<StandIn>,
    key: String,
) -> impl futures::Stream<Item = Result<String, std::convert::Infallible>> {
    futures::stream::unfold(0u8, move |step| {
        let s = s.clone();
        let key = key.clone();
        async move {
            let event = match step {
                0 => format!(r#"data: {{"type":"message_start","message":{{"id":"msg for {key}","model":"claude-sonnet-4-5","usage":{{"input_tokens":11,"output_tokens":1}}}}}}"#),
                1 => r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"first-token"}}"#.to_owned(),
                2 => {
                    if s.hold {
                        s.release.notified().await;
                    }
                    r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"last-token"}}"#.to_owned()
                }
                3 => r#"data: {"type":"message_delta","usage":{"output_tokens":7}}"#.to_owned(),
                _ => return None,
            };
            Some((Ok(format!("{event}\n\n")), step + 1))
        }
    })
}

async fn start_stand_in(hold: bool) -> (Arc<StandIn>, String) {
    start_stand_in_with(StandIn {
        hold,
        ..StandIn::default()
    })
    .await
}

async fn start_stand_in_with(s: StandIn) -> (Arc<StandIn>, String) {
    let s = Arc::new(s);
    let app = Router::new()
        .route("/v1/messages", post(messages))
        .with_state(s.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (s, url)
}

/// The model call a CLI makes, streamed line by line into the log.
const CALL: &str = r#"curl -sN --max-time 60 "$ANTHROPIC_BASE_URL/v1/messages" -H "x-api-key: $ANTHROPIC_API_KEY" -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' -d '{"model":"claude-sonnet-4-5","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi"}]}' | while IFS= read -r line; do if [ -n "$line" ]; then echo "sse: $line"; fi; done"#;

async fn gateway_env(db: TestDb, stand_in: &str, extra: &[&str]) -> TaskEnv {
    let agents = format!("{SCRIPTED_AGENT}\n{GATEWAY_AGENT}");
    let mut settings = vec![
        "--network-policy",
        "gateway",
        "--anthropic-base-url",
        stand_in,
    ];
    settings.extend_from_slice(extra);
    let env = TaskEnv::start_with_agents(db, &agents, &settings).await;
    let resp = env
        .alice
        .put(env.app.url("/api/keys/anthropic"))
        .json(&json!({ "key": REAL_KEY }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_swaps_the_key_streams_and_meters_and_the_key_never_enters_the_sandbox() {
    let (stand_in, url) = start_stand_in(true).await;
    let env = gateway_env(
        TestDb::sqlite().await,
        &url,
        &["--daily-token-budget", "10"],
    )
    .await;
    let script = format!(
        r#"
echo "base: $ANTHROPIC_BASE_URL"
echo "placeholder: $ANTHROPIC_API_KEY"
printf '%s' "$ANTHROPIC_API_KEY" > /home/agent/token
{CALL} | tee /home/agent/answer
echo "ready for the hunt"
while [ ! -f /tmp/hunt-done ]; do sleep 0.2; done
"#
    );
    let id = env
        .submit(
            &script,
            json!({ "agent": "scripted-gw", "create_pr": false }),
        )
        .await;
    // The first token is in the log while the stand-in still holds the last one: the gateway
    // does not buffer the stream.
    env.wait_for(&id, "the first token in the log", |t| {
        t["status"] != "queued" && t["event_count"].as_i64().unwrap_or(0) > 0
    })
    .await;
    let first = loop {
        let log = log_text(&env, &id).await;
        if log.contains("first-token") {
            break log;
        }
        let task = env.task(&id).await;
        assert_eq!(task["status"], "running", "{task}\n{log}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(!first.contains("last-token"), "{first}");
    stand_in.release.notify_one();

    // While the agent's process still runs, hunt for the real key everywhere in the sandbox:
    // every process's environment and command line, and the files.
    loop {
        if log_text(&env, &id).await.contains("ready for the hunt") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let container = containers_of(&id).pop().expect("the task's sandbox");
    let procs = hunt::processes(&container);
    let files = hunt::files(&container);
    let token =
        String::from_utf8(hunt::exec_as_agent(&container, "cat /home/agent/token")).unwrap();
    assert!(token.starts_with("ddgw-"), "{token}");
    assert!(
        contains(&procs, &token),
        "the hunt sees the agent's environment"
    );
    assert!(contains(&files, &token), "the hunt sees the files");
    for (what, bytes) in [("processes", &procs), ("files", &files)] {
        assert!(
            !contains(bytes, REAL_KEY),
            "the real key is in the sandbox's {what}"
        );
        assert!(
            !contains(bytes, &REAL_KEY[..24]),
            "part of the key is in the {what}"
        );
    }
    hunt::exec_as_agent(&container, "touch /tmp/hunt-done");

    let task = env.wait_done(&id).await;
    let log = log_text(&env, &id).await;
    assert_eq!(task["status"], "succeeded", "{log}");
    assert!(log.contains("last-token"), "{log}");
    assert!(
        log.contains("agent: base: http://127.0.0.1:3128/gateway/anthropic"),
        "{log}"
    );
    // The stand-in got the real key, never the placeholder; neither shows anywhere.
    assert_eq!(*stand_in.keys.lock().unwrap(), vec![REAL_KEY.to_owned()]);
    let whole = format!("{log}\n{task}");
    assert!(
        !whole.contains(REAL_KEY) && !whole.contains(&token),
        "{whole}"
    );
    // The agent printed its placeholder: the log shows the line, redacted.
    assert!(log.contains("agent: placeholder: "), "{log}");
    assert!(!log.contains("ddgw-"), "{log}");

    // Metered: what the stand-in reported, priced from the built-in table (Sonnet: $3 in,
    // $15 out per million tokens).
    assert_eq!(task["usage"]["input_tokens"], 11, "{task}");
    assert_eq!(task["usage"]["output_tokens"], 7, "{task}");
    let cost = task["usage"]["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - (11.0 * 3.0 + 7.0 * 15.0) / 1e6).abs() < 1e-12,
        "{task}"
    );
    assert_eq!(task["usage_by_turn"][0]["model"], "claude-sonnet-4-5");
    assert_eq!(task["usage_by_turn"][0]["turn"], 1);
    assert_eq!(task["key_in_sandbox"], false);
    let page = env.get_page(&format!("/tasks/{id}")).await;
    assert!(page.contains("11 in · 7 out · $0.0001"), "{page}");
    let list = env.get_page("/").await;
    assert!(
        list.contains("11 in · 7 out"),
        "the task list shows the use"
    );
    let metrics = reqwest::get(env.app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("drydock_model_tokens_total")
                && l.contains("model=\"claude-sonnet-4-5\"")
                && l.contains("kind=\"output\"")
                && l.ends_with(" 7")),
        "{metrics}"
    );

    // 18 tokens used against a budget of 10: a new turn is refused, saying why.
    let (status, body) = env
        .submit_raw("true", json!({ "agent": "scripted-gw" }))
        .await;
    assert_eq!(status, reqwest::StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("18 of your 10 model tokens"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placeholder_replayed_after_its_turn_is_refused() {
    let (stand_in, url) = start_stand_in(false).await;
    let env = gateway_env(TestDb::postgres().await, &url, &[]).await;
    let first = format!(
        r#"printf '%s' "$ANTHROPIC_API_KEY" > /home/agent/old-token
{CALL}"#
    );
    let id = env
        .submit(
            &first,
            json!({ "agent": "scripted-gw", "create_pr": false, "keep_alive": true }),
        )
        .await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "succeeded", "{}", log_text(&env, &id).await);
    let second = r#"
curl -s -o /dev/null -w 'replay: %{http_code}\n' "$ANTHROPIC_BASE_URL/v1/messages" -H "x-api-key: $(cat /home/agent/old-token)" -H 'content-type: application/json' -d '{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}'
[ "$(cat /home/agent/old-token)" != "$ANTHROPIC_API_KEY" ] && echo "a new token this turn"
"#;
    let resp = env
        .alice
        .post(env.app.url(&format!("/api/tasks/{id}/messages")))
        .json(&json!({ "prompt": second }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    let task = env
        .wait_for(&id, "the second turn's end", |t| {
            t["turns"] == 2 && !matches!(t["status"].as_str(), Some("queued" | "running"))
        })
        .await;
    let log = log_text(&env, &id).await;
    assert_eq!(task["status"], "succeeded", "{log}");
    assert!(log.contains("agent: replay: 401"), "{log}");
    assert!(log.contains("agent: a new token this turn"), "{log}");
    // Only the first turn's call reached the provider.
    assert_eq!(stand_in.keys.lock().unwrap().len(), 1);
    let _ = env.post(&format!("/api/tasks/{id}/sandbox/stop")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_cannot_use_the_gateway_says_its_key_is_inside_the_sandbox() {
    // The scripted agent's `acme` key has no gateway: it goes into the sandbox, as before.
    let env = TaskEnv::start(TestDb::sqlite().await, &["--network-policy", "gateway"]).await;
    let id = env
        .submit(
            r#"[ -n "$ACME_API_KEY" ] && echo "the key is here""#,
            json!({ "create_pr": false }),
        )
        .await;
    let task = env.wait_done(&id).await;
    let log = log_text(&env, &id).await;
    assert_eq!(task["status"], "succeeded", "{log}");
    assert_eq!(task["key_in_sandbox"], true);
    assert!(log.contains("agent: the key is here"), "{log}");
    assert!(
        log.contains("this agent's key is inside the sandbox"),
        "{log}"
    );
    let page = env.get_page(&format!("/tasks/{id}")).await;
    assert!(
        page.contains("this agent&#x27;s key is inside the sandbox")
            || page.contains("this agent's key is inside the sandbox"),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tasks_http_connectors_are_reachable_in_the_gateway_policy() {
    let connector = Listener::start("127.0.0.2:0").await;
    // Another host (the policy allows by host name, not by port).
    let elsewhere = Listener::start("127.0.0.3:0").await;
    let env = TaskEnv::start(
        TestDb::sqlite().await,
        &[
            "--network-policy",
            "gateway",
            "--allow-private-connector-urls",
            "true",
        ],
    )
    .await;
    let url = format!("http://127.0.0.2:{}/mcp", connector.addr.port());
    let resp = env
        .alice
        .post(env.app.url("/api/connectors"))
        .json(&json!({ "name": "remote", "transport": "http", "url": url }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    let script = format!(
        r#"
curl -sS --max-time 20 {url}; echo; echo "connector exit $?"
curl -sS --max-time 20 http://127.0.0.3:{}/other; echo; echo "other exit $?"
"#,
        elsewhere.addr.port()
    );
    let id = env.submit(&script, json!({ "create_pr": false })).await;
    let task = env.wait_done(&id).await;
    let log = log_text(&env, &id).await;
    assert_eq!(task["status"], "succeeded", "{log}");
    assert_eq!(connector.seen(), vec!["GET /mcp HTTP/1.1"], "{log}");
    assert!(elsewhere.seen().is_empty(), "{log}");
    assert!(
        log.contains("(the gateway policy allows only the model gateway)"),
        "{log}"
    );
}

/// A repository's environment narrows the task's policy per phase (`[network]` in
/// `.drydock/environment.toml`): here setup may reach the allowed host and the agent may not;
/// and a repository asking for `open` gets no more than the task allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_narrows_the_policy_of_setup_and_of_the_agent() {
    let allowed = Listener::start("127.0.0.2:0").await;
    let unlisted = Listener::start("127.0.0.3:0").await;
    let (port, unlisted_port) = (allowed.addr.port(), unlisted.addr.port());
    let env = TaskEnv::start(
        TestDb::sqlite().await,
        &[
            "--network-policy",
            "allowlist",
            "--network-policy-max",
            "open",
            "--egress-allow-private",
            "true",
        ],
    )
    .await;
    let environment = format!(
        r#"setup = """
curl -sS --max-time 20 http://127.0.0.2:{port}/setup; echo; echo "setup allowed exit $?"
curl -sS --max-time 20 http://127.0.0.3:{unlisted_port}/widen; echo; echo "setup unlisted exit $?"
"""
[network]
setup = "open"
agent = "none"
"#
    );
    env.app.gh.create_repo(
        "alice",
        "phased",
        &[(".drydock/environment.toml", &environment)],
        "main",
    );
    let script = format!(
        "curl -sS --max-time 20 http://127.0.0.2:{port}/agent; echo; echo \"agent exit $?\""
    );
    let id = env
        .submit(
            &script,
            json!({ "repo": "alice/phased", "create_pr": false,
                    "network": { "mode": "allowlist", "presets": [], "allow": ["127.0.0.2"] } }),
        )
        .await;
    let task = env.wait_done(&id).await;
    let log = log_text(&env, &id).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{log}");
    assert!(
        log.contains("setup and maintenance open, the agent none"),
        "the log says how the environment narrows the network:\n{log}"
    );
    // Setup reached the host the task allows; `open` did not widen it to another one.
    assert_eq!(
        allowed.seen(),
        vec!["GET /setup HTTP/1.1"],
        "only setup reached the allowed host:\n{log}"
    );
    assert!(unlisted.seen().is_empty(), "{log}");
    assert!(
        log.contains(&format!(
            "blocked: GET http://127.0.0.3:{unlisted_port}/widen (not on the allowlist)"
        )),
        "{log}"
    );
    // The agent's phase is `none`: only the model gateway.
    assert!(
        log.contains(&format!("blocked: GET http://127.0.0.2:{port}/agent")),
        "{log}"
    );
    assert!(containers_of(&id).is_empty());
}

/// A follow-up accepted while the budget still had room is refused when its turn starts after
/// the first turn spent it: the same reason as the 429 at submit, on the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_that_starts_after_the_daily_budget_was_spent_is_refused() {
    let (stand_in, url) = start_stand_in(true).await;
    let env = gateway_env(
        TestDb::postgres().await,
        &url,
        &["--daily-token-budget", "10"],
    )
    .await;
    let id = env
        .submit(CALL, json!({ "agent": "scripted-gw", "create_pr": false }))
        .await;
    // The first turn's model call is under way and nothing is metered yet: a follow-up is
    // accepted (and waits for the turn).
    loop {
        let log = log_text(&env, &id).await;
        if log.contains("first-token") {
            break;
        }
        let task = env.task(&id).await;
        assert!(
            matches!(task["status"].as_str(), Some("queued" | "running")),
            "{task}\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let resp = env
        .alice
        .post(env.app.url(&format!("/api/tasks/{id}/messages")))
        .json(&json!({ "prompt": "echo the second turn ran" }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    stand_in.release.notify_one();

    let task = env
        .wait_for(&id, "the second turn's end", |t| {
            t["turns"] == 2 && !matches!(t["status"].as_str(), Some("queued" | "running"))
        })
        .await;
    let log = log_text(&env, &id).await;
    assert!(log.contains("last-token"), "the first turn ran: {log}");
    assert_eq!(task["status"], "failed", "{task}\n{log}");
    let reason = task["status_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("429")
            && reason.contains("you have used 18 of your 10 model tokens for today")
            && reason.contains("after midnight UTC"),
        "{task}"
    );
    assert!(!log.contains("agent: the second turn ran"), "{log}");
    assert_eq!(stand_in.keys.lock().unwrap().len(), 1);
}

/// An operator's agent with its own model endpoint (`base_urls` in the agents file), for a
/// provider drydock does not know: under a policy it is given the gateway and a placeholder,
/// and the gateway forwards to that endpoint with the real key; the use is priced from the
/// operator's price table.
const OWN_ENDPOINT_AGENT: &str = r#"
[[agents]]
id = "own-endpoint"
name = "Agent with its own model endpoint"
argv = ["sh", "-c", "eval \"${1##*## New request}\"", "scripted-agent", "{prompt}", "{resume}"]
resume = ["--resume-session"]
parser = "text"
keys = [{ provider = "acme-llm", env = ["ANTHROPIC_API_KEY"], base_url_env = "ANTHROPIC_BASE_URL" }]
models = [{ id = "claude-sonnet-4-5", name = "Sonnet at Acme" }]
base_urls = { acme-llm = "STAND_IN" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_agent_with_its_own_endpoint_reaches_it_through_the_gateway() {
    let (stand_in, url) = start_stand_in(false).await;
    let agents = format!(
        "{SCRIPTED_AGENT}\n{}",
        OWN_ENDPOINT_AGENT.replace("STAND_IN", &url)
    );
    // The operator's own price table (DRYDOCK_PRICES_FILE) prices the use.
    let dir = tempfile::tempdir().unwrap();
    let prices = dir.path().join("prices.toml");
    std::fs::write(
        &prices,
        "as_of = \"2026-12-01\"\n[[models]]\nprefix = \"claude-sonnet\"\ninput = 1000.0\noutput = 2000.0\n",
    )
    .unwrap();
    let env = TaskEnv::start_with_agents(
        TestDb::sqlite().await,
        &agents,
        &[
            "--network-policy",
            "gateway",
            "--prices-file",
            prices.to_str().unwrap(),
        ],
    )
    .await;
    let resp = env
        .alice
        .put(env.app.url("/api/keys/acme-llm"))
        .json(&json!({ "key": REAL_KEY }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let script = format!(
        r#"echo "base: $ANTHROPIC_BASE_URL"
{CALL}"#
    );
    let id = env
        .submit(
            &script,
            json!({ "agent": "own-endpoint", "create_pr": false }),
        )
        .await;
    let task = env.wait_done(&id).await;
    let log = log_text(&env, &id).await;
    assert_eq!(task["status"], "succeeded", "{log}");
    assert_eq!(task["key_in_sandbox"], false, "{task}");
    assert!(
        log.contains("agent: base: http://127.0.0.1:3128/gateway/acme-llm"),
        "{log}"
    );
    assert!(
        log.contains("the agent's model calls go through drydock's gateway"),
        "{log}"
    );
    assert!(
        log.contains("first-token") && log.contains("last-token"),
        "{log}"
    );
    assert_eq!(*stand_in.keys.lock().unwrap(), vec![REAL_KEY.to_owned()]);
    assert!(!format!("{log}\n{task}").contains(REAL_KEY));
    assert_eq!(task["usage"]["input_tokens"], 11, "{task}");
    assert_eq!(task["usage"]["output_tokens"], 7, "{task}");
    let cost = task["usage"]["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - (11.0 * 1000.0 + 7.0 * 2000.0) / 1e6).abs() < 1e-9,
        "{task}"
    );
}

/// A chunked answer that is not SSE (a JSON array sent in pieces) also passes through the
/// gateway as it arrives: the first piece is in the log while the stand-in still holds the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_streams_a_chunked_answer_as_it_arrives() {
    let (stand_in, url) = start_stand_in_with(StandIn {
        hold: true,
        chunked: true,
        ..StandIn::default()
    })
    .await;
    let env = gateway_env(TestDb::sqlite().await, &url, &[]).await;
    let script = r#"curl -sN --max-time 60 -D /tmp/headers "$ANTHROPIC_BASE_URL/v1/messages" -H "x-api-key: $ANTHROPIC_API_KEY" -H 'content-type: application/json' -d '{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}' | while IFS= read -r line; do echo "piece: $line"; done
grep -i '^transfer-encoding' /tmp/headers | tr -d '\r'"#;
    let id = env
        .submit(
            script,
            json!({ "agent": "scripted-gw", "create_pr": false }),
        )
        .await;
    let first = loop {
        let log = log_text(&env, &id).await;
        if log.contains("first-chunk") {
            break log;
        }
        let task = env.task(&id).await;
        assert!(
            matches!(task["status"].as_str(), Some("queued" | "running")),
            "{task}\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(!first.contains("last-chunk"), "{first}");
    stand_in.release.notify_one();
    let task = env.wait_done(&id).await;
    let log = log_text(&env, &id).await;
    assert_eq!(task["status"], "succeeded", "{log}");
    assert!(
        log.contains(r#"agent: piece: ,{"text":"last-chunk"}]"#),
        "{log}"
    );
    assert!(
        log.to_ascii_lowercase()
            .contains("agent: transfer-encoding: chunked"),
        "{log}"
    );
    assert_eq!(*stand_in.keys.lock().unwrap(), vec![REAL_KEY.to_owned()]);
}
