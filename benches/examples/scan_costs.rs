//! What reading events by a rare filter costs: `GET /v1/events?user_id=` (one page after
//! another), the same filter through `Store::scan` (what `DELETE /v1/events?user_id=`
//! walks), and a time-only scan for comparison, over a store of `events` events spread
//! over the last 14 days among 100 users:
//!
//!   cargo run --release -p flywheel-benches --example scan_costs -- 200000
//!
//! Wall-clock times of one run each, so read them as ratios: the machine is shared.

use std::time::Instant;

use flywheel_store::EventFilter;

fn main() {
    let total: u64 = std::env::args()
        .nth(1)
        .map_or(200_000, |s| s.parse().expect("events is a number"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = flywheel_benches::scratch_store(dir.path());
    flywheel_benches::fill_days(&store, total, 14);
    let one_user = EventFilter {
        user_id: Some("user-7".into()),
        ..EventFilter::default()
    };
    let everything = EventFilter::default();
    for (label, filter) in [
        ("scan, user_id (what an erasure by user walks)", &one_user),
        ("scan, no filter", &everything),
    ] {
        let started = Instant::now();
        let mut n = 0;
        for record in store.scan(filter) {
            record.expect("a record");
            n += 1;
        }
        println!("{label}: {:?} ({n} events)", started.elapsed());
    }
    let started = Instant::now();
    let (mut pages, mut n, mut cursor) = (0, 0, None::<String>);
    loop {
        let page = store
            .list(&one_user, cursor.as_deref(), 100)
            .expect("a page");
        pages += 1;
        n += page.events.len();
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    println!(
        "list, user_id, every page: {:?} ({n} events in {pages} pages)",
        started.elapsed()
    );
}
