//! What the load harnesses share.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

/// A client socket of the harnesses.
pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Watches every socket for its Close, runs `pause`, and returns the sorted times from the pause
/// to each client's Close 4001.
pub(crate) async fn time_closes<F: std::future::Future<Output = ()>>(
    sockets: Vec<Socket>,
    pause: F,
) -> Vec<Duration> {
    let n = sockets.len();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let start = std::sync::Arc::new(std::sync::OnceLock::<Instant>::new());
    for mut socket in sockets {
        let (tx, start) = (tx.clone(), start.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = socket.next().await {
                if let Message::Close(Some(frame)) = message {
                    let _ = tx.send((u16::from(frame.code), start.get().map(Instant::elapsed)));
                    return;
                }
            }
            let _ = tx.send((1006, None));
        });
    }
    drop(tx);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = start.set(Instant::now());
    pause.await;
    let mut latencies = Vec::with_capacity(n);
    while let Some((code, at)) = rx.recv().await {
        assert_eq!(code, 4001, "every client sees 4001");
        latencies.push(at.expect("closed after the pause"));
    }
    assert_eq!(latencies.len(), n);
    latencies.sort();
    latencies
}
