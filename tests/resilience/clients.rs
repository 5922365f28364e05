//! The healthy client measured beside every attack, and small raw-socket helpers.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// What the healthy client saw.
#[derive(Debug, Default)]
pub struct Verdict {
    pub requests: usize,
    pub ok: usize,
    /// Latencies of the successful requests, sorted.
    pub latencies: Vec<Duration>,
    pub first_failure: Option<String>,
}

impl Verdict {
    pub fn success_rate(&self) -> f64 {
        self.ok as f64 / self.requests.max(1) as f64
    }

    pub fn p99(&self) -> Duration {
        let n = self.latencies.len();
        if n == 0 {
            return Duration::ZERO;
        }
        self.latencies[(n * 99 / 100).min(n - 1)]
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} ok ({:.2}%), p99 {:.1} ms",
            self.ok,
            self.requests,
            self.success_rate() * 100.0,
            self.p99().as_secs_f64() * 1000.0
        )?;
        if let Some(failure) = &self.first_failure {
            write!(f, ", first failure: {failure}")?;
        }
        Ok(())
    }
}

/// A client from 127.0.0.1 asking `GET /` on a fresh connection every 20 ms (new
/// connections are what a flood competes with), until stopped.
pub struct Healthy {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    task: JoinHandle<Verdict>,
}

/// Requests the healthy client makes at least, however short the attack.
const MIN_REQUESTS: usize = 25;

impl Healthy {
    pub fn start(target: SocketAddr) -> Healthy {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let (flag, count) = (stop.clone(), sent.clone());
        let task = tokio::spawn(async move {
            let mut verdict = Verdict::default();
            while !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                verdict.requests += 1;
                count.fetch_add(1, Ordering::Relaxed);
                match request_from(IpAddr::from([127, 0, 0, 1]), target).await {
                    Ok(()) => {
                        verdict.ok += 1;
                        verdict.latencies.push(started.elapsed());
                    }
                    Err(e) => {
                        verdict.first_failure.get_or_insert(e);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            verdict.latencies.sort();
            verdict
        });
        Healthy { stop, sent, task }
    }

    /// Stops once the client has made at least `MIN_REQUESTS`, and returns what it saw.
    pub async fn stop(self) -> Verdict {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.sent.load(Ordering::Relaxed) < MIN_REQUESTS && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("healthy client")
    }
}

/// One `GET /` from `source` on a fresh connection: Ok on a 200 within 5 s.
pub async fn request_from(source: IpAddr, target: SocketAddr) -> Result<(), String> {
    let attempt = async {
        let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| e.to_string())?;
        let mut stream = socket.connect(target).await.map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: healthy\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut reply = Vec::new();
        stream
            .read_to_end(&mut reply)
            .await
            .map_err(|e| e.to_string())?;
        match reply.starts_with(b"HTTP/1.1 200") {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&reply[..reply.len().min(200)]).into_owned()),
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(result) => result,
        Err(_) => Err("no answer within 5 s".to_string()),
    }
}

/// Sends `request` on a fresh connection and reads what comes back until the proxy closes
/// or `within` passes.
pub async fn exchange(target: SocketAddr, request: &[u8], within: Duration) -> String {
    let mut stream = TcpStream::connect(target).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}
