//! Process-wide counters for the Prometheus `/metrics` endpoint.
//!
//! A fixed set of atomics: no registry object to pass around, no lock on the hot path. The
//! daemons call [`inc`], [`set`] and [`observe_delivery_latency`]; the HTTP listener renders
//! everything with [`render`]. Open connections are not counted here: the listener reads them
//! from the connection limiters at scrape time. See /work/notes/METRICS_API.md.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::config::Service;

/// Monotonic counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// A message accepted for delivery (SMTP 250 after DATA, LMTP, `hermod deliver`): once per
    /// message.
    MessagesReceived,
    /// A recipient's copy delivered: filed into a local mailbox or accepted by a remote MX.
    MessagesDelivered,
    /// A recipient's copy given up on: a permanent failure or the queue lifetime ran out.
    MessagesBounced,
    /// A recipient's delivery attempt failed temporarily and was rescheduled.
    MessagesDeferred,
    /// A failed login (wrong login, wrong password, disabled account), any service.
    AuthFailures,
}

impl Counter {
    const ALL: [Counter; 5] = [
        Counter::MessagesReceived,
        Counter::MessagesDelivered,
        Counter::MessagesBounced,
        Counter::MessagesDeferred,
        Counter::AuthFailures,
    ];

    fn describe(self) -> (&'static str, &'static str) {
        match self {
            Counter::MessagesReceived => (
                "hermod_messages_received_total",
                "Messages accepted for delivery.",
            ),
            Counter::MessagesDelivered => (
                "hermod_messages_delivered_total",
                "Recipient copies delivered (local mailbox or remote MX).",
            ),
            Counter::MessagesBounced => (
                "hermod_messages_bounced_total",
                "Recipient copies that failed permanently.",
            ),
            Counter::MessagesDeferred => (
                "hermod_messages_deferred_total",
                "Delivery attempts that failed temporarily.",
            ),
            Counter::AuthFailures => ("hermod_auth_failures_total", "Failed logins."),
        }
    }
}

/// Values that go up and down, set by their owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gauge {
    /// Messages waiting in the outbound queue (the MTA sets it after each queue change).
    QueueSize,
}

impl Gauge {
    const ALL: [Gauge; 1] = [Gauge::QueueSize];

    fn describe(self) -> (&'static str, &'static str) {
        match self {
            Gauge::QueueSize => ("hermod_queue_size", "Messages in the outbound queue."),
        }
    }
}

static COUNTERS: [AtomicU64; Counter::ALL.len()] =
    [const { AtomicU64::new(0) }; Counter::ALL.len()];
static GAUGES: [AtomicI64; Gauge::ALL.len()] = [const { AtomicI64::new(0) }; Gauge::ALL.len()];
static CONNECTIONS: [AtomicU64; Service::ALL.len()] =
    [const { AtomicU64::new(0) }; Service::ALL.len()];

/// Upper bounds (seconds) of the delivery latency buckets: from an in-process local delivery
/// to a message that waited a day in the queue.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
];

/// Per-bucket (not cumulative) counts; the last slot is +Inf.
static LATENCY: [AtomicU64; LATENCY_BUCKETS.len() + 1] =
    [const { AtomicU64::new(0) }; LATENCY_BUCKETS.len() + 1];
static LATENCY_COUNT: AtomicU64 = AtomicU64::new(0);
/// Sum in microseconds: an integer keeps the update a single atomic add.
static LATENCY_SUM_MICROS: AtomicU64 = AtomicU64::new(0);

/// `Counter::ALL` lists the variants in declaration order, so the discriminant is the slot.
fn counter_index(c: Counter) -> usize {
    c as usize
}

fn service_index(s: Service) -> usize {
    Service::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

/// Add one to a counter.
pub fn inc(counter: Counter) {
    add(counter, 1);
}

/// Add `n` to a counter (e.g. recipients delivered in one LMTP transaction).
pub fn add(counter: Counter, n: u64) {
    COUNTERS[counter_index(counter)].fetch_add(n, Ordering::Relaxed);
}

/// The current value of a counter.
pub fn get(counter: Counter) -> u64 {
    COUNTERS[counter_index(counter)].load(Ordering::Relaxed)
}

/// Set a gauge.
pub fn set(gauge: Gauge, value: i64) {
    GAUGES[gauge as usize].store(value, Ordering::Relaxed);
}

/// The current value of a gauge.
pub fn gauge(gauge: Gauge) -> i64 {
    GAUGES[gauge as usize].load(Ordering::Relaxed)
}

/// Count an accepted connection of a service (the accept loop calls this).
pub fn connection_accepted(service: Service) {
    CONNECTIONS[service_index(service)].fetch_add(1, Ordering::Relaxed);
}

/// Record how long a recipient's copy took from acceptance to delivery, in seconds.
/// Negative and NaN values count as zero.
pub fn observe_delivery_latency(secs: f64) {
    let secs = if secs.is_finite() && secs > 0.0 {
        secs
    } else {
        0.0
    };
    let bucket = LATENCY_BUCKETS
        .iter()
        .position(|le| secs <= *le)
        .unwrap_or(LATENCY_BUCKETS.len());
    LATENCY[bucket].fetch_add(1, Ordering::Relaxed);
    // `as` saturates for huge values, which is what a sum should do.
    LATENCY_SUM_MICROS.fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    LATENCY_COUNT.fetch_add(1, Ordering::Relaxed);
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Everything in the Prometheus text exposition format 0.0.4. `open_connections` gives the
/// open connections of a service right now (from `Context::open_connections`).
pub fn render(open_connections: impl Fn(Service) -> usize) -> String {
    let mut out = String::with_capacity(4096);
    header(
        &mut out,
        "hermod_connections_open",
        "Open client connections.",
        "gauge",
    );
    for s in Service::ALL {
        let _ = writeln!(
            out,
            "hermod_connections_open{{service=\"{}\"}} {}",
            s.name(),
            open_connections(s)
        );
    }
    header(
        &mut out,
        "hermod_connections_total",
        "Client connections accepted.",
        "counter",
    );
    for s in Service::ALL {
        let _ = writeln!(
            out,
            "hermod_connections_total{{service=\"{}\"}} {}",
            s.name(),
            CONNECTIONS[service_index(s)].load(Ordering::Relaxed)
        );
    }
    for c in Counter::ALL {
        let (name, help) = c.describe();
        header(&mut out, name, help, "counter");
        let _ = writeln!(out, "{name} {}", get(c));
    }
    for g in Gauge::ALL {
        let (name, help) = g.describe();
        header(&mut out, name, help, "gauge");
        let _ = writeln!(out, "{name} {}", gauge(g));
    }
    let name = "hermod_delivery_latency_seconds";
    header(
        &mut out,
        name,
        "Time from acceptance to delivery of a recipient's copy.",
        "histogram",
    );
    let mut cumulative = 0u64;
    for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
        cumulative += LATENCY[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    cumulative += LATENCY[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let sum = LATENCY_SUM_MICROS.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum {sum}");
    // The count is the +Inf bucket, so the two always agree within one scrape.
    let _ = writeln!(out, "{name}_count {cumulative}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the first sample line starting with `prefix` (tests share the globals,
    /// so they compare before and after instead of absolute values).
    fn sample(text: &str, prefix: &str) -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sample {prefix} in\n{text}"))
    }

    #[test]
    fn counters_move_and_render() {
        let before = render(|_| 0);
        inc(Counter::MessagesDelivered);
        add(Counter::MessagesReceived, 2);
        inc(Counter::MessagesBounced);
        inc(Counter::MessagesDeferred);
        connection_accepted(Service::Imaps);
        let after = render(|s| if s == Service::Smtp { 7 } else { 0 });
        for (name, delta) in [
            ("hermod_messages_delivered_total", 1.0),
            ("hermod_messages_received_total", 2.0),
            ("hermod_messages_bounced_total", 1.0),
            ("hermod_messages_deferred_total", 1.0),
            ("hermod_connections_total{service=\"imaps\"}", 1.0),
        ] {
            assert!(
                sample(&after, name) - sample(&before, name) >= delta,
                "{name} did not move"
            );
        }
        assert_eq!(
            sample(&after, "hermod_connections_open{service=\"smtp\"}"),
            7.0
        );
    }

    #[test]
    fn queue_gauge_is_set() {
        set(Gauge::QueueSize, 42);
        assert_eq!(sample(&render(|_| 0), "hermod_queue_size"), 42.0);
        set(Gauge::QueueSize, 0);
    }

    #[test]
    fn histogram_is_cumulative_and_consistent() {
        let before = render(|_| 0);
        observe_delivery_latency(0.2);
        observe_delivery_latency(7200.0);
        observe_delivery_latency(1e9);
        observe_delivery_latency(f64::NAN);
        let after = render(|_| 0);
        let d = |p: &str| sample(&after, p) - sample(&before, p);
        let b = "hermod_delivery_latency_seconds_bucket";
        assert!(d(&format!("{b}{{le=\"0.05\"}}")) >= 1.0, "NaN counts as 0");
        assert!(d(&format!("{b}{{le=\"0.25\"}}")) >= 2.0);
        assert!(d(&format!("{b}{{le=\"14400\"}}")) >= 3.0);
        assert!(d(&format!("{b}{{le=\"+Inf\"}}")) >= 4.0);
        assert!(d("hermod_delivery_latency_seconds_sum") >= 1e9);
        // Buckets never decrease along `le`, and +Inf equals the count.
        let mut last = 0.0;
        for line in after.lines().filter(|l| l.starts_with(b)) {
            let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(v >= last, "{line}");
            last = v;
        }
        assert_eq!(
            last,
            sample(&after, "hermod_delivery_latency_seconds_count")
        );
    }

    #[test]
    fn every_sample_has_help_and_type() {
        let text = render(|_| 0);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {family} "))
                    || text.contains(&format!("# TYPE {name} ")),
                "no TYPE for {line}"
            );
        }
    }
}
