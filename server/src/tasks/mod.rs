//! Tasks: the HTTP API, the runner that executes them, and their live logs.

mod api;
mod git;
pub mod hub;
mod logs;
pub mod preview;
pub mod relay;
mod run;
mod sse;

pub use api::{
    CreateTask, Quota, TaskView, check_quota, continue_task, quota_of, routes, submit_task,
};
pub use hub::EventHub;
pub use logs::{LineSplitter, LogLine, LogSink};
pub use run::{RunnerServices, RunnerSettings, TaskRunner};
