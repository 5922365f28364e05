use super::*;
use prometheus::Opts;

fn admission(limits: ConnectionLimits) -> Arc<Admission> {
    let metrics = AdmissionMetrics {
        refused: IntCounterVec::new(Opts::new("refused", "r"), &["reason"]).unwrap(),
        reaped: IntCounter::new("reaped", "r").unwrap(),
        overloaded: IntGauge::new("overloaded", "o").unwrap(),
    };
    Admission::new(limits, metrics)
}

fn limited(max: usize, per_client: usize) -> Arc<Admission> {
    admission(ConnectionLimits {
        max_connections: max,
        max_connections_per_client: per_client,
        overload_memory_bytes: 0,
    })
}

const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2)));
const B: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3)));

#[test]
fn at_the_limit_the_connection_idle_longest_makes_room() {
    let admission = limited(2, 0);
    let first = admission.admit(A).unwrap();
    let second = admission.admit(A).unwrap();
    assert!(second.begin(), "second serves a request");
    let third = admission.admit(B).unwrap();
    assert!(!first.begin(), "the idle one was reaped");
    assert!(third.begin());
    assert_eq!(admission.open(), 2);
    assert_eq!(admission.metrics.reaped.get(), 1);
}

#[test]
fn busy_connections_are_never_reaped_and_the_newcomer_is_refused() {
    let admission = limited(2, 0);
    let slots: Vec<_> = (0..2).map(|_| admission.admit(A).unwrap()).collect();
    assert!(slots.iter().all(|s| s.begin()));
    assert_eq!(admission.admit(B).err(), Some(Refusal::MaxConnections));
    let refused = admission
        .metrics
        .refused
        .with_label_values(&["max_connections"]);
    assert_eq!(refused.get(), 1);
    // One finishes its request: it turns idle, and the next newcomer takes its place.
    slots[0].end();
    assert!(admission.admit(B).is_ok());
    assert!(!slots[0].begin());
}

#[test]
fn a_closed_connection_frees_its_place_and_its_client_count() {
    let admission = limited(1, 1);
    let slot = admission.admit(A).unwrap();
    assert_eq!(admission.admit(A).err(), Some(Refusal::PerClient));
    drop(slot);
    assert_eq!(admission.open(), 0);
    let again = admission.admit(A).unwrap();
    assert!(again.begin());
}

#[test]
fn per_client_limit_leaves_other_clients_alone() {
    let admission = limited(0, 2);
    let _a: Vec<_> = (0..2).map(|_| admission.admit(A).unwrap()).collect();
    assert_eq!(admission.admit(A).err(), Some(Refusal::PerClient));
    assert!(admission.admit(B).is_ok());
}

#[test]
fn a_client_named_after_accept_counts_against_its_limit() {
    // PROXY protocol: admitted without a client, claimed once the header named it.
    let admission = limited(0, 1);
    let first = admission.admit(None).unwrap();
    assert_eq!(first.claim_client(A.unwrap()), Ok(()));
    let second = admission.admit(None).unwrap();
    assert_eq!(second.claim_client(A.unwrap()), Err(Refusal::PerClient));
    assert_eq!(second.claim_client(B.unwrap()), Ok(()));
    let refused = admission.metrics.refused.with_label_values(&["per_client"]);
    assert_eq!(refused.get(), 1);
    drop(first);
    let third = admission.admit(None).unwrap();
    assert_eq!(
        third.claim_client(A.unwrap()),
        Ok(()),
        "the closed one gave its place back"
    );
}

#[test]
fn under_memory_pressure_newcomers_only_replace_idle_connections() {
    let admission = limited(0, 0);
    let idle = admission.admit(A).unwrap();
    admission.set_overloaded(true);
    assert!(idle.shedding());
    let newcomer = admission.admit(B).unwrap();
    assert!(!idle.begin(), "reaped to make room");
    assert!(newcomer.begin());
    assert_eq!(admission.admit(B).err(), Some(Refusal::Overload));
    admission.set_overloaded(false);
    assert!(admission.admit(B).is_ok());
}

#[test]
fn the_idle_queue_stays_bounded_by_the_connections_held() {
    let admission = limited(0, 0);
    let kept = admission.admit(A).unwrap();
    for _ in 0..10_000 {
        drop(admission.admit(A).unwrap());
    }
    let queued = admission.idle.lock().unwrap().len();
    assert!(
        queued <= 2 * admission.open() + 65,
        "{queued} entries queued"
    );
    drop(kept);
}

#[tokio::test]
async fn reaping_ends_the_connection_task() {
    let admission = limited(1, 0);
    let slot = admission.admit(A).unwrap();
    let task = tokio::spawn(std::future::pending::<()>());
    slot.set_abort(task.abort_handle());
    let _newcomer = admission.admit(B).unwrap();
    assert!(task.await.unwrap_err().is_cancelled());
}
