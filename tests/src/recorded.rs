//! What the model-API stand-ins record of each request, so tests can check what a CLI sent
//! (its key, its tools, calls outside the API). Each stand-in adds its own predicates.

use axum::http::{HeaderMap, Method, Uri};
use serde_json::Value;

/// One request a stand-in received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// The status the stand-in answered.
    pub status: u16,
}

impl Recorded {
    /// The record of a request and the status it was answered with.
    pub fn of(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8], status: u16) -> Self {
        Recorded {
            method: method.to_string(),
            path: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_owned(), |p| p.to_string()),
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
            status,
        }
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
