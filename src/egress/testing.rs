//! Test servers for the egress tests: a listener that only counts the connections it accepts
//! (proof that a refused address never saw a packet), and an HTTP server whose replies never
//! end (proof that reads are capped).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A listener on `ip` that counts accepted connections.
pub struct AcceptCounter {
    pub addr: SocketAddr,
    accepted: Arc<AtomicU64>,
}

impl AcceptCounter {
    pub async fn start(ip: &str) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });
        AcceptCounter { addr, accepted }
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// An HTTP/1.1 server on loopback that answers every request with `status` and a chunked body
/// that never ends; `sent()` is how many body bytes it managed to write in total.
pub struct EndlessServer {
    pub addr: SocketAddr,
    sent: Arc<AtomicU64>,
}

impl EndlessServer {
    pub async fn start(status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let total = sent.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let total = total.clone();
                tokio::spawn(async move {
                    // Read the request head (the tests send no body that matters).
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let reason = if status < 300 { "OK" } else { "Error" };
                    let start = format!(
                        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/xml\r\ntransfer-encoding: chunked\r\n\r\n"
                    );
                    if socket.write_all(start.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'A'; 64 << 10];
                    let framed = [
                        format!("{:x}\r\n", chunk.len()).into_bytes(),
                        chunk,
                        b"\r\n".to_vec(),
                    ]
                    .concat();
                    loop {
                        if socket.write_all(&framed).await.is_err() {
                            return;
                        }
                        total.fetch_add(64 << 10, Ordering::SeqCst);
                    }
                });
            }
        });
        EndlessServer { addr, sent }
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}
