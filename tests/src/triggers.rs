//! Helpers for the trigger tests: personal API tokens, raw SQL on either backend, a capture of
//! the server's log lines, and a TCP relay that can drop every connection on demand.

use std::sync::{Arc, Mutex, OnceLock};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::{App, TestDb};

/// Creates a token as the signed-in `browser`; answers the whole answer (with `token`).
pub async fn create_token(app: &App, browser: &Client, name: &str, scope: &str) -> Value {
    let resp = browser
        .post(app.url("/api/tokens"))
        .json(&json!({ "name": name, "scope": scope, "expires_in_days": 7 }))
        .send()
        .await
        .expect("create token");
    assert_eq!(resp.status(), StatusCode::CREATED);
    resp.json().await.expect("token json")
}

/// Runs one statement (with text parameters) on the test database; answers rows affected.
pub async fn execute(db: &TestDb, sql: &str, params: &[&str]) -> u64 {
    if db.url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(&db.url).await.expect("sqlite");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
        for p in params {
            q = q.bind(p.to_string());
        }
        let n = q.execute(&pool).await.expect("execute").rows_affected();
        pool.close().await;
        n
    } else {
        let pool = sqlx::PgPool::connect(&db.url).await.expect("postgres");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
        for p in params {
            q = q.bind(p.to_string());
        }
        let n = q.execute(&pool).await.expect("execute").rows_affected();
        pool.close().await;
        n
    }
}

/// Rows of a query whose columns are all text (or NULL), as strings ("" for NULL).
pub async fn text_rows(db: &TestDb, sql: &str) -> Vec<Vec<String>> {
    use sqlx::Row;
    fn cells<R: Row>(row: &R) -> Vec<String>
    where
        for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
        usize: sqlx::ColumnIndex<R>,
    {
        (0..row.len())
            .map(|i| {
                row.try_get::<Option<String>, _>(i)
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            })
            .collect()
    }
    if db.url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(&db.url).await.expect("sqlite");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(&pool)
            .await
            .expect("query");
        pool.close().await;
        rows.iter().map(cells).collect()
    } else {
        let pool = sqlx::PgPool::connect(&db.url).await.expect("postgres");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(&pool)
            .await
            .expect("query");
        pool.close().await;
        rows.iter().map(cells).collect()
    }
}

/// Every log line the servers of this test process wrote, at debug level and above.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Installs the capture as the process's log subscriber (once); answers it.
    pub fn install() -> LogCapture {
        static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
        CAPTURE
            .get_or_init(|| {
                let capture = LogCapture::default();
                let writer = capture.clone();
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
                    .with_ansi(false)
                    .with_writer(move || writer.clone())
                    .try_init();
                capture
            })
            .clone()
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A TCP relay on `127.0.0.1:0` to `target`; [`Relay::cut`] drops every open connection (new
/// ones are still accepted), as a restarted proxy would.
pub struct Relay {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    cut: watch::Sender<u64>,
    open: Arc<std::sync::atomic::AtomicUsize>,
}

impl Relay {
    /// Starts relaying to `target` (`host:port`).
    pub async fn start(target: std::net::SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (cut, _) = watch::channel(0u64);
        let cuts = cut.clone();
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = open.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut_rx = cuts.subscribe();
                cut_rx.mark_unchanged();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.changed() => {}
                    }
                    counter.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
        });
        Relay { url, cut, open }
    }

    /// Drops every connection open now; answers how many there were.
    pub fn cut(&self) -> usize {
        let open = self.open.load(std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
        open
    }
}
