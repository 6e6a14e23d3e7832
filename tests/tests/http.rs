//! The HTTP skeleton served by `drydock::run`: probes, the error shape, OpenAPI and metrics.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use drydock_tests::{TestDb, TestServer};
use serde_json::Value;

async fn get(url: &str) -> (u16, String) {
    let resp = reqwest::get(url).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_on_both_backends() {
    for db in [TestDb::sqlite().await, TestDb::postgres().await] {
        let server = TestServer::start(&db.url, &[]).await;
        let (status, body) = get(&format!("{}/healthz", server.url)).await;
        assert_eq!(
            (
                status,
                serde_json::from_str::<Value>(&body).unwrap()["status"].as_str()
            ),
            (200, Some("ok"))
        );
        let (status, body) = get(&format!("{}/readyz", server.url)).await;
        assert_eq!(
            (
                status,
                serde_json::from_str::<Value>(&body).unwrap()["status"].as_str()
            ),
            (200, Some("ready"))
        );
        server.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_an_unreachable_database_while_healthz_stays_up() {
    let db = TestDb::postgres().await;
    let server = TestServer::start(&db.url, &[]).await;
    assert_eq!(get(&format!("{}/readyz", server.url)).await.0, 200);

    // Take the database away underneath the running server.
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    let mut admin =
        <sqlx::PgConnection as sqlx::Connection>::connect(&drydock_tests::db::postgres_admin_url())
            .await
            .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();

    let (status, body) = get(&format!("{}/readyz", server.url)).await;
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("database"),
        "{body}"
    );
    assert!(
        !body.to_string().contains("postgres://"),
        "no connection details leak"
    );
    assert_eq!(
        get(&format!("{}/healthz", server.url)).await.0,
        200,
        "the process is still up"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_an_unreachable_docker_daemon() {
    let db = TestDb::sqlite().await;
    // Nothing listens on port 9 of loopback (discard), so Docker is unreachable there.
    let server = TestServer::start(&db.url, &["--docker-host", "tcp://127.0.0.1:9"]).await;
    let (status, body) = get(&format!("{}/readyz", server.url)).await;
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Docker"),
        "{body}"
    );
    assert_eq!(get(&format!("{}/healthz", server.url)).await.0, 200);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_bad_methods_answer_with_the_json_error_shape() {
    let db = TestDb::sqlite().await;
    let server = TestServer::start(&db.url, &[]).await;
    let (status, body) = get(&format!("{}/api/no-such-thing", server.url)).await;
    assert_eq!(status, 404);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );

    let resp = reqwest::Client::new()
        .delete(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert!(
        resp.headers().get("x-request-id").is_some(),
        "every response carries a request id"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_the_served_routes() {
    let db = TestDb::sqlite().await;
    let server = TestServer::start(&db.url, &[]).await;
    let (status, body) = get(&format!("{}/api/openapi.json", server.url)).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/healthz", "/readyz"] {
        assert!(
            doc["paths"][path]["get"].is_object(),
            "{path} missing from {doc}"
        );
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    // A client generator learns how to authenticate: a bearer API token or the session cookie,
    // required everywhere except on the probes.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_token"]["type"], "http", "{schemes}");
    assert_eq!(schemes["api_token"]["scheme"], "bearer", "{schemes}");
    assert_eq!(schemes["session"]["type"], "apiKey", "{schemes}");
    assert_eq!(schemes["session"]["in"], "cookie", "{schemes}");
    assert_eq!(schemes["session"]["name"], "drydock_session", "{schemes}");
    let global: Vec<String> = doc["security"]
        .as_array()
        .expect("a global security requirement")
        .iter()
        .flat_map(|requirement| requirement.as_object().unwrap().keys().cloned())
        .collect();
    assert_eq!(global, ["api_token", "session"]);
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(
            doc["paths"][probe]["get"]["security"],
            serde_json::json!([{}]),
            "{probe} needs no credentials"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_template() {
    let db = TestDb::sqlite().await;
    let server = TestServer::start(&db.url, &[]).await;
    for _ in 0..3 {
        get(&format!("{}/healthz", server.url)).await;
    }
    let (status, body) = get(&format!("{}/metrics", server.url)).await;
    assert_eq!(status, 200);
    let line = body
        .lines()
        .find(|l| {
            l.starts_with("http_requests_total{")
                && l.contains("route=\"/healthz\"")
                && l.contains("status=\"200\"")
        })
        .unwrap_or_else(|| panic!("no request counter for /healthz in:\n{body}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3.0, "{line}");
    assert!(
        body.contains("http_request_duration_seconds_bucket"),
        "latency histogram present"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_link_embedded_static_files_by_content_hash() {
    let db = TestDb::sqlite().await;
    let server = TestServer::start(&db.url, &[]).await;
    let resp = reqwest::get(format!("{}/", server.url)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = resp.text().await.unwrap();
    assert!(
        html.contains(r#"<a class="brand" href="/">drydock</a>"#),
        "{html}"
    );
    let css_path = html
        .split("href=\"")
        .find_map(|s| {
            s.split('"')
                .next()
                .filter(|p| p.starts_with("/static/drydock.css?v="))
        })
        .unwrap();

    let css = reqwest::get(format!("{}{css_path}", server.url))
        .await
        .unwrap();
    assert_eq!(css.status(), 200);
    assert_eq!(css.headers()["content-type"], "text/css");
    assert!(
        css.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert!(css.text().await.unwrap().contains("prefers-color-scheme"));

    let stale = reqwest::get(format!("{}/static/drydock.css?v=000000000000", server.url))
        .await
        .unwrap();
    assert_eq!(
        stale.headers()["cache-control"],
        "no-cache",
        "an old hash is not cached forever"
    );
    let missing = reqwest::get(format!("{}/static/nope.js", server.url))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    server.stop().await.unwrap();
}
