//! Network policy and model gateway (issue 17), measured end to end on real servers with real
//! Docker, each figure against its baseline in the same run:
//!
//! - time to the first streamed token of a model answer: from a sandbox through drydock's
//!   relay and gateway, against the same client in a sandbox on the host network talking to
//!   the stand-in directly;
//! - one plain request through the egress proxy (a `CONNECT` tunnel, as HTTPS uses) against
//!   the same request sent directly;
//! - task start (submit → the agent's first line in the log) with the `allowlist` policy
//!   against no policy (`--sandbox-network none`).
//!
//! Run with `cargo bench -p drydock-tests --bench egress` (or `bench/run egress`); needs Docker
//! and `DRYDOCK_SANDBOX_IMAGE`. Knobs: `DRYDOCK_BENCH_CALLS` (requests per client run, default
//! 40), `DRYDOCK_BENCH_STARTS` (task starts per side, default 5). A markdown summary goes to
//! stdout and to `DRYDOCK_BENCH_OUT` when set.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use axum::routing::{get, post};
use drydock_tests::TestDb;
use drydock_tests::stats::{bench_main, env_num, median, stats_row};
use drydock_tests::tasks::{SCRIPTED_AGENT, TaskEnv};
use serde_json::json;

const KEY: &str = "sk-ant-api03-bench-Zq8Xw3Lm5Nv7Bp2Rt4Yc6Hd9Kf1Gs0Ja";

const GATEWAY_AGENT: &str = r#"
[[agents]]
id = "scripted-gw"
name = "Scripted gateway agent"
argv = ["sh", "-c", "eval \"$1\"", "scripted-agent", "{prompt}"]
parser = "text"
keys = [{ provider = "anthropic", env = ["ANTHROPIC_API_KEY"], base_url_env = "ANTHROPIC_BASE_URL" }]
models = [{ id = "claude-sonnet-4-5", name = "Sonnet" }]
"#;

/// A Messages stand-in that streams a short answer at once.
async fn messages() -> Response {
    let events = [
        r#"data: {"type":"message_start","message":{"model":"claude-sonnet-4-5","usage":{"input_tokens":5,"output_tokens":1}}}"#,
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hello"}}"#,
        r#"data: {"type":"message_delta","usage":{"output_tokens":2}}"#,
    ];
    let stream = futures::stream::iter(
        events
            .into_iter()
            .map(|e| Ok::<_, std::convert::Infallible>(format!("{e}\n\n"))),
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

async fn serve(bind: &str, app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .expect("bind a bench listener");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The client run in the sandbox: `calls` streamed model requests timed to the first
/// `text_delta` line, then `calls` plain GETs of `target` (through the proxy with CONNECT when
/// `tunnel`), one `ttft <ms>` / `req <ms>` line each.
fn client_script(calls: usize, target: &str, tunnel: bool) -> String {
    format!(
        r#"python3 - <<'EOF'
import http.client, json, os, time, urllib.parse
u = urllib.parse.urlparse(os.environ["ANTHROPIC_BASE_URL"])
key = os.environ["ANTHROPIC_API_KEY"]
body = json.dumps({{"model": "claude-sonnet-4-5", "max_tokens": 5, "stream": True,
                   "messages": [{{"role": "user", "content": "hi"}}]}})
for _ in range({calls}):
    t0 = time.perf_counter()
    c = http.client.HTTPConnection(u.hostname, u.port)
    c.request("POST", u.path.rstrip("/") + "/v1/messages", body,
              {{"x-api-key": key, "content-type": "application/json", "anthropic-version": "2023-06-01"}})
    r = c.getresponse()
    t1 = None
    while True:
        line = r.readline()
        if not line:
            break
        if b"text_delta" in line and t1 is None:
            t1 = time.perf_counter()
    c.close()
    print("ttft %.3f" % ((t1 - t0) * 1000), flush=True)
tunnel = {tunnel}
proxy = urllib.parse.urlparse(os.environ.get("HTTP_PROXY", "http://x"))
target = urllib.parse.urlparse("{target}")
for _ in range({calls}):
    t0 = time.perf_counter()
    if tunnel:
        c = http.client.HTTPConnection(proxy.hostname, proxy.port)
        c.set_tunnel(target.hostname, target.port)
    else:
        c = http.client.HTTPConnection(target.hostname, target.port)
    c.request("GET", "/")
    c.getresponse().read()
    c.close()
    print("req %.3f" % ((time.perf_counter() - t0) * 1000), flush=True)
EOF"#,
        tunnel = if tunnel { "True" } else { "False" },
    )
}

/// Runs one client task and answers its `ttft` and `req` figures.
async fn client_run(
    env: &TaskEnv,
    script: &str,
    network: serde_json::Value,
) -> (Vec<f64>, Vec<f64>) {
    let mut body = json!({ "agent": "scripted-gw", "create_pr": false });
    if !network.is_null() {
        body["network"] = network;
    }
    let id = env.submit(script, body).await;
    let task = env.wait_done(&id).await;
    let log = env.log(&id).await;
    assert_eq!(task["status"], "succeeded", "{}", log.join("\n"));
    let grab = |prefix: &str| -> Vec<f64> {
        log.iter()
            .filter_map(|l| {
                l.strip_prefix("agent: ")?
                    .strip_prefix(prefix)?
                    .parse()
                    .ok()
            })
            .collect()
    };
    (grab("ttft "), grab("req "))
}

/// Submit → the agent's first line in the log, in ms.
async fn task_start(env: &TaskEnv, network: serde_json::Value) -> f64 {
    let mut body = json!({ "create_pr": false });
    if !network.is_null() {
        body["network"] = network;
    }
    let started = Instant::now();
    let id = env.submit("echo first-line", body).await;
    loop {
        if env.log(&id).await.iter().any(|l| l == "agent: first-line") {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            env.wait_done(&id).await;
            return ms;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "task {id} never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn run() -> String {
    let calls = env_num("DRYDOCK_BENCH_CALLS", 40);
    let starts = env_num("DRYDOCK_BENCH_STARTS", 5);
    let model = serve(
        "127.0.0.1:0",
        Router::new().route("/v1/messages", post(messages)),
    )
    .await;
    let target = serve(
        "127.0.0.2:0",
        Router::new().route("/", get(|| async { "ok" })),
    )
    .await;
    let model_url = format!("http://{model}");
    let target_url = format!("http://{target}/");
    let agents = format!("{SCRIPTED_AGENT}\n{GATEWAY_AGENT}");
    let with_policy = TaskEnv::start_with_agents(
        TestDb::sqlite().await,
        &agents,
        &[
            "--network-policy",
            "allowlist",
            "--egress-allow-private",
            "true",
            "--anthropic-base-url",
            &model_url,
        ],
    )
    .await;
    let direct = TaskEnv::start_with_agents(
        TestDb::sqlite().await,
        &agents,
        &[
            "--network-policy",
            "off",
            "--sandbox-network",
            "host",
            "--anthropic-base-url",
            &model_url,
        ],
    )
    .await;
    let without = TaskEnv::start_with_agents(TestDb::sqlite().await, &agents, &[]).await;
    for env in [&with_policy, &direct] {
        let resp = env
            .alice
            .put(env.app.url("/api/keys/anthropic"))
            .json(&json!({ "key": KEY }))
            .send()
            .await
            .expect("set key");
        assert!(resp.status().is_success());
    }
    let allow = json!({ "presets": [], "allow": ["127.0.0.2"] });
    let (g_ttft, g_req) = client_run(
        &with_policy,
        &client_script(calls, &target_url, true),
        allow.clone(),
    )
    .await;
    let (d_ttft, d_req) = client_run(
        &direct,
        &client_script(calls, &target_url, false),
        serde_json::Value::Null,
    )
    .await;
    let mut s_policy = Vec::new();
    let mut s_none = Vec::new();
    for _ in 0..starts {
        s_policy.push(task_start(&with_policy, allow.clone()).await);
        s_none.push(task_start(&without, serde_json::Value::Null).await);
    }

    let mut out = String::new();
    let _ = writeln!(out, "| what (ms) | n | p50 | p90 | p99 | min | max |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for (what, xs) in [
        (
            "first streamed token, through the relay and gateway",
            &g_ttft,
        ),
        (
            "first streamed token, sandbox on the host network straight to the stand-in (baseline)",
            &d_ttft,
        ),
        ("plain GET through the proxy (CONNECT tunnel)", &g_req),
        (
            "plain GET, sandbox on the host network, direct (baseline)",
            &d_req,
        ),
        ("task start, `allowlist` policy", &s_policy),
        (
            "task start, no policy, `--sandbox-network none` (baseline)",
            &s_none,
        ),
    ] {
        let _ = writeln!(out, "{}", stats_row(what, xs));
    }
    let ratio = |a: &[f64], b: &[f64]| median(a) / median(b);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Ratios of medians, same run: first token through the gateway / direct **{:.2}×** (+{:.1} ms); proxied request / direct **{:.2}×** (+{:.1} ms); task start with the policy / without **{:.2}×** (+{:.0} ms).",
        ratio(&g_ttft, &d_ttft),
        median(&g_ttft) - median(&d_ttft),
        ratio(&g_req, &d_req),
        median(&g_req) - median(&d_req),
        ratio(&s_policy, &s_none),
        median(&s_policy) - median(&s_none),
    );
    out
}

fn main() {
    bench_main(run);
}
