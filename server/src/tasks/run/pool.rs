//! The warm pool: sandboxes created and started ahead of tasks, so a turn takes one instead of
//! waiting for Docker to make it.
//!
//! Pooled sandboxes are kept per *shape* ([`drydock_sandbox::Shape`]: the creation spec without
//! its task, so image, limits, network, user and whatever else the spec grows), `size` of each
//! shape asked for (the operator's default shape from the start, others once a task asks for
//! them, until none has for the maximum age). They hold no task data, no secrets and no task
//! environment: everything of the task (working tree, agent files, keys in the exec's own
//! environment) arrives after a task takes one.
//!
//! How a pooled sandbox is found and never leaked: it carries this server's instance label and a
//! pool label (its shape's key) instead of a task label, since labels cannot change once a
//! container exists. When a task takes it, it is renamed after the task (`drydock-<task>-…`, as a
//! sandbox created for the task is named) and recorded as the task's container in the database,
//! which is the link the reaper, restart reconciliation, the kept-sandbox lookup and the previews
//! read. Restart reconciliation removes every sandbox of this instance but the kept ones it
//! adopts, so stale pooled sandboxes go too; shutdown removes the pool; each one also has a hard
//! deadline (the maximum age plus the longest a task's sandbox may live).
//!
//! Refilling runs in the background (one sandbox at a time, woken when a task takes one, and
//! every few seconds; each start waits for half a second without live output on this replica,
//! up to 30 s, so that no task's output stalls while Docker starts a sandbox): it replaces
//! pooled sandboxes older than the maximum age, those whose image is no longer what the image's
//! tag names (rebuilt, or the image service built it anew), and those no longer running. A take
//! checks the image too, so a task never starts on an old image.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use drydock_sandbox::{Sandbox, SandboxError, SandboxSpec, Sandboxes, Shape};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::TaskRunner;

/// How often the pool looks at itself when nothing woke it (age, image, liveness).
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long the refill waits after a task took a warm sandbox.
const REFILL_AFTER_TAKE: Duration = Duration::from_secs(2);
/// How long no log line may have been published on this replica before the pool starts a
/// sandbox: starting one (`docker create`, `start`, the readied execs) takes both cores of a
/// small machine for a moment, and live output streaming meanwhile stalls for it.
const LULL: Duration = Duration::from_millis(500);
/// The longest the pool waits for such a lull before it starts a sandbox anyway.
const LULL_WAIT_MAX: Duration = Duration::from_secs(30);
/// How long a take waits for a warm sandbox being started before creating its own.
const WAIT_FOR_STARTING: Duration = Duration::from_secs(10);
/// How long shutdown waits for the pool to be removed.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// The pool's state; lives in the runner.
pub(super) struct WarmPool {
    /// Sandboxes kept per shape (0: no pool).
    size: usize,
    /// How long a pooled sandbox waits for a task before it is replaced.
    max_age: Duration,
    /// The hard deadline of a pooled sandbox: the maximum age plus the longest a task's sandbox
    /// may live, so any task can take one that is not too old.
    deadline: Duration,
    state: Mutex<PoolState>,
    /// Wakes the refill loop (a task took a sandbox, or asked for a shape not kept yet).
    wake: Notify,
    /// Wakes takes waiting for a sandbox being started (one was added, or its start failed).
    made: Notify,
    /// The refill loop, awaited at shutdown (it removes the pool on its way out).
    refiller: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct PoolState {
    /// Ready sandboxes per shape key, oldest first.
    ready: HashMap<String, Vec<Warm>>,
    /// The shapes kept warm, with when a task last asked for each.
    wanted: HashMap<String, (Shape, Instant)>,
    /// The shape whose sandbox is being started, if any.
    starting: Option<String>,
}

/// A pooled sandbox and what decides whether it may still be taken.
struct Warm {
    sandbox: Sandbox,
    /// The image id it runs (`sha256:…`).
    image_id: String,
    made: Instant,
}

impl WarmPool {
    /// A pool of `size` per shape (none when 0) whose sandboxes wait at most `max_age`, for
    /// tasks whose sandboxes live at most `longest_task`.
    pub(super) fn new(size: usize, max_age: Duration, longest_task: Duration) -> Self {
        Self {
            size,
            max_age,
            deadline: max_age + CHECK_EVERY + longest_task,
            state: Mutex::new(PoolState::default()),
            wake: Notify::new(),
            made: Notify::new(),
            refiller: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `warm` can serve a task that needs its sandbox for `needed` on `image_id`.
    fn fits(&self, warm: &Warm, image_id: &str, needed: Duration) -> bool {
        let left = warm.sandbox.deadline_unix().map_or(Duration::MAX, |d| {
            Duration::from_secs(d.saturating_sub(unix_now()))
        });
        warm.image_id == image_id && warm.made.elapsed() < self.max_age && left > needed
    }
}

impl TaskRunner {
    /// Starts keeping the pool filled (after restart reconciliation, which removes what an
    /// earlier process left). Does nothing when the pool size is 0.
    pub(super) fn start_pool(&self) {
        let pool = &self.inner.pool;
        if pool.size == 0 {
            return;
        }
        let runner = self.clone();
        let refiller = tokio::spawn(
            async move {
                loop {
                    runner.refill().await;
                    tokio::select! {
                        () = runner.inner.shutdown.cancelled() => break,
                        // A task just took one: let its start (upload, exec) have Docker and the
                        // CPU first; a refill at the same moment slows it down.
                        () = runner.inner.pool.wake.notified() => {
                            tokio::select! {
                                () = runner.inner.shutdown.cancelled() => break,
                                () = tokio::time::sleep(REFILL_AFTER_TAKE) => {}
                            }
                        }
                        () = tokio::time::sleep(CHECK_EVERY) => {}
                    }
                }
                runner.drain_pool().await;
            }
            .instrument(tracing::info_span!("warm_pool")),
        );
        *pool.refiller.lock().unwrap_or_else(|e| e.into_inner()) = Some(refiller);
    }

    /// At shutdown: waits for the refill loop to remove every pooled sandbox.
    pub(super) async fn stop_pool(&self) {
        let refiller = self
            .inner
            .pool
            .refiller
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(refiller) = refiller
            && tokio::time::timeout(DRAIN_WAIT, refiller).await.is_err()
        {
            tracing::error!("the warm pool was not removed in time");
        }
    }

    /// Takes a pooled sandbox of `spec`'s shape for its task, when one is ready, runs the image
    /// the spec names now, and lives long enough; the pool then refills. `None` when there is
    /// none (the caller creates one), also when the pool is off.
    pub(super) async fn take_warm(
        &self,
        sandboxes: &Sandboxes,
        spec: &SandboxSpec,
    ) -> Option<Sandbox> {
        let pool = &self.inner.pool;
        // A container environment may hold something of a task (a repository's variables,
        // say): such shapes are never started ahead, so no warm sandbox ever holds it. The
        // network policy's proxy variables are the same for every task: those may.
        let shared = crate::egress::proxy_env();
        let task_env = spec.env.iter().any(|pair| !shared.contains(pair));
        if pool.size == 0 || self.inner.shutdown.is_cancelled() || task_env {
            return None;
        }
        let shape = spec.shape();
        let key = shape.key();
        pool.lock()
            .wanted
            .insert(key.clone(), (shape, Instant::now()));
        // A task asked for this shape: whatever happens below, the pool refills it.
        pool.wake.notify_one();
        let image_id = match sandboxes.image_id(&spec.image).await {
            Ok(Some(id)) => id,
            _ => return None,
        };
        loop {
            // Registered before looking, so a sandbox added meanwhile is not missed.
            let made = pool.made.notified();
            tokio::pin!(made);
            made.as_mut().enable();
            let (warm, starting) = {
                let mut state = pool.lock();
                let starting = state.starting.as_deref() == Some(key.as_str());
                let warm = state.ready.get_mut(&key).and_then(|ready| {
                    let at = ready
                        .iter()
                        .rposition(|w| pool.fits(w, &image_id, spec.deadline))?;
                    Some(ready.remove(at))
                });
                (warm, starting)
            };
            let Some(warm) = warm else {
                // One being started is further along than one created now: wait for it.
                if starting && tokio::time::timeout(WAIT_FOR_STARTING, made).await.is_ok() {
                    continue;
                }
                return None;
            };
            match warm
                .sandbox
                .clone()
                .claim(&spec.task_id, spec.deadline)
                .await
            {
                Ok(sandbox) => return Some(sandbox),
                Err(err) => {
                    tracing::warn!(error = %err, "a warm sandbox could not be taken; trying another");
                    let _ = warm.sandbox.remove().await;
                }
            }
        }
    }

    /// One pass: drops shapes no task asked for within the maximum age (but the operator's
    /// default), removes pooled sandboxes too old, on an old image or no longer running, and
    /// creates what is missing, one at a time.
    async fn refill(&self) {
        let pool = &self.inner.pool;
        if !self.inner.image.is_ready() {
            return;
        }
        let Ok(sandboxes) = self.sandboxes().await else {
            return;
        };
        // The shape most tasks ask for: the default environment under the operator's default
        // network policy.
        let mut default = sandboxes.spec("");
        if self.inner.egress.settings.bounds.default.is_some() {
            default = super::sandbox::under_policy(default, super::sandbox::SandboxRole::Agent);
        }
        let default = default.shape();
        let shapes: Vec<Shape> = {
            let mut state = pool.lock();
            state
                .wanted
                .entry(default.key())
                .or_insert_with(|| (default.clone(), Instant::now()))
                .1 = Instant::now();
            state
                .wanted
                .retain(|_, (_, asked)| asked.elapsed() < pool.max_age);
            state
                .wanted
                .values()
                .map(|(shape, _)| shape.clone())
                .collect()
        };
        // Sandboxes of shapes no longer wanted go.
        let unwanted: Vec<Warm> = {
            let mut state = pool.lock();
            let PoolState { ready, wanted, .. } = &mut *state;
            let keys: Vec<String> = ready
                .keys()
                .filter(|k| !wanted.contains_key(*k))
                .cloned()
                .collect();
            keys.iter()
                .filter_map(|k| ready.remove(k))
                .flatten()
                .collect()
        };
        remove_all(unwanted, "its shape is no longer asked for").await;
        for shape in shapes {
            if self.inner.shutdown.is_cancelled() {
                return;
            }
            self.refill_shape(&sandboxes, &shape).await;
        }
    }

    async fn refill_shape(&self, sandboxes: &Sandboxes, shape: &Shape) {
        let pool = &self.inner.pool;
        let key = shape.key();
        let image_id = match sandboxes.image_id(shape.image()).await {
            Ok(Some(id)) => id,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(error = %err, "warm pool: could not look at the image");
                return;
            }
        };
        // Looked at from a snapshot, so takes go on meanwhile; only what is still in the pool
        // afterwards is removed (a task may have taken one in between).
        let snapshot: Vec<(Sandbox, bool)> =
            pool.lock().ready.get(&key).map_or_else(Vec::new, |ready| {
                ready
                    .iter()
                    .map(|w| {
                        let usable = w.image_id == image_id && w.made.elapsed() < pool.max_age;
                        (w.sandbox.clone(), usable)
                    })
                    .collect()
            });
        let mut stale = Vec::new();
        for (sandbox, usable) in snapshot {
            if !usable || !sandbox.is_running().await.unwrap_or(false) {
                stale.push(sandbox.id().to_owned());
            }
        }
        let stale: Vec<Warm> = {
            let mut state = pool.lock();
            let ready = state.ready.entry(key.clone()).or_default();
            let (gone, kept): (Vec<Warm>, Vec<Warm>) = std::mem::take(ready)
                .into_iter()
                .partition(|w| stale.iter().any(|id| id == w.sandbox.id()));
            *ready = kept;
            gone
        };
        remove_all(
            stale,
            "it is too old, runs an image since replaced, or stopped",
        )
        .await;
        loop {
            if pool.lock().ready.get(&key).map_or(0, Vec::len) >= pool.size {
                return;
            }
            // Not marked as starting yet: a take meanwhile makes its own sandbox rather than
            // wait for this one.
            self.wait_for_lull().await;
            {
                let mut state = pool.lock();
                if state.ready.get(&key).map_or(0, Vec::len) >= pool.size {
                    return;
                }
                state.starting = Some(key.clone());
            }
            let made = self.start_warm(sandboxes, shape).await;
            let failed = made.is_none();
            {
                let mut state = pool.lock();
                state.starting = None;
                if let Some(warm) = made {
                    tracing::debug!(container_id = %warm.sandbox.id(), "warm sandbox ready");
                    state.ready.entry(key.clone()).or_default().push(warm);
                }
            }
            pool.made.notify_waiters();
            if failed || self.inner.shutdown.is_cancelled() {
                return;
            }
        }
    }

    /// Waits until no log line was published here for [`LULL`] (at most [`LULL_WAIT_MAX`], or
    /// until shutdown), so that starting a sandbox does not hold up a task's live output.
    async fn wait_for_lull(&self) {
        let give_up = Instant::now() + LULL_WAIT_MAX;
        loop {
            let quiet = self.inner.hub.quiet_for();
            if quiet >= LULL || Instant::now() >= give_up {
                return;
            }
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                () = tokio::time::sleep(LULL - quiet) => {}
            }
        }
    }

    /// Starts one sandbox of `shape` for the pool; `None` when it could not (logged) or the server
    /// is shutting down.
    async fn start_warm(&self, sandboxes: &Sandboxes, shape: &Shape) -> Option<Warm> {
        let made = match sandboxes
            .create_pooled(shape, self.inner.pool.deadline)
            .await
        {
            Ok(sandbox) => sandbox,
            Err(err) => {
                log_create_error(&err);
                return None;
            }
        };
        let image_id = made.image_id().await.unwrap_or_default();
        // The upload and the agent are a task's first execs: they are readied now, off the
        // task's path (see `Sandbox::ready_exec`).
        super::sandbox::ready_first_execs(&made).await;
        if self.inner.shutdown.is_cancelled() {
            let _ = made.remove().await;
            return None;
        }
        Some(Warm {
            sandbox: made,
            image_id,
            made: Instant::now(),
        })
    }

    /// Removes every pooled sandbox (at shutdown).
    async fn drain_pool(&self) {
        let all: Vec<Warm> = {
            let mut state = self.inner.pool.lock();
            state.ready.drain().flat_map(|(_, v)| v).collect()
        };
        remove_all(all, "the server is shutting down").await;
    }
}

async fn remove_all(warm: Vec<Warm>, why: &str) {
    for warm in warm {
        tracing::info!(container_id = %warm.sandbox.id(), why, "removing a warm sandbox");
        if let Err(err) = warm.sandbox.remove().await {
            tracing::warn!(error = %err, "could not remove a warm sandbox");
        }
    }
}

fn log_create_error(err: &SandboxError) {
    tracing::warn!(error = %err, "warm pool: could not start a sandbox; trying again later");
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
