//! Small statistics for the benchmarks in `tests/benches`: percentiles, medians, markdown rows.

/// The `p`-th percentile (nearest rank) of sorted values; NaN when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The median of unsorted values.
pub fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    percentile(&xs, 50.0)
}

/// A markdown row: what, count, p50, p90, p99, min, max.
pub fn stats_row(what: &str, xs: &[f64]) -> String {
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    format!(
        "| {what} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
        s.len(),
        percentile(&s, 50.0),
        percentile(&s, 90.0),
        percentile(&s, 99.0),
        s.first().copied().unwrap_or(f64::NAN),
        s.last().copied().unwrap_or(f64::NAN),
    )
}

/// A number from the environment, or `default`.
pub fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `main` of a `harness = false` bench: runs `bench` on a two-thread runtime only when
/// benchmarking (`cargo test --benches` runs the binary without `--bench`), prints its markdown
/// summary and writes it to `DRYDOCK_BENCH_OUT` when set.
pub fn bench_main<F: std::future::Future<Output = String>>(bench: impl FnOnce() -> F) {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let summary = runtime.block_on(bench());
    println!("{summary}");
    if let Ok(path) = std::env::var("DRYDOCK_BENCH_OUT") {
        std::fs::write(&path, &summary).expect("write DRYDOCK_BENCH_OUT");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let xs = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&xs, 50.0), 3.0);
        assert_eq!(percentile(&xs, 99.0), 5.0);
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
