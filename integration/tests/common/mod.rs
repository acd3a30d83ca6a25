//! Helpers shared by the integration tests: a loopback server, a raw HTTP/1.1 client and a
//! WebSocket client that reports the handshake as the client sees it.
#![allow(dead_code, unreachable_pub)]

#[cfg(feature = "jwks")]
pub mod jwks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long any single network step in a test may take before the test fails.
pub const STEP: Duration = Duration::from_secs(10);

/// Serves `app` on a free loopback port.
pub async fn spawn(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    addr
}

/// Serves `app` on a free loopback port with the peer address in every request
/// (`ConnectInfo<SocketAddr>`), as a guard with a failure limit needs.
pub async fn spawn_with_connect_info(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("serve");
    });
    addr
}

/// A response as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Status, challenge and body: what the credential matrix compares across surfaces.
    pub fn outcome(&self) -> (u16, Option<String>, String) {
        (
            self.status,
            self.header("www-authenticate"),
            self.body_text(),
        )
    }
}

/// Sends `head` (request line and headers, without the final blank line) as raw bytes and reads
/// the response. A `101` returns as soon as its head is read.
pub async fn raw_http(addr: SocketAddr, head: &[u8]) -> Reply {
    tokio::time::timeout(STEP, raw_http_inner(addr, head, true))
        .await
        .expect("raw HTTP exchange timed out")
}

/// [`raw_http`] from the local address `from` (any of 127.0.0.0/8 on Linux, which routes the
/// whole block to the loopback interface): a second client machine, as the server sees it.
pub async fn raw_http_from(from: std::net::IpAddr, addr: SocketAddr, head: &[u8]) -> Reply {
    let stream = connect_from(from, addr).await;
    tokio::time::timeout(STEP, raw_http_on(stream, head, true))
        .await
        .expect("raw HTTP exchange timed out")
}

/// A TCP connection to `addr` from the local address `from`.
pub async fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = match from {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .expect("socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("bind the client address");
    tokio::time::timeout(STEP, socket.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect")
}

async fn raw_http_inner(addr: SocketAddr, head: &[u8], end_head: bool) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect");
    raw_http_on(stream, head, end_head).await
}

async fn raw_http_on(mut stream: TcpStream, head: &[u8], end_head: bool) -> Reply {
    stream.write_all(head).await.expect("write");
    if end_head {
        stream.write_all(b"\r\n").await.expect("write");
    }
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().as_bytes().to_vec()))
        .collect();
    let mut reply = Reply {
        status,
        headers,
        body: buf[head_end..].to_vec(),
    };
    if status == 101 {
        return reply;
    }
    let length: usize = reply
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while reply.body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read body");
        if n == 0 {
            break;
        }
        reply.body.extend_from_slice(&chunk[..n]);
    }
    reply
}

/// Sends a complete JSON request (method, path, body) and reads the response; for small HTTP
/// APIs such as WebDriver.
pub async fn json_request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Reply {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::time::timeout(STEP, raw_http_inner(addr, request.as_bytes(), false))
        .await
        .expect("HTTP exchange timed out")
}

/// A raw HTTP/1.1 GET head for `target` with `headers` (name, raw value bytes).
pub fn get_head(addr: SocketAddr, target: &str, headers: &[(&str, &[u8])]) -> Vec<u8> {
    let mut head = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n").into_bytes();
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("connection"))
    {
        head.extend_from_slice(b"Connection: close\r\n");
    }
    for (name, value) in headers {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    head
}

/// The headers of a valid WebSocket handshake.
pub const UPGRADE_HEADERS: [(&str, &[u8]); 4] = [
    ("Connection", b"Upgrade"),
    ("Upgrade", b"websocket"),
    ("Sec-WebSocket-Version", b"13"),
    ("Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
];

/// The client's handshake request for `ws://{addr}{target}` with `headers` added.
fn ws_request(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> tungstenite::handshake::client::Request {
    let url = format!("ws://{addr}{target}");
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    request
}

/// Opens a WebSocket with tokio-tungstenite. `Err` carries the refused handshake as the client saw it.
pub async fn ws_connect(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<Socket, Reply> {
    let connect = tokio_tungstenite::connect_async(ws_request(addr, target, headers));
    ws_handshake_result(
        tokio::time::timeout(STEP, connect)
            .await
            .expect("handshake timed out"),
    )
}

/// [`ws_connect`] from the local address `from` (see [`raw_http_from`]).
pub async fn ws_connect_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<Socket, Reply> {
    let stream = connect_from(from, addr).await;
    let connect = tokio_tungstenite::client_async(
        ws_request(addr, target, headers),
        MaybeTlsStream::Plain(stream),
    );
    ws_handshake_result(
        tokio::time::timeout(STEP, connect)
            .await
            .expect("handshake timed out"),
    )
}

fn ws_handshake_result(
    result: Result<(Socket, tungstenite::handshake::client::Response), tungstenite::Error>,
) -> Result<Socket, Reply> {
    match result {
        Ok((socket, response)) => {
            assert_eq!(response.status(), 101);
            Ok(socket)
        }
        Err(tungstenite::Error::Http(response)) => {
            let (parts, body) = response.into_parts();
            Err(Reply {
                status: parts.status.as_u16(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                    .collect(),
                body: body.unwrap_or_default(),
            })
        }
        Err(e) => panic!("WebSocket handshake failed without an HTTP response: {e}"),
    }
}

/// The next text frame, failing the test on anything else.
pub async fn next_text(socket: &mut Socket) -> String {
    match tokio::time::timeout(STEP, socket.next())
        .await
        .expect("no frame in time")
    {
        Some(Ok(Message::Text(text))) => text.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The base64url HMAC (`HS256`, `HS384` or `HS512`) of a JWS signing input, computed with the
/// `hmac` crate: an implementation independent of the crate under test.
pub fn hmac_sign(alg: &str, secret: &[u8], input: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use hmac::{Hmac, Mac};

    fn mac<M: Mac + hmac::digest::KeyInit>(secret: &[u8], input: &[u8]) -> Vec<u8> {
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret).expect("any key length");
        mac.update(input);
        mac.finalize().into_bytes().to_vec()
    }
    URL_SAFE_NO_PAD.encode(match alg {
        "HS384" => mac::<Hmac<sha2::Sha384>>(secret, input),
        "HS512" => mac::<Hmac<sha2::Sha512>>(secret, input),
        _ => mac::<Hmac<sha2::Sha256>>(secret, input),
    })
}

/// A compact JWS of these raw header and payload bytes, signed by [`hmac_sign`].
pub fn hmac_jws(header: &str, payload: &str, alg: &str, secret: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = hmac_sign(alg, secret, input.as_bytes());
    format!("{input}.{signature}")
}

/// The next text frame, parsed as JSON.
pub async fn next_json(socket: &mut Socket) -> serde_json::Value {
    let text = next_text(socket).await;
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"))
}

/// Reads frames until the server's Close; returns the text frames seen before it and the close
/// code and reason. Fails if the connection ends without a Close (the client would see 1006).
pub async fn until_close(socket: &mut Socket) -> (Vec<String>, u16, String) {
    let mut texts = Vec::new();
    loop {
        match tokio::time::timeout(STEP, socket.next())
            .await
            .expect("no close in time")
        {
            Some(Ok(Message::Text(text))) => texts.push(text.to_string()),
            Some(Ok(Message::Close(Some(frame)))) => {
                return (texts, u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(Message::Close(None))) => return (texts, 1005, String::new()),
            Some(Ok(_)) => {}
            other => panic!("connection ended without a Close frame (1006): {other:?}"),
        }
    }
}

/// The example binary, which `cargo test --workspace` builds next to the test binaries.
pub fn example_binary(name: &str) -> PathBuf {
    let deps = std::env::current_exe().expect("test binary path");
    let debug = deps.parent().and_then(|p| p.parent()).expect("target dir");
    let path = debug
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} not built: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub stdout_first_line: String,
    /// Everything the server writes to stderr, read as it comes: a full pipe would block the
    /// server's logging (and with it the server) at `RUST_LOG=trace`.
    stderr: tokio::task::JoinHandle<String>,
}

impl Server {
    /// Starts the reference server (`examples/agent_server.rs`).
    pub async fn start(args: &[&str]) -> Self {
        Self::example("agent_server", args).await
    }

    /// Starts an example that prints `listening on http://ADDR` first.
    pub async fn example(name: &str, args: &[&str]) -> Self {
        Self::example_with_log(name, args, Some("trace")).await
    }

    /// Starts the reference server with `RUST_LOG` set to `log`, or unset (its default level).
    pub async fn start_with_log(args: &[&str], log: Option<&str>) -> Self {
        Self::example_with_log("agent_server", args, log).await
    }

    async fn example_with_log(name: &str, args: &[&str], log: Option<&str>) -> Self {
        let mut command = Command::new(example_binary(name));
        match log {
            Some(log) => command.env("RUST_LOG", log),
            None => command.env_remove("RUST_LOG"),
        };
        let mut child = command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn agent_server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(STEP, lines.next_line())
            .await
            .expect("agent_server did not start in time")
            .expect("read stdout")
            .expect("agent_server exited before listening");
        let addr = line
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address");
        // Keep reading stdout so the process never blocks on a full pipe.
        let rest = tokio::spawn(async move {
            let mut rest = String::new();
            while let Ok(Some(l)) = lines.next_line().await {
                rest.push_str(&l);
            }
            rest
        });
        drop(rest);
        let mut stderr_pipe = child.stderr.take().expect("stderr");
        let stderr = tokio::spawn(async move {
            let mut text = Vec::new();
            let _ = stderr_pipe.read_to_end(&mut text).await;
            String::from_utf8_lossy(&text).into_owned()
        });
        Self {
            child,
            addr,
            stdout_first_line: line,
            stderr,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Its resident set size in KiB (`VmRSS` in `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Sends `signal` (`TERM`, `INT`) and waits for the server to exit: its exit code (`None`
    /// when a signal killed it) and everything it wrote to stderr.
    pub async fn signal_and_wait(mut self, signal: &str) -> (Option<i32>, String) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .await
            .expect("kill");
        assert!(sent.success());
        let status = tokio::time::timeout(STEP, self.child.wait())
            .await
            .expect("the server exits in time")
            .expect("wait");
        (status.code(), self.stderr.await.expect("stderr reader"))
    }

    /// Stops the server and returns everything it wrote to stderr.
    pub async fn stop(mut self) -> String {
        self.child.start_kill().expect("kill");
        self.child.wait().await.expect("wait");
        self.stderr.await.expect("stderr reader")
    }
}

/// Runs the binary expecting it to refuse to start; returns (exit code, stdout + stderr).
pub async fn refused(args: &[&str]) -> (Option<i32>, String) {
    let output = tokio::time::timeout(
        STEP,
        Command::new(example_binary("agent_server"))
            .args(args)
            .env("RUST_LOG", "trace")
            .output(),
    )
    .await
    .expect("agent_server should exit at once")
    .expect("run agent_server");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}
