//! Support code for drydock's end-to-end tests: throwaway databases on both backends and a
//! running server on `127.0.0.1:0`.

pub mod anthropic;
pub mod app;
pub mod browser;
pub mod db;
pub mod gemini;
pub mod git_http;
pub mod github;
pub mod hunt;
pub mod kubernetes;
pub mod oauth_mcp;
pub mod openai;
pub mod real_agent;
pub mod recorded;
pub mod replicas;
pub mod server;
pub mod sse;
pub mod stats;
pub mod tasks;
pub mod triggers;

pub use app::App;
pub use db::TestDb;
pub use github::GithubStandIn;
pub use server::TestServer;

/// Runs an async test body once per database backend (`sqlite` and `postgres` modules).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::TestDb::sqlite().await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::TestDb::postgres().await).await
                }
            )*
        }
    };
}
