//! A TCP proxy the tool controls, in front of each Redis master and of the broker
//! (they announce the proxy's port, so every client goes through it): it adds
//! latency to what clients send, or drops every connection and refuses new ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy to `127.0.0.1:target`.
pub struct Proxy {
    /// Where clients connect.
    pub port: u16,
    state: Arc<State>,
}

struct State {
    target: u16,
    delay_ms: AtomicU64,
    refusing: AtomicBool,
    /// Bumped to close every open connection.
    cut: watch::Sender<u64>,
}

impl Proxy {
    /// Listens on a free port and forwards to `target`.
    pub async fn start(target: u16) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        Self::serve(listener, target)
    }

    fn serve(listener: TcpListener, target: u16) -> Result<Self> {
        let port = listener.local_addr()?.port();
        let state = Arc::new(State {
            target,
            delay_ms: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
            cut: watch::channel(0).0,
        });
        let accepting = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if accepting.refusing.load(Ordering::Relaxed) {
                    drop(client);
                    continue;
                }
                tokio::spawn(forward(client, accepting.clone()));
            }
        });
        Ok(Self { port, state })
    }

    /// Adds `delay` before each chunk a client sends is passed on (0: none).
    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Closes every open connection and refuses new ones until [`Proxy::accept`].
    pub fn cut(&self) {
        self.state.refusing.store(true, Ordering::Relaxed);
        self.state.cut.send_modify(|n| *n += 1);
    }

    /// Accepts connections again.
    pub fn accept(&self) {
        self.state.refusing.store(false, Ordering::Relaxed);
    }
}

async fn forward(client: TcpStream, state: Arc<State>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", state.target)).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut cut = state.cut.subscribe();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = {
        let state = state.clone();
        async move {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let n = client_read.read(&mut buffer).await?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(());
                }
                let delay = state.delay_ms.load(Ordering::Relaxed);
                if delay > 0 {
                    // The injected latency itself.
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                server_write.write_all(&buffer[..n]).await?;
            }
        }
    };
    let downstream = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = server_read.read(&mut buffer).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            client_write.write_all(&buffer[..n]).await?;
        }
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
        _ = cut.changed() => {}
    }
}
