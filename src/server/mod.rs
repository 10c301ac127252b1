//! The client-facing side: the listener, connections, RESP framing and
//! replies.

pub mod clients;
pub mod connection;
pub mod parse;
pub mod reply;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::node::{Node, Stats};

/// Accepts clients until shutdown; each connection runs in its own task.
pub async fn accept_loop(node: Arc<Node>, listener: TcpListener) {
    let mut shutdown = node.shutdown_signal();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (mut stream, addr) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        Stats::bump(&node.stats.connections);
        let laddr = stream.local_addr().unwrap_or(addr);
        let max = node.settings.read().maxclients;
        let Some(handle) = node.clients.register(addr, laddr, max) else {
            node.stats.rejected.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
            });
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let id = handle.id;
            connection::serve(node.clone(), stream, handle).await;
            node.clients.unregister(id);
        });
    }
}
