//! The sidecar in real network namespaces: each "pod" is a netns on a bridge, with the rules
//! `ferry sidecar-init` writes and `ferry sidecar` running as uid 1337 beside a `ferry echo`
//! app. A client pod calls the weather Service's ClusterIP; its sidecar routes by a
//! VirtualService (90/10 by subset, a header pins v2) to a pod whose sidecar hands the
//! connection to the app. Needs root, iproute2, iptables and setpriv (util-linux).

#[path = "../support/mod.rs"]
mod support;

mod dns;
mod egress;
mod identity;
mod mtls;
mod pods;
mod routing;
