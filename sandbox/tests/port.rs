//! connect_port: TCP connections to ports inside sandboxes that have no
//! network at all, relayed over an exec.

mod common;

use std::time::{Duration, Instant};

use common::*;
use drydock_sandbox::{PortStream, Sandbox, SandboxError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An echo server for any number of connections: echoes until the client
/// half-closes, then closes its side. With a second argument `hold` it
/// instead never reads, answers or closes.
const ECHO_SERVER: &str = r#"import socket, sys, threading, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(16)

def serve(conn):
    if sys.argv[2:] == ["hold"]:
        while True:
            time.sleep(3600)
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)

while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;

/// Waits until something listens on TCP `port` inside the sandbox.
async fn wait_listening(sb: &Sandbox, port: u16) {
    let script = format!(
        "awk 'NR > 1 && $4 == \"0A\" {{ print $2 }}' /proc/net/tcp /proc/net/tcp6 | grep -qi ':{port:04X}$'"
    );
    for _ in 0..200 {
        if run(sb, drydock_sandbox::ExecSpec::shell(script.clone()))
            .await
            .exit
            .success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing started listening on port {port}");
}

/// Starts the echo server on `port`, detached, and waits until it listens.
async fn start_echo(sb: &Sandbox, port: u16) {
    start_server(sb, port, "").await;
}

async fn start_server(sb: &Sandbox, port: u16, mode: &str) {
    sb.write_file("/tmp/echo.py", ECHO_SERVER.as_bytes(), 0o644, None)
        .await
        .expect("write the echo server");
    sh(
        sb,
        &format!("python3 /tmp/echo.py {port} {mode} >/tmp/echo-{port}.log 2>&1 &"),
    )
    .await;
    wait_listening(sb, port).await;
}

/// Waits until no relay runs in the sandbox.
async fn await_no_relay(sb: &Sandbox) {
    let mut left = vec!["not checked".to_owned()];
    for _ in 0..100 {
        left = relay_uids(sb).await;
        if left.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("a relay outlived its stream: {left:?}");
}

/// The uids of the relay processes running in the sandbox, one per relay.
async fn relay_uids(sb: &Sandbox) -> Vec<String> {
    let out = sh(
        sb,
        "for p in /proc/[0-9]*; do \
           if tr '\\0' ' ' < $p/cmdline 2>/dev/null | head -n 1 | grep -q '^python3 -I -c # drydock-sandbox port relay'; then \
             awk '/^Uid:/ { print $2 }' $p/status 2>/dev/null; \
           fi; \
         done",
    )
    .await;
    out.lines().map(str::to_owned).collect()
}

/// Deterministic, non-repeating-looking test data.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Sends `data` and reads the echo back concurrently; the write side is
/// half-closed at the end, so the read ends when the server closes.
async fn echo_round_trip(stream: PortStream, data: Vec<u8>) -> Vec<u8> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        for chunk in data.chunks(64 * 1024 + 7) {
            wr.write_all(chunk).await.expect("write to the port");
        }
        wr.shutdown().await.expect("half-close the port");
        wr
    });
    let mut back = Vec::new();
    rd.read_to_end(&mut back).await.expect("read from the port");
    let _wr = writer.await.expect("the writer task");
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_server_inside_a_networkless_sandbox_answers() {
    let sbx = sandboxes("port-http").await;
    let (sb, _g) = sandbox(&sbx, "port-http").await;
    // No network at all: only loopback inside.
    assert_eq!(
        sh(&sb, "ls /sys/class/net | sort | tr '\\n' ' '").await,
        "lo"
    );

    let body = format!("hello from {} over an exec relay\n", sb.id());
    sb.write_file("/tmp/www/hello.txt", body.as_bytes(), 0o644, None)
        .await
        .unwrap();
    sh(
        &sb,
        "cd /tmp/www && python3 -m http.server 8000 --bind 127.0.0.1 >/tmp/http.log 2>&1 &",
    )
    .await;
    wait_listening(&sb, 8000).await;

    let mut stream = sb.connect_port(8000).await.unwrap();
    assert_eq!(stream.port(), 8000);
    stream
        .write_all(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .expect("the server closes the connection after answering")
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, got) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {}", body.len())),
        "{head}"
    );
    assert_eq!(got, body);

    // Half-close: the request ends with our end-of-file, and the answer
    // still comes back on the open read side.
    let mut stream = sb.connect_port(8000).await.unwrap();
    stream
        .write_all(b"GET /missing HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.0 404 "), "{response}");
    sb.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_nobody_listens_on_is_a_clear_error() {
    let sbx = sandboxes("port-closed").await;
    let (sb, _g) = sandbox(&sbx, "port-closed").await;

    let started = Instant::now();
    let err = sb.connect_port(8123).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, SandboxError::PortClosed { port: 8123 }),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(
        err.to_string(),
        "nothing listens on port 8123 inside the sandbox (127.0.0.1:8123 refused the connection)"
    );
    assert!(matches!(
        sb.connect_port(0).await.unwrap_err(),
        SandboxError::Invalid(_)
    ));
    // The failed relay is gone.
    assert!(relay_uids(&sb).await.is_empty());

    // Once the sandbox is gone, the error says that instead.
    sb.kill().await.unwrap();
    let err = sb.connect_port(8123).await.unwrap_err();
    assert!(
        matches!(err, SandboxError::NotRunning { .. }),
        "{err:?}: {err}"
    );
    sb.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_mib_go_through_an_echo_server_byte_for_byte() {
    let sbx = sandboxes("port-echo").await;
    let (sb, _g) = sandbox(&sbx, "port-echo").await;
    start_echo(&sb, 9000).await;

    let data = pattern(5 << 20, 0x5eed);
    let stream = sb.connect_port(9000).await.unwrap();
    let started = Instant::now();
    let back = tokio::time::timeout(
        Duration::from_secs(120),
        echo_round_trip(stream, data.clone()),
    )
    .await
    .expect("5 MiB round trip timed out");
    eprintln!("5 MiB echoed in {:?}", started.elapsed());
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the echoed bytes differ");
    sb.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_at_once_are_independent() {
    let sbx = sandboxes("port-two").await;
    let (sb, _g) = sandbox(&sbx, "port-two").await;
    start_echo(&sb, 9000).await;

    let mut a = sb.connect_port(9000).await.unwrap();
    let mut b = sb.connect_port(9000).await.unwrap();
    assert_eq!(relay_uids(&sb).await.len(), 2);

    // Interleaved: both are open, each gets only its own bytes back.
    a.write_all(b"first to a").await.unwrap();
    b.write_all(b"first to b").await.unwrap();
    let mut buf = [0u8; 10];
    b.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"first to b");
    a.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"first to a");

    // And both carry bulk data at the same time.
    let (da, db) = (pattern(1 << 20, 1), pattern(1 << 20, 2));
    let (ba, bb) = tokio::time::timeout(
        Duration::from_secs(120),
        futures::future::join(
            echo_round_trip(a, da.clone()),
            echo_round_trip(b, db.clone()),
        ),
    )
    .await
    .expect("concurrent round trips timed out");
    assert!(ba == da, "connection a got other bytes back");
    assert!(bb == db, "connection b got other bytes back");
    sb.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_ends_the_relay() {
    let sbx = sandboxes("port-drop").await;
    let (sb, _g) = sandbox(&sbx, "port-drop").await;
    start_echo(&sb, 9000).await;

    let mut stream = sb.connect_port(9000).await.unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    // One relay, running as the sandbox user, not root.
    let uid = sb.user().uid.to_string();
    assert_eq!(relay_uids(&sb).await, vec![uid]);

    // Dropped mid-connection, without a shutdown.
    drop(stream);
    await_no_relay(&sb).await;
    // The server is unharmed and takes new connections.
    let again = sb.connect_port(9000).await.unwrap();
    assert_eq!(echo_round_trip(again, b"pong".to_vec()).await, b"pong");
    await_no_relay(&sb).await;

    // A peer that never closes (so the relay would never end by itself) is
    // cut off too: dropping the stream cancels the exec.
    start_server(&sb, 9001, "hold").await;
    let mut held = sb.connect_port(9001).await.unwrap();
    held.write_all(b"anyone there?").await.unwrap();
    held.flush().await.unwrap();
    assert_eq!(relay_uids(&sb).await.len(), 1);
    drop(held);
    await_no_relay(&sb).await;
    sb.remove().await.unwrap();
}
