//! A resolver for the pods: a tiny DNS server on the bridge and a pod's own resolv.conf.

use crate::support::netns::Pod;

/// A DNS server for the test: answers A queries for the names in its table (each with a
/// TTL of one second) and nothing else; the table can change while it runs.
pub struct TinyDns {
    names: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::net::Ipv4Addr>>>,
    pub queries: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl TinyDns {
    pub fn start(address: std::net::Ipv4Addr) -> TinyDns {
        let socket = std::net::UdpSocket::bind((address, 53)).expect("bind DNS port");
        let dns = TinyDns {
            names: Default::default(),
            queries: Default::default(),
        };
        let (names, queries) = (dns.names.clone(), dns.queries.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                queries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let names = names.lock().unwrap().clone();
                if let Some(reply) = dns_reply(&buf[..n], &names) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        dns
    }

    pub fn set(&self, name: &str, ip: std::net::Ipv4Addr) {
        self.names.lock().unwrap().insert(name.into(), ip);
    }
}

/// The answer to one query (RFC 1035 wire format): the A record when the name is known and
/// the query asks for A, else an empty NOERROR answer.
pub fn dns_reply(
    query: &[u8],
    names: &std::collections::HashMap<String, std::net::Ipv4Addr>,
) -> Option<Vec<u8>> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question = query.get(12..at + 4)?;
    let found = names.get(&labels.join(".")).filter(|_| qtype == 1);
    let mut reply = Vec::new();
    reply.extend_from_slice(&query[..2]); // id
    reply.extend_from_slice(&[0x81, 0x80, 0, 1, 0, u8::from(found.is_some()), 0, 0, 0, 0]);
    reply.extend_from_slice(question);
    if let Some(ip) = found {
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4]); // TTL 1 s
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}

/// The pod's `/etc/resolv.conf` as `ip netns exec` shows it to the pod's processes.
pub struct PodResolvConf(std::path::PathBuf);

impl PodResolvConf {
    pub fn write(pod: &Pod, nameserver: std::net::Ipv4Addr) -> PodResolvConf {
        let dir = std::path::PathBuf::from(format!("/etc/netns/{}", pod.name));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\noptions timeout:1 attempts:2\n"),
        )
        .unwrap();
        PodResolvConf(dir)
    }
}

impl Drop for PodResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
