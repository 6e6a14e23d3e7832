//! Tasks: the HTTP API, the runner that executes them, and their live logs.

mod api;
mod git;
pub mod hub;
mod logs;
pub mod runner;
mod sse;

pub use api::{TaskView, check_quota, routes};
pub use hub::EventHub;
pub use runner::{RunnerSettings, TaskRunner};
