//! The retention sweeper: erases events older than `retention.max-age-days`, at start-up
//! and then every `sweep-interval-secs`. The `log` is ordered by arrival, so a sweep
//! reads only the events it erases (see `Store::erase_matching`).

use std::time::Duration;

use flywheel_model::now_ms;
use flywheel_store::{EventFilter, Store};

use crate::api::events::erased_counter;
use crate::config::RetentionConfig;

/// Runs until the task is dropped; returns at once when retention is off.
pub async fn sweep(store: Store, config: RetentionConfig) {
    let Some(max_age) = config.max_age() else {
        return;
    };
    let mut ticks = tokio::time::interval(Duration::from_secs(config.sweep_interval_secs.get()));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let age_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
    loop {
        ticks.tick().await;
        let cutoff = now_ms().saturating_sub(age_ms);
        let store = store.clone();
        let counter = erased_counter("retention");
        let swept = tokio::task::spawn_blocking(move || {
            let old = EventFilter {
                to_ms: Some(cutoff),
                ..EventFilter::default()
            };
            store.erase_matching(&old, "retention", |chunk| counter.increment(chunk.events))
        })
        .await;
        match swept {
            Ok(Ok(total)) if total.events > 0 => tracing::info!(
                events = total.events,
                queue_items = total.queue_items,
                received_before = cutoff,
                "retention: erased old events"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("retention sweep failed (next one retries): {e}"),
            Err(e) => tracing::warn!("retention sweep task failed: {e}"),
        }
    }
}
