//! A WebSocket proxy: it authenticates its own clients with a guard, and connects each of them to
//! an upstream reference server with its own key placed in the upstream handshake.
//!
//! Run it (with an agent server on port 8000 that accepts the key in `/tmp/upstream-key`):
//!
//! ```text
//! cargo run --example ws_proxy -- --upstream http://127.0.0.1:8000 \
//!     --upstream-key-file /tmp/upstream-key --session-api-key client-key
//! websocat 'ws://127.0.0.1:8100/sockets/events?session_api_key=client-key'
//! ```
//!
//! Options:
//!
//! ```text
//! --listen ADDR                default 127.0.0.1:8100
//! --upstream URL               the upstream's base URL, http://host:port
//! --upstream-key-file PATH     the proxy's own key for the upstream (trimmed)
//! --session-api-key KEY        repeatable; keys of the proxy's own clients
//! --upstream-auth MODE         handshake (default: X-Session-API-Key on the upgrade) or
//!                              first-message (an auth frame after connecting; only for
//!                              upstreams that run with --first-message-auth)
//! ```
//!
//! Frames are relayed both ways, text and binary; close codes are carried across (an upstream
//! 4001 reaches the client as 4001, the client's close reaches the upstream). A refused upstream
//! handshake is reported to the client as Close 1011 with the upstream's status in the reason.
//! It prints `listening on http://ADDR` and never prints a credential.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::close_code;
use axum::extract::ws::Message as AxumMessage;
use axum::extract::{FromRef, State};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use axum_keyguard::client::{OutboundCredential, Secret};
use axum_keyguard::ws::{GuardedUpgrade, LeasedSocket};
use axum_keyguard::{Guard, KeyId, Keys};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

const USAGE: &str = "usage: ws_proxy --upstream URL --upstream-key-file PATH \
--session-api-key KEY... [--listen ADDR] [--upstream-auth handshake|first-message]";

/// How long the proxy waits for the upstream handshake.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// The router state: the guard of the proxy's own clients (the extractor finds it here) and the
/// upstream.
#[derive(Clone, FromRef)]
struct AppState {
    guard: Guard<KeyId>,
    upstream: Arc<Upstream>,
}

/// Where and how to reach the upstream.
struct Upstream {
    /// `ws://host:port/sockets/events`.
    url: String,
    credential: OutboundCredential,
}

async fn events(State(upstream): State<Arc<Upstream>>, ws: GuardedUpgrade<KeyId>) -> Response {
    ws.on_upgrade(move |client| relay(client, upstream))
}

/// Connects the client to the upstream and relays until either side closes.
async fn relay(mut client: LeasedSocket<KeyId>, upstream: Arc<Upstream>) {
    let mut request = match upstream.url.as_str().into_client_request() {
        Ok(request) => request,
        Err(_) => return client.close(close_code::ERROR, "bad upstream URL").await,
    };
    if upstream.credential.apply(&mut request).is_err() {
        return client
            .close(close_code::ERROR, "bad upstream credential")
            .await;
    }
    let connected =
        tokio::time::timeout(UPSTREAM_TIMEOUT, tokio_tungstenite::connect_async(request)).await;
    let mut server = match connected {
        Ok(Ok((server, _))) => server,
        Ok(Err(tungstenite::Error::Http(response))) => {
            let reason = format!("upstream refused the handshake: {}", response.status());
            tracing::warn!(status = %response.status(), "upstream refused the handshake");
            return client.close(close_code::ERROR, &reason).await;
        }
        Ok(Err(_)) => {
            return client
                .close(close_code::ERROR, "upstream unreachable")
                .await
        }
        Err(_) => {
            return client
                .close(close_code::ERROR, "upstream handshake timed out")
                .await
        }
    };
    if let Some(frame) = upstream.credential.auth_frame() {
        if server.send(Message::text(frame)).await.is_err() {
            return client
                .close(close_code::ERROR, "upstream connection lost")
                .await;
        }
    }
    loop {
        tokio::select! {
            from_client = client.recv() => match from_client {
                Some(AxumMessage::Text(text)) => {
                    if server.send(Message::text(text.as_str())).await.is_err() {
                        return client.close(close_code::ERROR, "upstream connection lost").await;
                    }
                }
                Some(AxumMessage::Binary(bytes)) => {
                    if server.send(Message::binary(bytes)).await.is_err() {
                        return client.close(close_code::ERROR, "upstream connection lost").await;
                    }
                }
                Some(AxumMessage::Close(frame)) => {
                    let (code, reason) = frame.map_or((close_code::NORMAL, String::new()), |f| {
                        (f.code, f.reason.to_string())
                    });
                    let _ = server
                        .close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() }))
                        .await;
                    return;
                }
                Some(_) => {}
                None => {
                    let _ = server.close(None).await;
                    return;
                }
            },
            from_server = server.next() => match from_server {
                Some(Ok(Message::Text(text))) => {
                    if client.send(AxumMessage::text(text.as_str())).await.is_err() {
                        let _ = server.close(None).await;
                        return;
                    }
                }
                Some(Ok(Message::Binary(bytes))) => {
                    if client.send(AxumMessage::Binary(bytes)).await.is_err() {
                        let _ = server.close(None).await;
                        return;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map_or((close_code::NORMAL, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    });
                    return client.close(code, &reason).await;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    return client.close(close_code::ERROR, "upstream connection lost").await;
                }
            },
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // tungstenite's client logs its whole handshake request (our upstream key included) and every
    // frame at TRACE: never more than INFO here, whatever RUST_LOG says.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info".into())
        .add_directive("tungstenite=info".parse().expect("a valid directive"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let mut args = std::env::args().skip(1);
    let (mut listen, mut upstream, mut key_file, mut keys, mut mode) = (
        "127.0.0.1:8100".to_owned(),
        None,
        None,
        Vec::new(),
        "handshake".to_owned(),
    );
    while let Some(arg) = args.next() {
        // Never echo an argument: it might be a key in the wrong place.
        let Some(value) = args.next() else {
            eprintln!("error: every option takes a value\n{USAGE}");
            return ExitCode::from(2);
        };
        match arg.as_str() {
            "--listen" => listen = value,
            "--upstream" => upstream = Some(value),
            "--upstream-key-file" => key_file = Some(value),
            "--session-api-key" => keys.push(value),
            "--upstream-auth" => mode = value,
            _ => {
                eprintln!("error: unknown argument\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let config = (|| {
        let base = upstream.ok_or("--upstream is required")?;
        let host = base
            .strip_prefix("http://")
            .ok_or("--upstream takes a base URL such as http://127.0.0.1:8000")?
            .trim_end_matches('/');
        let secret = Secret::from_file(key_file.ok_or("--upstream-key-file is required")?)
            .map_err(|e| e.to_string())?;
        let credential = match mode.as_str() {
            "handshake" => OutboundCredential::session_api_key(secret),
            "first-message" => OutboundCredential::first_message(secret),
            _ => return Err("--upstream-auth is handshake or first-message".to_owned()),
        };
        let guard = Guard::builder()
            .with_verifier(Keys::new(&keys).map_err(|e| e.to_string())?)
            .build()
            .map_err(|e| e.to_string())?;
        let upstream = Upstream {
            url: format!("ws://{host}/sockets/events"),
            credential,
        };
        Ok::<_, String>((guard, upstream))
    })();
    let (guard, upstream) = match config {
        Ok(config) => config,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let app = Router::new()
        .route("/sockets/events", any(events))
        .route_layer(guard.layer())
        .with_state(AppState {
            guard,
            upstream: Arc::new(upstream),
        });
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        println!("listening on http://{addr}");
    }
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
