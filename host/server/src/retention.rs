//! The retention sweeper: erases events older than `retention.max-age-days` and removes
//! queue audit entries older than `retention.audit-max-age-days`, at start-up and then
//! every `sweep-interval-secs`. The `log` is ordered by arrival and the audit trail by
//! time, so a sweep reads only what it removes (see `Store::erase_matching` and
//! `Store::prune_audit`). The dashboard's hours kept on disk (`Store::prune_rollups`) go
//! once they are older than both.

use std::time::Duration;

use flywheel_model::now_ms;
use flywheel_store::{EventFilter, Store};

use crate::api::events::erased_counter;
use crate::config::RetentionConfig;

/// Runs until the task is dropped; returns at once when neither age is set.
pub async fn sweep(store: Store, config: RetentionConfig) {
    let ms = |age: Duration| u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
    let events_age = config.max_age().map(ms);
    let audit_age = config.audit_max_age().map(ms);
    if events_age.is_none() && audit_age.is_none() {
        return;
    }
    let mut ticks = tokio::time::interval(Duration::from_secs(config.sweep_interval_secs.get()));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = now_ms();
        let events_cutoff = events_age.map(|age| now.saturating_sub(age));
        let audit_cutoff = audit_age.map(|age| now.saturating_sub(age));
        if let Some(cutoff) = events_cutoff {
            erase_old_events(&store, cutoff).await;
        }
        if let Some(cutoff) = audit_cutoff {
            prune_old_audit(&store, cutoff).await;
        }
        // Figures kept about hours before both cutoffs describe nothing left.
        let before = events_cutoff.into_iter().chain(audit_cutoff).min();
        if let Some(before) = before {
            prune_old_rollups(&store, before).await;
        }
    }
}

async fn prune_old_rollups(store: &Store, before: u64) {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.prune_rollups(before)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!("pruning old dashboard hours failed (next sweep retries): {e}")
        }
        Err(e) => tracing::warn!("pruning old dashboard hours failed: {e}"),
    }
}

async fn erase_old_events(store: &Store, cutoff: u64) {
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

async fn prune_old_audit(store: &Store, cutoff: u64) {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.prune_audit(cutoff)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(entries)) => {
            metrics::counter!("flywheel_audit_entries_pruned_total").increment(entries);
            tracing::info!(
                entries,
                before = cutoff,
                "retention: removed old queue audit entries"
            );
        }
        Ok(Err(e)) => tracing::warn!("audit retention failed (next sweep retries): {e}"),
        Err(e) => tracing::warn!("audit retention task failed: {e}"),
    }
}
