//! Numbers for the dashboard: per prompt name and version, event volume and mean
//! `satisfaction` score per time bucket; per queue, reviews and completed items per
//! bucket. Computed by scanning the store (events by time, the queue audit trail),
//! which is fine at today's sizes and the one place to add rollups when it is not.
//! It only reads.

use std::collections::BTreeMap;

use flywheel_model::EventRecord;
use flywheel_store::{AuditAction, AuditEntry, EventFilter, Store, StoreError};
use serde::Serialize;

/// The score averaged as "satisfaction" (the `satisfaction` example scorer's name).
pub const SATISFACTION: &str = "satisfaction";

/// The time range of a report: `buckets` buckets of `bucket_ms` from `from_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from_ms: u64,
    pub bucket_ms: u64,
    pub buckets: usize,
}

impl Window {
    /// The `count` whole buckets that end with the one holding `now`.
    pub fn ending_at(now: u64, bucket_ms: u64, count: usize) -> Self {
        let bucket_ms = bucket_ms.max(1);
        let last = now / bucket_ms * bucket_ms;
        Window {
            from_ms: last.saturating_sub(bucket_ms * (count.max(1) as u64 - 1)),
            bucket_ms,
            buckets: count.max(1),
        }
    }

    pub fn to_ms(&self) -> u64 {
        self.from_ms + self.bucket_ms * self.buckets as u64
    }

    fn index(&self, at: u64) -> Option<usize> {
        let i = usize::try_from(at.checked_sub(self.from_ms)? / self.bucket_ms).ok()?;
        (i < self.buckets).then_some(i)
    }

    fn starts(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.buckets as u64).map(|i| self.from_ms + i * self.bucket_ms)
    }
}

/// Everything the dashboard draws.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub from: u64,
    pub to: u64,
    pub bucket_ms: u64,
    pub prompts: Vec<PromptSeries>,
    pub queues: Vec<QueueSeries>,
}

/// One prompt version over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptSeries {
    pub name: String,
    pub version: String,
    pub events: u64,
    /// Mean satisfaction over the window, where scored.
    pub satisfaction: Option<f64>,
    pub buckets: Vec<PromptBucket>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptBucket {
    pub start: u64,
    pub events: u64,
    /// Events with a satisfaction score.
    pub scored: u64,
    pub satisfaction: Option<f64>,
}

/// One queue's throughput over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueSeries {
    pub queue: String,
    pub reviews: u64,
    pub completed: u64,
    pub buckets: Vec<QueueBucket>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueBucket {
    pub start: u64,
    pub reviews: u64,
    pub completed: u64,
}

/// Reads the window's events and audit trail from the store, one at a time, and sums
/// them up.
pub fn compute(store: &Store, window: Window) -> Result<Stats, StoreError> {
    let filter = EventFilter {
        from_ms: Some(window.from_ms),
        to_ms: Some(window.to_ms()),
        ..EventFilter::default()
    };
    let mut tally = Tally::new(window);
    for record in store.scan(&filter) {
        tally.event(&record?);
    }
    for entry in store.queue_audit_between(window.from_ms, window.to_ms())? {
        tally.audit(&entry?);
    }
    Ok(tally.finish())
}

/// Per-bucket sums for one prompt version.
struct PromptSums {
    events: Vec<u64>,
    scored: Vec<u64>,
    total: Vec<f64>,
}

/// Running sums over a window; events without a prompt are left out of the prompt series.
pub struct Tally {
    window: Window,
    prompts: BTreeMap<(String, String), PromptSums>,
    /// Reviews and completions per bucket, per queue.
    queues: BTreeMap<String, (Vec<u64>, Vec<u64>)>,
}

fn mean(total: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| total / n as f64)
}

impl Tally {
    pub fn new(window: Window) -> Self {
        Tally {
            window,
            prompts: BTreeMap::new(),
            queues: BTreeMap::new(),
        }
    }

    pub fn event(&mut self, r: &EventRecord) {
        let (Some(prompt), Some(i)) = (&r.event.prompt, self.window.index(r.event.received_at))
        else {
            return;
        };
        let n = self.window.buckets;
        let sums = self
            .prompts
            .entry((prompt.name.clone(), prompt.version.clone()))
            .or_insert_with(|| PromptSums {
                events: vec![0; n],
                scored: vec![0; n],
                total: vec![0.0; n],
            });
        sums.events[i] += 1;
        let score = r.outcome.as_ref().and_then(|o| {
            o.scores
                .iter()
                .find(|s| s.score.name == SATISFACTION)
                .map(|s| s.score.value)
        });
        if let Some(v) = score {
            sums.scored[i] += 1;
            sums.total[i] += v;
        }
    }

    pub fn audit(&mut self, a: &AuditEntry) {
        let Some(i) = self.window.index(a.at) else {
            return;
        };
        let n = self.window.buckets;
        let (reviews, completed) = self
            .queues
            .entry(a.queue.clone())
            .or_insert_with(|| (vec![0; n], vec![0; n]));
        match a.action {
            AuditAction::Reviewed => reviews[i] += 1,
            AuditAction::Completed => completed[i] += 1,
            _ => {}
        }
    }

    pub fn finish(self) -> Stats {
        let window = self.window;
        let prompts = self
            .prompts
            .into_iter()
            .map(|((name, version), s)| PromptSeries {
                name,
                version,
                events: s.events.iter().sum(),
                satisfaction: mean(s.total.iter().sum(), s.scored.iter().sum()),
                buckets: window
                    .starts()
                    .enumerate()
                    .map(|(i, start)| PromptBucket {
                        start,
                        events: s.events[i],
                        scored: s.scored[i],
                        satisfaction: mean(s.total[i], s.scored[i]),
                    })
                    .collect(),
            })
            .collect();
        let queues = self
            .queues
            .into_iter()
            .map(|(queue, (reviews, completed))| QueueSeries {
                queue,
                reviews: reviews.iter().sum(),
                completed: completed.iter().sum(),
                buckets: window
                    .starts()
                    .enumerate()
                    .map(|(i, start)| QueueBucket {
                        start,
                        reviews: reviews[i],
                        completed: completed[i],
                    })
                    .collect(),
            })
            .collect();
        Stats {
            from: window.from_ms,
            to: window.to_ms(),
            bucket_ms: window.bucket_ms,
            prompts,
            queues,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(at: u64, prompt: (&str, &str), satisfaction: Option<f64>) -> EventRecord {
        let scores: Vec<_> = satisfaction
            .map(|v| json!({"plugin": "satisfaction", "name": "satisfaction", "value": v}))
            .into_iter()
            .collect();
        serde_json::from_value(json!({
            "id": format!("e{at}"), "received_at": at, "input": "q", "output": "a",
            "feedback": {"type": "none"}, "status": "processed",
            "prompt": {"name": prompt.0, "version": prompt.1},
            "outcome": {"scores": scores, "votes": [], "calls": [], "plugins": [],
                        "processed_at": at, "route": {"action": "accept"}},
        }))
        .expect("a record")
    }

    fn audit(at: u64, action: AuditAction) -> AuditEntry {
        AuditEntry {
            at,
            queue: "q".into(),
            item_id: "i".into(),
            actor: "a".into(),
            action,
            detail: None,
        }
    }

    #[test]
    fn buckets_sum_volume_mean_satisfaction_and_throughput() {
        let window = Window::ending_at(3_500, 1_000, 3);
        assert_eq!((window.from_ms, window.to_ms()), (1_000, 4_000));
        let events = [
            record(500, ("support", "1"), Some(1.0)), // before the window
            record(1_100, ("support", "1"), Some(1.0)),
            record(1_900, ("support", "1"), Some(0.0)),
            record(1_950, ("support", "1"), None),
            record(3_999, ("support", "2"), Some(0.25)),
        ];
        let trail = [
            audit(1_000, AuditAction::Claimed),
            audit(2_000, AuditAction::Reviewed),
            audit(2_001, AuditAction::Reviewed),
            audit(2_001, AuditAction::Completed),
        ];
        let mut tally = Tally::new(window);
        events.iter().for_each(|e| tally.event(e));
        trail.iter().for_each(|a| tally.audit(a));
        let stats = tally.finish();
        let v1 = &stats.prompts[0];
        assert_eq!(
            (v1.name.as_str(), v1.version.as_str(), v1.events),
            ("support", "1", 3)
        );
        assert_eq!(v1.buckets[0].events, 3);
        assert_eq!(v1.buckets[0].scored, 2);
        assert_eq!(v1.buckets[0].satisfaction, Some(0.5));
        assert_eq!(v1.buckets[1].satisfaction, None);
        assert_eq!(stats.prompts[1].buckets[2].satisfaction, Some(0.25));
        let q = &stats.queues[0];
        assert_eq!((q.reviews, q.completed), (2, 1));
        assert_eq!(
            q.buckets.iter().map(|b| b.reviews).collect::<Vec<_>>(),
            [0, 2, 0]
        );
    }
}
