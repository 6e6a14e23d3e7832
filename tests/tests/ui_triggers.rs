//! The triggers' settings pages in headless Chromium: a new API token is shown once with a copy
//! button and can be revoked; the webhook page lists the deliveries that concern the user.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use drydock_tests::browser::{Browser, screenshot_path};
use drydock_tests::github::CommentEvent;
use drydock_tests::{App, TestDb, TestServer};

const SECRET: &str = "ui-webhook-secret-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_shown_once_and_deliveries_are_listed() {
    let app = App::start(TestDb::sqlite().await, &["--github-webhook-secret", SECRET]).await;
    let browser = Browser::start().await;
    browser.goto(&app.url("/")).await;
    app.gh.approve_as(Some("alice"));
    browser.click("a.button[href^='/auth/github']").await;
    browser.wait_text("h1", "Tasks").await;

    // Create a token: it is shown once, with a copy button.
    browser.click("nav a[href='/settings/tokens']").await;
    browser.wait_text("#no-tokens", "No tokens yet").await;
    browser.type_into("#token-name", "laptop").await;
    browser.click("#new-token button[type='submit']").await;
    browser
        .wait_text("#new-token-value", "Copy your new token now")
        .await;
    let token = browser.property("#token-value", "value").await;
    let token = token.as_str().unwrap().to_owned();
    assert!(token.starts_with("ddt_"), "{token}");
    let listed = browser.text("#tokens").await;
    assert!(
        listed.contains("laptop") && !listed.contains(&token[8..]),
        "{listed}"
    );
    browser.click("#copy-token").await;
    let copied = browser.wait_text("#copied", ".").await;
    assert!(
        copied.contains("Copied") || copied.contains("to copy"),
        "{copied}"
    );
    browser.screenshot(&screenshot_path("tokens-created")).await;

    // It works, and after a reload it is listed by name and hint, never shown again.
    let me: serde_json::Value = reqwest::Client::new()
        .get(app.url("/api/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["login"], "alice");
    browser.goto(&app.url("/settings/tokens")).await;
    let main = browser.wait_text("#tokens", "laptop").await;
    assert!(main.contains(&token[..8]), "{main}");
    let page = browser.text("main").await;
    assert!(!page.contains(&token[8..]), "the token is shown again");
    assert!(page.contains("last used"), "{page}");

    // Revoke it.
    browser.click("button[data-action='revoke']").await;
    browser.accept_dialog().await;
    browser.wait_text("#no-tokens", "No tokens yet").await;
    let resp = reqwest::Client::new()
        .get(app.url("/api/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::UNAUTHORIZED);

    // The webhook page: Alice's ignored mention (she cannot write to bob/repo-0) with its
    // reason, and the bad signature counted among the others.
    let (payload, _) = app.gh.issue_comment_payload(&CommentEvent {
        repo: "bob/repo-0",
        number: 3,
        title: "t",
        body: "",
        is_pull: false,
        commenter: "alice",
        comment: "@drydock do it",
    });
    let hook = app.url("/webhooks/github");
    let (_, answer) = app
        .gh
        .deliver(&hook, SECRET, "issue_comment", "ui-1", &payload)
        .await;
    assert_eq!(answer["outcome"], "ignored", "{answer}");
    let (status, _) = app
        .gh
        .deliver(&hook, "wrong", "issue_comment", "ui-2", &payload)
        .await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);
    browser.click("nav a[href='/settings/webhooks']").await;
    let table = browser.wait_text("#deliveries", "no write access").await;
    assert!(
        table.contains("bob/repo-0") && table.contains("ignored"),
        "{table}"
    );
    let others = browser.text("#unmatched").await;
    assert!(others.contains("bad signature: 1"), "{others}");
    browser
        .screenshot(&screenshot_path("webhook-deliveries"))
        .await;
}

/// Whether the page scrolls sideways (wider than the window).
async fn scrolls_sideways(browser: &Browser) -> bool {
    browser
        .eval(
            "return document.documentElement.scrollWidth > window.innerWidth + 1;",
            serde_json::json!([]),
        )
        .await
        == serde_json::json!(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_set_up_and_operator_pages_fit_a_phone_screen() {
    let browser = Browser::start().await;
    browser.set_size(390, 844).await;

    // The first page a new operator sees: long URLs and setting names must wrap.
    let db = TestDb::sqlite().await;
    let fresh = TestServer::start(&db.url, &[]).await;
    browser.goto(&format!("{}/", fresh.url)).await;
    browser.wait_text("main", "Set up sign-in").await;
    browser.screenshot(&screenshot_path("set-up-390")).await;
    assert!(
        !scrolls_sideways(&browser).await,
        "the set-up page scrolls sideways at 390 px"
    );

    // The signed-in settings and operator pages.
    let app = App::start(
        TestDb::sqlite().await,
        &["--github-webhook-secret", SECRET, "--admins", "alice"],
    )
    .await;
    browser.goto(&app.url("/")).await;
    app.gh.approve_as(Some("alice"));
    browser.click("a.button[href^='/auth/github']").await;
    browser.wait_text("h1", "Tasks").await;
    for (path, ready, text) in [
        ("/settings/tokens", "main", "API tokens"),
        ("/settings/webhooks", "main", "GitHub webhook"),
        ("/admin", "main", "Settings that differ"),
    ] {
        browser.goto(&app.url(path)).await;
        browser.wait_text(ready, text).await;
        let name = format!("{}-390", path.trim_start_matches('/').replace('/', "-"));
        browser.screenshot(&screenshot_path(&name)).await;
        assert!(
            !scrolls_sideways(&browser).await,
            "{path} scrolls sideways at 390 px"
        );
    }
}
