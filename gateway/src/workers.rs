//! The threads that serve proxied connections: one single-threaded Tokio runtime each, as
//! Pingora runs its services without work stealing. A connection lives on the worker it is
//! handed to, so a request's tasks wake each other without cross-thread queues or atomics;
//! on one core that served about 10% more requests/s than one worker of a multi-thread
//! runtime (bench/proxies.sh's keepalive test, alternated in one run). Each worker has its
//! own proxy app, hence its own upstream connection pool, as Envoy's workers do: a pooled
//! connection reused by another worker would have its readiness events arrive on the thread
//! that opened it, two thread hops per read. Each worker runs its own accept loop on every
//! gateway listener (crate::listeners) and serves what it accepts, so a new connection costs
//! no hand-over between threads; the control path (snapshot compile, admin, config sync)
//! stays on the main runtime, so a large compile never stalls a worker.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpStream;
use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Dropping these ends the workers' runtimes (and the connections they still serve).
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `count` worker threads (0: one per available core).
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut handles = Vec::with_capacity(count);
        let mut stop = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            stop.push(stop_tx);
            std::thread::Builder::new()
                .name(format!("ferry-worker-{index}"))
                .spawn(move || {
                    let _ = runtime.block_on(stop_rx);
                })?;
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            _stop: stop,
        })
    }

    pub fn count(&self) -> usize {
        self.handles.len()
    }

    /// Runs `task` on worker `index` (an accept loop serving what it accepts there).
    pub fn spawn_on<F>(&self, index: usize, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handles[index].spawn(task)
    }

    /// Serves `tcp` with `serve` on the next worker, round robin; `serve` gets the worker's
    /// index to use that worker's own state (its proxy app and upstream connection pool). The
    /// socket leaves the accepting runtime's reactor and joins the worker's, so its readiness
    /// events arrive on the thread that serves it. Returns what ends the connection's task
    /// (crate::admission reaps idle connections with it).
    pub fn serve<F, Fut>(&self, tcp: TcpStream, serve: F) -> Option<AbortHandle>
    where
        F: FnOnce(usize, TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let socket = match tcp.into_std() {
            Ok(socket) => socket,
            Err(e) => {
                tracing::warn!("cannot hand a connection to a worker: {e}");
                return None;
            }
        };
        let worker = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        let task = self.handles[worker].spawn(async move {
            match TcpStream::from_std(socket) {
                Ok(tcp) => serve(worker, tcp).await,
                Err(e) => tracing::warn!("cannot register a connection with a worker: {e}"),
            }
        });
        Some(task.abort_handle())
    }
}

#[cfg(test)]
mod tests {
    use super::Workers;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Connections handed over are served on the worker threads, not the accepting one.
    #[tokio::test]
    async fn connections_are_served_on_worker_threads() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.count(), 2);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut names = Vec::new();
        for _ in 0..2 {
            let mut client = TcpStream::connect(address).await.unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            let _task = workers.serve(accepted, |_, mut tcp| async move {
                let name = std::thread::current().name().unwrap_or("").to_string();
                tcp.write_all(name.as_bytes()).await.unwrap();
            });
            let mut name = String::new();
            client.read_to_string(&mut name).await.unwrap();
            names.push(name);
        }
        names.sort();
        assert_eq!(names, ["ferry-worker-0", "ferry-worker-1"]);
    }
}
