//! DestinationRule `tcp.tcpKeepalive` on upstream sockets: SO_KEEPALIVE with the values the
//! rule gives. Pingora sets all three values at once, so the ones the rule leaves out are
//! read from the kernel's own defaults (`net.ipv4.tcp_keepalive_*`), as Istio leaves them.

use ferry_model::TcpKeepalive;
use pingora_core::protocols::l4::ext::TcpKeepalive as SocketKeepalive;
use std::sync::OnceLock;
use std::time::Duration;

/// The kernel's keep-alive defaults: (time, interval, probes).
fn kernel_defaults() -> (Duration, Duration, usize) {
    static DEFAULTS: OnceLock<(Duration, Duration, usize)> = OnceLock::new();
    *DEFAULTS.get_or_init(|| {
        let read = |name: &str, fallback: u64| {
            std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or(fallback)
        };
        // Linux's compiled-in values when /proc cannot say.
        let time = Duration::from_secs(read("tcp_keepalive_time", 7200));
        let interval = Duration::from_secs(read("tcp_keepalive_intvl", 75));
        (time, interval, read("tcp_keepalive_probes", 9) as usize)
    })
}

/// The socket settings for a cluster's keep-alive policy.
pub fn socket_keepalive(policy: &TcpKeepalive) -> SocketKeepalive {
    let (time, interval, probes) = kernel_defaults();
    SocketKeepalive {
        idle: policy.time_ms.map_or(time, Duration::from_millis),
        interval: policy.interval_ms.map_or(interval, Duration::from_millis),
        count: policy.probes.map_or(probes, |p| p as usize),
        user_timeout: Duration::ZERO, // the kernel's
    }
}

/// Turns keep-alive on for a relayed connection's upstream socket.
pub fn apply(stream: &tokio::net::TcpStream, policy: &TcpKeepalive) {
    let settings = socket_keepalive(policy);
    if let Err(e) = pingora_core::protocols::l4::ext::set_tcp_keepalive(stream, &settings) {
        tracing::debug!("cannot set TCP keep-alive: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[tokio::test]
    async fn the_socket_gets_the_rules_values_and_the_kernels_for_the_rest() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let policy = TcpKeepalive {
            probes: Some(3),
            time_ms: Some(30_000),
            interval_ms: None,
        };
        apply(&stream, &policy);
        let fd = stream.as_fd();
        let socket = socket2::SockRef::from(&fd);
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 3);
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            kernel_defaults().1
        );
    }
}
