//! Latency and throughput bookkeeping: one HDR histogram of batch latency
//! for the whole run, and per second of the run (by acknowledgement time)
//! the transfers committed, the batches acknowledged and their own
//! histogram, plus the processes' resident memory sampled each second.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The longest latency recorded exactly (longer ones count as this): an hour.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Significant figures of the run's histogram.
const SIGFIG_RUN: u8 = 3;
/// Significant figures of each second's histogram (smaller: one per second).
const SIGFIG_SECOND: u8 = 2;
/// Seconds tracked one by one; later ones add to the last (a day).
pub const SECONDS_MAX: usize = 86_400;

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, sigfig).expect("constant bounds 1..=1h with 2-3 sigfig are valid")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX).clamp(1, LATENCY_US_MAX)
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1_000.0
}

/// Batch latency percentiles, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Batches measured.
    pub batches: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p99_9_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let at = |quantile| ms(histogram.value_at_quantile(quantile));
        Self {
            batches: histogram.len(),
            mean_ms: histogram.mean() / 1_000.0,
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            p99_9_ms: at(0.999),
            max_ms: ms(histogram.max()),
        }
    }
}

/// One second of the run.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct SecondSummary {
    /// Seconds since the load started (this second is `[second, second + 1)`).
    pub second: u64,
    /// Transfers committed (acknowledged as successful) in this second.
    pub transfers: u64,
    /// Batches acknowledged in this second.
    pub batches: u64,
    /// p99 latency of those batches (`None`: none acknowledged).
    pub p99_ms: Option<f64>,
    /// The slowest of those batches.
    pub max_ms: Option<f64>,
    /// Resident memory of each reported process at this second, in KiB
    /// (the order of the report's processes; `None`: not sampled).
    pub rss_kib: Vec<Option<u64>>,
}

#[derive(Clone, Debug)]
struct Second {
    transfers: u64,
    latency: Histogram<u64>,
    rss_kib: Vec<Option<u64>>,
}

/// Records batches as they are acknowledged.
#[derive(Clone, Debug)]
pub struct Recorder {
    run: Histogram<u64>,
    seconds: Vec<Second>,
    committed: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self { run: histogram(SIGFIG_RUN), seconds: Vec::new(), committed: 0 }
    }

    fn second(&mut self, at: Duration) -> &mut Second {
        let index = (at.as_secs() as usize).min(SECONDS_MAX - 1);
        while self.seconds.len() <= index {
            self.seconds.push(Second { transfers: 0, latency: histogram(SIGFIG_SECOND), rss_kib: Vec::new() });
        }
        &mut self.seconds[index]
    }

    /// A batch acknowledged `at` after the load started, `latency` after it
    /// was sent (or scheduled), with `committed` transfers committed.
    pub fn record(&mut self, at: Duration, latency: Duration, committed: u64) {
        let micros = micros(latency);
        self.run.saturating_record(micros);
        self.committed += committed;
        let second = self.second(at);
        second.transfers += committed;
        second.latency.saturating_record(micros);
    }

    /// The processes' resident memory sampled `at` after the load started.
    pub fn record_rss(&mut self, at: Duration, rss_kib: Vec<Option<u64>>) {
        self.second(at).rss_kib = rss_kib;
    }

    /// Transfers committed so far.
    pub const fn committed(&self) -> u64 {
        self.committed
    }

    /// The whole run's percentiles.
    pub fn percentiles(&self) -> Percentiles {
        Percentiles::of(&self.run)
    }

    /// Every second from the first to the last one a batch was answered in
    /// (a memory sample after the last answer adds no second).
    pub fn per_second(&self) -> Vec<SecondSummary> {
        let answered = self.seconds.iter().rposition(|second| !second.latency.is_empty()).map_or(0, |last| last + 1);
        self.seconds[..answered]
            .iter()
            .enumerate()
            .map(|(index, second)| {
                let some = !second.latency.is_empty();
                SecondSummary {
                    second: index as u64,
                    transfers: second.transfers,
                    batches: second.latency.len(),
                    p99_ms: some.then(|| ms(second.latency.value_at_quantile(0.99))),
                    max_ms: some.then(|| ms(second.latency.max())),
                    rss_kib: second.rss_kib.clone(),
                }
            })
            .collect()
    }
}

/// Transfers per second over `elapsed` (0 for an empty interval).
pub fn throughput(transfers: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        transfers as f64 / seconds
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut recorder = Recorder::new();
        // 1..=1000 ms, one batch each, all in second 0.
        for ms in 1..=1_000 {
            recorder.record(Duration::from_millis(500), Duration::from_millis(ms), 10);
        }
        let p = recorder.percentiles();
        assert_eq!(p.batches, 1_000);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.002 + 0.01;
        assert!(close(p.p50_ms, 500.0), "{p:?}");
        assert!(close(p.p90_ms, 900.0), "{p:?}");
        assert!(close(p.p99_ms, 990.0), "{p:?}");
        assert!(close(p.p99_9_ms, 999.0), "{p:?}");
        assert!(close(p.max_ms, 1_000.0), "{p:?}");
        assert!(close(p.mean_ms, 500.5), "{p:?}");
        assert_eq!(recorder.committed(), 10_000);
    }

    #[test]
    fn seconds_are_bucketed_by_acknowledgement_time_with_gaps_filled() {
        let mut recorder = Recorder::new();
        recorder.record(Duration::from_millis(100), Duration::from_millis(5), 100);
        recorder.record(Duration::from_millis(900), Duration::from_millis(50), 100);
        recorder.record(Duration::from_millis(2_500), Duration::from_millis(7), 30);
        recorder.record_rss(Duration::from_millis(2_000), vec![Some(1_024), None]);
        recorder.record_rss(Duration::from_millis(3_000), vec![Some(2_048), None]);
        let seconds = recorder.per_second();
        assert_eq!(seconds.len(), 3);
        assert_eq!((seconds[0].transfers, seconds[0].batches), (200, 2));
        assert!((seconds[0].p99_ms.unwrap() - 50.0).abs() < 0.5);
        assert_eq!((seconds[1].transfers, seconds[1].p99_ms), (0, None));
        assert_eq!(seconds[2].transfers, 30);
        assert_eq!(seconds[2].rss_kib, vec![Some(1_024), None]);
    }

    #[test]
    fn an_empty_run_has_zero_percentiles_and_throughput() {
        assert_eq!(Recorder::new().percentiles(), Percentiles::default());
        assert_eq!(throughput(0, Duration::ZERO), 0.0);
        assert_eq!(throughput(1_000, Duration::from_millis(500)), 2_000.0);
    }

    #[test]
    fn absurd_latencies_are_clamped_not_lost() {
        let mut recorder = Recorder::new();
        recorder.record(Duration::ZERO, Duration::from_secs(10 * 3_600), 1);
        recorder.record(Duration::ZERO, Duration::ZERO, 1);
        assert_eq!(recorder.percentiles().batches, 2);
        assert!(recorder.percentiles().max_ms >= 3_599_000.0);
    }
}
