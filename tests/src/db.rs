//! Throwaway databases: a SQLite file in a temporary directory, or a fresh PostgreSQL database
//! created on the server named by `DRYDOCK_TEST_POSTGRES_URL` and dropped afterwards.

use std::path::PathBuf;

use drydock::store::Store;
use sqlx::Connection;

/// A database that exists for one test.
pub struct TestDb {
    /// URL to give drydock (`DATABASE_URL`).
    pub url: String,
    /// The store, migrated.
    pub store: Store,
    /// Keeps the SQLite directory alive.
    _dir: Option<tempfile::TempDir>,
    /// Admin URL and name of the PostgreSQL database to drop.
    pg: Option<(String, String)>,
}

impl TestDb {
    /// A fresh, migrated SQLite database in a temporary directory.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path: PathBuf = dir.path().join("drydock.db");
        let url = format!("sqlite://{}", path.display());
        let store = Store::open(&url).await.expect("open SQLite store");
        Self {
            url,
            store,
            _dir: Some(dir),
            pg: None,
        }
    }

    /// A fresh, migrated PostgreSQL database. Panics with instructions when no server is configured.
    pub async fn postgres() -> Self {
        let admin = postgres_admin_url();
        let name = format!("drydock_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|err| panic!("cannot reach DRYDOCK_TEST_POSTGRES_URL: {err}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        let url = with_database(&admin, &name);
        let store = Store::open(&url).await.expect("open PostgreSQL store");
        Self {
            url,
            store,
            _dir: None,
            pg: Some((admin, name)),
        }
    }
}

/// The admin URL of the PostgreSQL server for tests.
pub fn postgres_admin_url() -> String {
    std::env::var("DRYDOCK_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "DRYDOCK_TEST_POSTGRES_URL is not set: run the tests with scripts/test, or \
             eval \"$(scripts/services)\" first, or point it at a PostgreSQL server where you may CREATE DATABASE"
        )
    })
}

/// The same server URL with another database name.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(slash) if slash > "postgres://".len() => &base[..slash],
        _ => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg.take() else {
            return;
        };
        let store = self.store.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; use a thread of our own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                store.close().await;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
