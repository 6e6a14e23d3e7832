//! The store: every SQL statement drydock runs, on SQLite (default) or PostgreSQL.
//!
//! The backend is chosen by the URL scheme at start-up. Each query is one function, written once
//! with `$N` placeholders (both drivers accept them) and run on whichever pool is configured by
//! the [`with_pool!`] macro, which expands the same body once per backend so each gets its
//! native types. No SQL lives outside this module.

mod checkpoints;
mod connectors;
mod egress;
mod environments;
mod events;
mod keys;
mod models;
mod notices;
mod replicas;
mod tasks;
mod tokens;
mod users;
mod webhooks;

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use connectors::{ConnectorCheck, ConnectorUpdate, NewConnector};
pub use egress::{BlockedRequest, NewUsage, TurnUsage};
pub use environments::{EnvironmentUpdate, SetupRecord};
pub use events::{EventSource, NewEvent};
pub use models::*;
pub use replicas::{
    CONTROL_CHANNEL, ClaimLimits, ControlRequest, EVENTS_CHANNEL, ReplicaRow, STATUS_CHANNEL,
};
pub use tasks::{NewTask, TaskDiff, TaskFilter, TaskOutcome, Turn};
pub use tokens::NewApiToken;
pub use users::GithubProfile;
pub use webhooks::{DeliveryOutcome, NewDelivery};

/// Runs `$body` with `$pool` bound to the configured backend's pool.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database URL names a scheme drydock cannot use.
    #[error(
        "DATABASE_URL must start with sqlite: or postgres:// (got a URL with scheme {scheme:?})"
    )]
    UnsupportedUrl {
        /// The scheme that was given (never the rest of the URL, which may hold a password).
        scheme: String,
    },
    /// The database URL is a bare path, with no scheme. Only a value that reads as a path is
    /// echoed (no `:`, `=` or space, so no password of a URL or of a `key=value` string).
    #[error(
        "DATABASE_URL must start with sqlite: or postgres:// (got {path:?}; for a SQLite file \
         there, write sqlite:{path})"
    )]
    NoScheme {
        /// What was given.
        path: String,
    },
    /// The database URL is neither a URL nor a path (`host=… password=…`, say): nothing of it
    /// is echoed.
    #[error(
        "DATABASE_URL must start with sqlite: or postgres:// (got neither a URL nor a path; the \
         value is not shown, as it may hold a password)"
    )]
    NotAUrl,
    /// The database URL could not be parsed.
    #[error("DATABASE_URL is not a valid {backend} URL: {reason}")]
    BadUrl {
        /// The backend the scheme names.
        backend: &'static str,
        /// Why it did not parse.
        reason: String,
    },
    /// The database server did not accept a connection (not running, wrong host or port,
    /// refused credentials, missing database).
    #[error(
        "cannot connect to {backend} at {target}: {reason}; is it running, and is DATABASE_URL right?"
    )]
    Unreachable {
        /// The backend the URL names.
        backend: &'static str,
        /// `host:port/database` (never the user or password).
        target: String,
        /// What the server or the network said.
        reason: String,
    },
    /// A row with the same unique key already exists.
    #[error("a row with the same unique key already exists")]
    Conflict,
    /// Applying migrations failed; for a database that a newer or a changed drydock migrated,
    /// the message says so.
    #[error("database migration failed: {}", migrate_reason(.0))]
    Migrate(sqlx::migrate::MigrateError),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            _ => StoreError::Database(err),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(err)
    }
}

/// Why migrations failed, in an operator's terms where sqlx's are its own (its error is not
/// made the source, so a chain of causes does not say it twice).
fn migrate_reason(err: &sqlx::migrate::MigrateError) -> String {
    use sqlx::migrate::MigrateError;
    match err {
        MigrateError::VersionMissing(version) => format!(
            "the database has migration {version}, which this drydock does not know: a newer \
             drydock migrated it; run that version or a newer one (or restore a backup taken \
             before the upgrade)"
        ),
        MigrateError::VersionMismatch(version) => format!(
            "migration {version} in the database differs from this drydock's: it was applied by \
             a build whose migration {version} was different; run that build, or restore a backup"
        ),
        other => other.to_string(),
    }
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Which database the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file, in WAL mode.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: Pool,
    /// SQLite's background checkpoints, stopped when the last clone is dropped.
    _checkpoints: Option<Arc<checkpoints::Checkpoints>>,
    /// PostgreSQL's notices of stored log events to other replicas, sent after the appends
    /// commit and stopped when the last clone is dropped.
    notices: Option<Arc<notices::Notices>>,
}

impl Store {
    /// Connects to the database the URL names. Does not run migrations.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::start(url, false).await
    }

    /// Brings the schema up to date, then connects.
    ///
    /// On SQLite the migrations run on a connection of their own, closed before the pool and
    /// the checkpointer open theirs: a connection that read the schema while the migrations ran
    /// keeps that schema until its next statement runs, and a `SELECT *` it then prepares on a
    /// table a migration gave columns gets rows wider than the columns sqlx took from the
    /// statement (sqlx's worker thread panics and the query answers nothing). On PostgreSQL they
    /// run on the pool before anything else uses it.
    pub async fn open(url: &str) -> StoreResult<Self> {
        Self::start(url, true).await
    }

    async fn start(url: &str, migrate: bool) -> StoreResult<Self> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(|err| StoreError::BadUrl {
                        backend: "SQLite",
                        reason: err.to_string(),
                    })?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
                    // Checkpoints run in the background (`checkpoints`), not in commits.
                    .pragma("wal_autocheckpoint", "0");
                if let Some(parent) = Path::new(options.get_filename()).parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent).map_err(|err| StoreError::BadUrl {
                        backend: "SQLite",
                        reason: format!("cannot create {}: {err}", parent.display()),
                    })?;
                }
                if migrate {
                    // (A pool of one: given a bare connection, sqlx's migrator makes a future that
                    // is not `Send`.)
                    let single = SqlitePoolOptions::new()
                        .max_connections(1)
                        .connect_with(options.clone())
                        .await?;
                    let migrated = SQLITE_MIGRATOR.run(&single).await;
                    single.close().await;
                    migrated?;
                }
                // No ping before handing out a connection: it is a call to the connection's
                // worker thread on every query, and a connection to a file in this process
                // cannot be cut off.
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .test_before_acquire(false)
                    .connect_with(options)
                    .await?;
                let checkpoints = checkpoints::Checkpoints::start(pool.clone());
                Ok(Self {
                    pool: Pool::Sqlite(pool),
                    _checkpoints: Some(checkpoints),
                    notices: None,
                })
            }
            "postgres" | "postgresql" => {
                let options =
                    PgConnectOptions::from_str(url).map_err(|err| StoreError::BadUrl {
                        backend: "PostgreSQL",
                        reason: err.to_string(),
                    })?;
                // The pool retries a refused connection until its timeout and then says only
                // that it timed out: one plain connection first gives the operator the reason.
                let target = format!(
                    "{}:{}/{}",
                    options.get_host(),
                    options.get_port(),
                    options.get_database().unwrap_or_default()
                );
                let unreachable = |reason: String| StoreError::Unreachable {
                    backend: "PostgreSQL",
                    target: target.clone(),
                    reason,
                };
                match tokio::time::timeout(
                    Duration::from_secs(10),
                    <sqlx::postgres::PgConnection as sqlx::Connection>::connect_with(&options),
                )
                .await
                {
                    Ok(Ok(probe)) => {
                        let _ = sqlx::Connection::close(probe).await;
                    }
                    Ok(Err(err)) => return Err(unreachable(err.to_string())),
                    Err(_) => return Err(unreachable("no answer within 10 s".to_owned())),
                }
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await?;
                if migrate {
                    POSTGRES_MIGRATOR.run(&pool).await?;
                }
                let notices = notices::Notices::start(pool.clone());
                Ok(Self {
                    pool: Pool::Postgres(pool),
                    _checkpoints: None,
                    notices: Some(notices),
                })
            }
            _ if !url.contains([':', '=']) && !url.contains(char::is_whitespace) => {
                Err(StoreError::NoScheme {
                    path: url.to_owned(),
                })
            }
            _ if !url.contains(':') => Err(StoreError::NotAUrl),
            other => Err(StoreError::UnsupportedUrl {
                scheme: other.chars().take(32).collect(),
            }),
        }
    }

    /// The newest applied migration's version, if any (for the operator page).
    pub async fn migration_version(&self) -> StoreResult<Option<i64>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MAX(version) FROM _sqlx_migrations WHERE success",
            )
            .fetch_one(pool)
            .await?
        }))
    }

    /// Which backend this store uses.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Answers whether the database is reachable now (for `/readyz`).
    pub async fn ping(&self) -> StoreResult<()> {
        with_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }
}

/// Text from outside drydock (what agents, commands, repositories, remote servers, GitHub or
/// users wrote) as a text column can hold it on both backends: PostgreSQL refuses NUL in text
/// (and a whole batch of log lines with it), so NUL becomes U+FFFD everywhere, visibly.
/// Invalid UTF-8 never gets this far: a `&str` is UTF-8, and bytes become text through lossy
/// conversion (U+FFFD) on the way in.
pub(crate) fn text<'a, T: Storable<'a>>(value: T) -> T::Stored {
    value.storable()
}

/// A text value [`text`] makes storable.
pub(crate) trait Storable<'a> {
    /// What is bound instead.
    type Stored;
    /// The value without NUL.
    fn storable(self) -> Self::Stored;
}

impl<'a> Storable<'a> for &'a str {
    type Stored = Cow<'a, str>;
    fn storable(self) -> Cow<'a, str> {
        if self.contains('\0') {
            Cow::Owned(self.replace('\0', "\u{fffd}"))
        } else {
            Cow::Borrowed(self)
        }
    }
}

impl<'a> Storable<'a> for Option<&'a str> {
    type Stored = Option<Cow<'a, str>>;
    fn storable(self) -> Option<Cow<'a, str>> {
        self.map(Storable::storable)
    }
}

/// The file of a `sqlite:` database URL (`None` for PostgreSQL, an in-memory database, or a
/// URL that does not parse).
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    if url.split(':').next() != Some("sqlite") {
        return None;
    }
    let options = SqliteConnectOptions::from_str(url).ok()?;
    let file = options.get_filename();
    (!file.as_os_str().is_empty() && file != Path::new(":memory:")).then(|| file.to_path_buf())
}

/// Now as unix milliseconds, the unit of every timestamp column.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A new random id in the TEXT UUID form the schema uses.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
