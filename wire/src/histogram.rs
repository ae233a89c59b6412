use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A histogram of durations with power-of-two buckets, as recorded by the agent's poll hooks.
///
/// **Layout.** Bucket 0 holds values below 1,024 ns (about 1 µs). Bucket `i` (for `0 < i < len - 1`) holds
/// values in `[2^(9+i), 2^(10+i))` ns. The last bucket is open-ended. With 22 buckets (per task and per
/// location, [`TASK_HISTOGRAM_BUCKETS`]) the last one starts at about 1.07 s; with 24 buckets (per worker) at
/// about 4.3 s. Every histogram carries its own bucket count, and readers take the layout from it: per-task
/// histograms from agents before issue 14 item 5 (and recordings of them) have 16 buckets, the last one
/// starting at about 16.8 ms.
///
/// Power-of-two buckets let the hot path find a bucket with one `leading_zeros` instruction, and keep the
/// per-task footprint small. The price is resolution: a quantile is only known to within a factor of two, so
/// [`LogHistogram::quantile`] returns the upper bound of the bucket that holds it (a conservative answer).
///
/// # Examples
/// ```
/// use loopscope_wire::LogHistogram;
/// use std::time::Duration;
///
/// let mut h = LogHistogram::new(16);
/// for _ in 0..99 {
///     h.record(Duration::from_micros(3));
/// }
/// h.record(Duration::from_millis(5));
/// assert_eq!(h.count(), 100);
/// // p50 lies in the [2.048 µs, 4.096 µs) bucket.
/// assert_eq!(h.quantile(0.5), Some(Duration::from_nanos(4096)));
/// // The slowest poll lies in [4.19 ms, 8.39 ms).
/// assert_eq!(h.quantile(1.0), Some(Duration::from_nanos(1 << 23)));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogHistogram {
    /// Count per bucket; see the type docs for the layout.
    pub counts: Vec<u64>,
}

/// Buckets of the agent's per-task and per-location poll histograms (and of the runtime-wide one built from
/// them): the last starts at 2^30 ns, about 1.07 s.
pub const TASK_HISTOGRAM_BUCKETS: usize = 22;

/// log2 of the upper bound of bucket 0, in nanoseconds.
const BASE_LOG2: u32 = 10;

impl LogHistogram {
    /// An empty histogram with `buckets` buckets (at least 2).
    pub fn new(buckets: usize) -> Self {
        LogHistogram { counts: vec![0; buckets.max(2)] }
    }

    /// The bucket index a value of `nanos` falls in, for a histogram with `buckets` buckets.
    ///
    /// This is the same computation the agent's hot path uses.
    ///
    /// ```
    /// use loopscope_wire::LogHistogram;
    /// assert_eq!(LogHistogram::bucket_index(0, 16), 0);
    /// assert_eq!(LogHistogram::bucket_index(1023, 16), 0);
    /// assert_eq!(LogHistogram::bucket_index(1024, 16), 1);
    /// assert_eq!(LogHistogram::bucket_index(u64::MAX, 16), 15);
    /// ```
    #[inline]
    pub const fn bucket_index(nanos: u64, buckets: usize) -> usize {
        let idx = (64 - (nanos >> BASE_LOG2).leading_zeros()) as usize;
        if idx >= buckets { buckets - 1 } else { idx }
    }

    /// The range of durations bucket `i` holds. The last bucket's end is `None` (open-ended).
    pub fn bucket_range(&self, i: usize) -> (Duration, Option<Duration>) {
        Self::range_of(i, self.counts.len())
    }

    fn range_of(i: usize, len: usize) -> (Duration, Option<Duration>) {
        let lo = if i == 0 { 0 } else { 1u64 << (BASE_LOG2 + i as u32 - 1) };
        let hi = if i + 1 >= len { None } else { Some(Duration::from_nanos(1u64 << (BASE_LOG2 + i as u32))) };
        (Duration::from_nanos(lo), hi)
    }

    /// Adds one value.
    pub fn record(&mut self, d: Duration) {
        let n = self.counts.len();
        if n == 0 {
            return;
        }
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::bucket_index(nanos, n)] += 1;
    }

    /// The number of values recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s counts into `self`. When the two have different lengths, the shorter one's last
    /// (open-ended) bucket is folded into the matching bucket of the longer, so no value is lost.
    pub fn merge(&mut self, other: &LogHistogram) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        let last = self.counts.len().saturating_sub(1);
        for (i, c) in other.counts.iter().enumerate() {
            self.counts[i.min(last)] += c;
        }
    }

    /// The counts recorded since `prev` (bucket-wise, wrapping, so counters that wrapped still give the
    /// right difference).
    pub fn delta(&self, prev: &LogHistogram) -> LogHistogram {
        let counts = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| c.wrapping_sub(prev.counts.get(i).copied().unwrap_or(0)))
            .collect();
        LogHistogram { counts }
    }

    /// The upper bound of the bucket holding quantile `q` (0.0..=1.0), or `None` when empty. For the
    /// open-ended last bucket this returns its lower bound times two, as the best bounded guess; use the
    /// separately tracked maximum where you have one.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = self.bucket_range(i);
                return Some(hi.unwrap_or(lo * 2));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_tile_the_line() {
        let h = LogHistogram::new(16);
        let mut prev_end = Duration::ZERO;
        for i in 0..16 {
            let (lo, hi) = h.bucket_range(i);
            assert_eq!(lo, prev_end, "bucket {i}");
            match hi {
                Some(hi) => prev_end = hi,
                None => assert_eq!(i, 15),
            }
        }
    }

    #[test]
    fn index_matches_ranges() {
        for buckets in [16usize, 24] {
            let h = LogHistogram::new(buckets);
            for i in 0..buckets {
                let (lo, hi) = h.bucket_range(i);
                assert_eq!(LogHistogram::bucket_index(lo.as_nanos() as u64, buckets), i);
                if let Some(hi) = hi {
                    assert_eq!(LogHistogram::bucket_index(hi.as_nanos() as u64 - 1, buckets), i);
                }
            }
        }
    }

    #[test]
    fn merge_folds_tail() {
        let mut a = LogHistogram::new(4);
        let mut b = LogHistogram::new(6);
        b.counts[5] = 3;
        b.counts[1] = 1;
        a.merge(&b);
        assert_eq!(a.counts.len(), 6);
        assert_eq!(a.count(), 4);
        let mut c = LogHistogram::new(4);
        c.merge(&LogHistogram { counts: vec![0, 0, 0, 0, 0, 7] });
        assert_eq!(c.counts, vec![0, 0, 0, 0, 0, 7]);
        let mut d = LogHistogram::new(6);
        d.merge(&LogHistogram { counts: vec![1, 1, 1, 9] });
        assert_eq!(d.counts, vec![1, 1, 1, 9, 0, 0]);
    }

    #[test]
    fn quantiles() {
        let mut h = LogHistogram::new(16);
        assert_eq!(h.quantile(0.99), None);
        for _ in 0..990 {
            h.record(Duration::from_nanos(500));
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(100));
        }
        assert_eq!(h.quantile(0.5), Some(Duration::from_nanos(1024)));
        assert_eq!(h.quantile(0.99), Some(Duration::from_nanos(1024)));
        // 100 ms is in the open last bucket (>= 2^24 ns).
        assert_eq!(h.quantile(0.999), Some(Duration::from_nanos(1 << 25)));
    }
}
