//! Load generators: closed loops over kept-alive connections (as wrk does)
//! and many slow readers. The same code drives ota-server and nginx, so the
//! generator's own cost is the same on both sides of a comparison.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until};

use crate::http::Conn;
use crate::stats::{LatencySummary, new_histogram};

/// What a closed loop measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub requests: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub latency: LatencySummary,
    pub errors: BTreeMap<String, u64>,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    pub fn mib_per_second(&self) -> f64 {
        self.bytes as f64 / self.seconds / (1024.0 * 1024.0)
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// `connections` connections each send a request, read the whole answer and
/// send the next, for `warmup + measure`; only the `measure` part counts.
/// Connection `c` cycles through `requests` starting at `c`. An answer with
/// another status than `expect` is an error.
pub async fn closed_loop(
    addr: SocketAddr,
    requests: Arc<Vec<Vec<u8>>>,
    connections: usize,
    warmup: Duration,
    measure: Duration,
    expect: u16,
) -> LoadResult {
    let start = Instant::now() + warmup;
    let end = start + measure;
    let mut tasks = JoinSet::new();
    for c in 0..connections {
        let requests = Arc::clone(&requests);
        tasks.spawn(async move {
            let mut histogram = new_histogram();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let (mut count, mut bytes) = (0u64, 0u64);
            let mut conn: Option<Conn> = None;
            let mut i = c;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let mut live = match conn.take() {
                    Some(live) => live,
                    None => match Conn::connect(addr, None).await {
                        Ok(live) => live,
                        Err(e) => {
                            *errors.entry(format!("connect: {}", e.kind())).or_default() += 1;
                            sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let request = &requests[i % requests.len()];
                i += 1;
                let sent = Instant::now();
                let result = async {
                    let head = live.send(request).await?;
                    let len = live.discard_body().await?;
                    Ok::<_, std::io::Error>((head, len))
                }
                .await;
                let counted = sent >= start && sent < end;
                match result {
                    Ok((head, len)) => {
                        if counted {
                            if head.status == expect {
                                count += 1;
                                bytes += len;
                                histogram.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                            } else {
                                *errors.entry(format!("http {}", head.status)).or_default() += 1;
                            }
                        }
                        if live.reusable() {
                            conn = Some(live);
                        }
                    }
                    Err(e) => {
                        if counted {
                            *errors.entry(format!("io: {}", e.kind())).or_default() += 1;
                        }
                    }
                }
            }
            (count, bytes, histogram, errors)
        });
    }
    let mut total = LoadResult {
        requests: 0,
        bytes: 0,
        seconds: measure.as_secs_f64(),
        latency: LatencySummary::default(),
        errors: BTreeMap::new(),
    };
    let mut histogram: Histogram<u64> = new_histogram();
    while let Some(joined) = tasks.join_next().await {
        let (count, bytes, h, errors) = joined.expect("a load task does not panic");
        total.requests += count;
        total.bytes += bytes;
        let _ = histogram.add(&h);
        for (kind, n) in errors {
            *total.errors.entry(kind).or_default() += n;
        }
    }
    total.latency = LatencySummary::of(&histogram);
    total
}

/// What the slow readers measured.
#[derive(Debug, Clone, Default)]
pub struct SlowResult {
    /// The most downloads in flight at once.
    pub peak_in_flight: u64,
    pub bytes: u64,
    pub errors: BTreeMap<String, u64>,
    /// The largest resident memory of the measured process seen.
    pub peak_rss: u64,
}

/// `readers` devices each fetch `piece`-byte ranges of `path` at `rate`
/// bytes/s over one kept-alive connection with a small receive window,
/// connecting over `ramp`, then holding for `hold`. `rss` is sampled every
/// 250 ms throughout.
#[allow(clippy::too_many_arguments)]
pub async fn slow_readers(
    addr: SocketAddr,
    requests: Arc<Vec<Vec<u8>>>,
    readers: usize,
    rate: u64,
    ramp: Duration,
    hold: Duration,
    rss: impl Fn() -> u64,
) -> SlowResult {
    let in_flight = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let end = started + ramp + hold;
    let mut tasks = JoinSet::new();
    for r in 0..readers {
        let (in_flight, bytes, stop, requests) = (
            Arc::clone(&in_flight),
            Arc::clone(&bytes),
            Arc::clone(&stop),
            Arc::clone(&requests),
        );
        let begin = started + ramp.mul_f64(r as f64 / readers as f64);
        tasks.spawn(async move {
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            sleep_until(begin).await;
            let mut conn = match Conn::connect(addr, Some(8 * 1024)).await {
                Ok(conn) => conn,
                Err(e) => {
                    *errors.entry(format!("connect: {}", e.kind())).or_default() += 1;
                    return errors;
                }
            };
            in_flight.fetch_add(1, Ordering::Relaxed);
            let paced_from = Instant::now();
            let mut got = 0u64;
            let mut i = r;
            'pieces: while !stop.load(Ordering::Relaxed) {
                let request = &requests[i % requests.len()];
                i += 1;
                let head = match conn.send(request).await {
                    Ok(head) if head.status == 206 || head.status == 200 => head,
                    Ok(head) => {
                        *errors.entry(format!("http {}", head.status)).or_default() += 1;
                        break;
                    }
                    Err(e) => {
                        *errors.entry(format!("io: {}", e.kind())).or_default() += 1;
                        break;
                    }
                };
                let _ = head;
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break 'pieces;
                    }
                    match conn.body_chunk(4096).await {
                        Ok(chunk) if chunk.is_empty() => break,
                        Ok(chunk) => {
                            got += chunk.len() as u64;
                            bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            let due = paced_from + Duration::from_secs_f64(got as f64 / rate as f64);
                            sleep_until(due.min(end)).await;
                        }
                        Err(e) => {
                            *errors.entry(format!("io: {}", e.kind())).or_default() += 1;
                            break 'pieces;
                        }
                    }
                }
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
            errors
        });
    }
    let mut result = SlowResult::default();
    while Instant::now() < end {
        result.peak_rss = result.peak_rss.max(rss());
        result.peak_in_flight = result.peak_in_flight.max(in_flight.load(Ordering::Relaxed));
        sleep(Duration::from_millis(250)).await;
    }
    result.peak_rss = result.peak_rss.max(rss());
    result.peak_in_flight = result.peak_in_flight.max(in_flight.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    while let Some(joined) = tasks.join_next().await {
        for (kind, n) in joined.expect("a reader does not panic") {
            *result.errors.entry(kind).or_default() += n;
        }
    }
    result.bytes = bytes.load(Ordering::Relaxed);
    result
}
