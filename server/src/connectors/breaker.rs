//! The circuit breaker of remote connectors: after [`THRESHOLD`] consecutive failures to reach
//! a server, drydock leaves it alone for a back-off window that doubles with each further
//! failure (up to [`MAX_BACKOFF_MS`]), so a dead server costs one attempt per window instead of
//! a timeout on every test and task. The first attempt after a window is the probe that closes
//! the breaker again or reopens it for longer.

use super::mcp_client::ProbeError;
use super::oauth::OAuthError;
use crate::store::Connector;

/// Consecutive failures that open the breaker.
pub const THRESHOLD: i64 = 3;
/// The longest back-off, ms.
pub const MAX_BACKOFF_MS: i64 = 15 * 60 * 1000;

/// Whether a probe failure means the server is down or unreachable (as opposed to refusing
/// credentials or speaking something else, which retrying will not fix either, but which is
/// not slow).
pub fn is_outage(err: &ProbeError) -> bool {
    matches!(
        err,
        ProbeError::Dns { .. }
            | ProbeError::Connect { .. }
            | ProbeError::Tls { .. }
            | ProbeError::Timeout { .. }
            | ProbeError::Transport { .. }
    )
}

/// Whether an OAuth failure means the authorization server is down or unreachable.
pub fn is_oauth_outage(err: &OAuthError) -> bool {
    matches!(err, OAuthError::Unreachable(e) if is_outage(e))
}

/// Until when the connector is paused, if it is now.
pub fn paused(row: &Connector, now_ms: i64) -> Option<i64> {
    row.paused_until.filter(|until| *until > now_ms)
}

/// The pause after one more failure (`failures` counts the earlier ones): `None` below the
/// threshold, else `base_ms` doubled for each failure past it.
pub fn pause_after_failure(failures: i64, now_ms: i64, base_ms: i64) -> Option<i64> {
    let count = failures + 1;
    if count < THRESHOLD {
        return None;
    }
    let doublings = u32::try_from((count - THRESHOLD).min(20)).unwrap_or(20);
    let backoff = base_ms
        .saturating_mul(1_i64 << doublings)
        .min(MAX_BACKOFF_MS.max(base_ms));
    Some(now_ms.saturating_add(backoff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_at_the_threshold_and_backs_off_doubling() {
        assert_eq!(pause_after_failure(0, 1000, 30_000), None);
        assert_eq!(pause_after_failure(1, 1000, 30_000), None);
        assert_eq!(pause_after_failure(2, 1000, 30_000), Some(31_000));
        assert_eq!(pause_after_failure(3, 1000, 30_000), Some(61_000));
        assert_eq!(pause_after_failure(40, 0, 30_000), Some(MAX_BACKOFF_MS));
    }
}
