//! Connections from inside a sandbox out to the host, carried over one exec's stdin and stdout
//! (see [`Sandbox::egress_listener`](crate::Sandbox::egress_listener)).
//!
//! A sandbox without a network (`--network none`) has only loopback: no route anywhere, so
//! nothing in it can reach the host, another sandbox or the internet by itself. The relay below
//! listens on `127.0.0.1:<port>` inside the sandbox and hands every connection it accepts to the
//! host over the exec's streams, where the caller serves it (drydock's egress proxy and model
//! gateway). The same works wherever an exec works: a remote Docker host, a Kubernetes pod.
//!
//! Frames, both directions: `kind: u8`, `id: u32` (big-endian), `len: u32` (big-endian), then
//! `len` bytes. Kinds: [`OPEN`] (relay → host, a new connection), [`DATA`], [`EOF`] (that side
//! will send no more; the other may still answer) and [`CLOSE`] (the connection is gone).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

use crate::error::{Result, SandboxError};
use crate::exec::{self, ExecSpec, OutputStream};
use crate::sandbox::Shared;

/// The relay run inside the sandbox as `python3 -I -c RELAY <port>`.
///
/// The main thread owns stdout: it accepts connections and reads sockets (`selectors`), sending
/// `OPEN`, `DATA`, `EOF` and `CLOSE` frames. A second thread reads frames from stdin and writes
/// them to the sockets (blocking `sendall`: a client that stops reading slows the host down
/// rather than filling memory). It writes `R` once it listens, and exits when stdin closes.
const RELAY: &str = r#"# drydock-sandbox egress relay: 127.0.0.1:<port> <-> framed stdin/stdout
import os, selectors, socket, struct, sys, threading
port = int(sys.argv[1])
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    srv.bind(("127.0.0.1", port))
except OSError as e:
    sys.stderr.write("cannot listen on 127.0.0.1:%d: %s\n" % (port, e))
    sys.exit(4)
srv.listen(128)
srv.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(srv, selectors.EVENT_READ, None)
conns = {}
local_eof, remote_eof = set(), set()
lock = threading.Lock()
wake_r, wake_w = os.pipe()
sel.register(wake_r, selectors.EVENT_READ, "wake")
out_lock = threading.Lock()

def out(kind, cid, data=b""):
    frame = struct.pack(">BII", kind, cid, len(data)) + data
    view = memoryview(frame)
    with out_lock:
        while view:
            view = view[os.write(1, view):]

def read_exact(n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(0, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf

def drop(cid):
    with lock:
        s = conns.pop(cid, None)
        local_eof.discard(cid)
        remote_eof.discard(cid)
    if s is not None:
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()

def inbound():
    while True:
        head = read_exact(9)
        if head is None:
            os._exit(0)
        kind, cid, n = struct.unpack(">BII", head)
        data = read_exact(n) if n else b""
        if data is None:
            os._exit(0)
        with lock:
            s = conns.get(cid)
        if s is None:
            continue
        try:
            if kind == 1:
                s.setblocking(True)
                s.sendall(data)
            elif kind == 2:
                s.shutdown(socket.SHUT_WR)
                with lock:
                    remote_eof.add(cid)
                    both = cid in local_eof
                if both:
                    drop(cid)
            elif kind == 3:
                drop(cid)
                os.write(wake_w, b"x")
        except OSError:
            drop(cid)
            out(3, cid)

threading.Thread(target=inbound, daemon=True).start()
out(0, 0, b"R")
next_id = 1
while True:
    for key, _ in sel.select():
        if key.data == "wake":
            os.read(wake_r, 4096)
            continue
        if key.fileobj is srv:
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            cid = next_id
            next_id += 1
            with lock:
                conns[cid] = c
            out(0, cid)
            sel.register(c, selectors.EVENT_READ, cid)
            continue
        cid = key.data
        s = key.fileobj
        try:
            data = s.recv(65536)
        except OSError:
            drop(cid)
            out(3, cid)
            continue
        if data:
            out(1, cid, data)
        else:
            try:
                sel.unregister(s)
            except (KeyError, ValueError):
                pass
            out(2, cid)
            with lock:
                local_eof.add(cid)
                both = cid in remote_eof
            if both:
                drop(cid)
"#;

/// A new connection (the relay's ready marker uses it with id 0).
const OPEN: u8 = 0;
/// Bytes of a connection.
const DATA: u8 = 1;
/// One side will send no more.
const EOF: u8 = 2;
/// The connection is gone.
const CLOSE: u8 = 3;
/// Frame header: kind, id, length.
const HEADER: usize = 9;
/// Largest frame accepted from the relay (it sends at most 64 KiB).
const MAX_FRAME: usize = 1 << 20;
/// How long the relay may take to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Buffer of each connection's in-process pipe.
const PIPE: usize = 64 * 1024;

/// One connection opened inside a sandbox to the relay's port: read what the client sent,
/// write the answer; shutting down the write side sends end-of-file to the client.
pub type EgressConn = DuplexStream;

/// Accepts the connections made inside a sandbox to its relay port, from
/// [`Sandbox::egress_listener`](crate::Sandbox::egress_listener). Dropping it ends the relay
/// (and every connection through it).
pub struct EgressListener {
    accepted: mpsc::Receiver<EgressConn>,
    pump: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for EgressListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressListener").finish_non_exhaustive()
    }
}

impl EgressListener {
    /// The next connection; `None` once the relay has ended (the sandbox stopped, or the exec
    /// failed).
    pub async fn accept(&mut self) -> Option<EgressConn> {
        self.accepted.recv().await
    }
}

impl Drop for EgressListener {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

/// Starts the relay on `port` and waits until it listens.
pub(crate) async fn listen(shared: &Arc<Shared>, port: u16) -> Result<EgressListener> {
    let relay_err = |detail: String| SandboxError::PortRelay { port, detail };
    let spec = ExecSpec::new(["python3", "-I", "-c", RELAY, &port.to_string()])
        .workdir("/")
        .with_stdin();
    let mut output = exec::start(shared, &spec).await?;
    let mut stdin = output
        .take_stdin()
        .ok_or_else(|| relay_err("the exec has no stdin".into()))?;
    let mut buf = BytesMut::new();
    let mut stderr = Vec::new();
    let ready = tokio::time::timeout(READY_TIMEOUT, async {
        while buf.len() < HEADER + 1 {
            match output.next().await {
                Some(Ok(chunk)) => match chunk.stream {
                    OutputStream::Stdout => buf.extend_from_slice(&chunk.data),
                    OutputStream::Stderr => stderr.extend_from_slice(&chunk.data),
                },
                Some(Err(e)) => return Err(e),
                None => return Ok(false),
            }
        }
        Ok(true)
    })
    .await;
    let said = |stderr: &[u8]| String::from_utf8_lossy(stderr).trim().to_owned();
    match ready {
        Err(_) => return Err(relay_err("the egress relay did not start in time".into())),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(false)) => {
            return Err(relay_err(format!(
                "the egress relay ended: {}",
                said(&stderr)
            )));
        }
        Ok(Ok(true)) if buf[..HEADER + 1] == [OPEN, 0, 0, 0, 0, 0, 0, 0, 1, b'R'] => {
            buf.advance(HEADER + 1);
        }
        Ok(Ok(true)) => return Err(relay_err("the egress relay wrote unexpected output".into())),
    }

    let (accept_tx, accepted) = mpsc::channel(64);
    let (frames_tx, mut frames_rx) = mpsc::channel::<Bytes>(64);
    // One writer owns the exec's stdin: frames from every connection, in order.
    let writer = tokio::spawn(async move {
        while let Some(frame) = frames_rx.recv().await {
            if stdin.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = stdin.shutdown().await;
    });
    let pump = tokio::spawn(async move {
        let mut conns: HashMap<u32, tokio::io::WriteHalf<DuplexStream>> = HashMap::new();
        let mut readers: HashMap<u32, tokio::task::JoinHandle<()>> = HashMap::new();
        'outer: loop {
            while let Some((kind, id, data)) = take_frame(&mut buf) {
                match kind {
                    OPEN => {
                        let (ours, theirs) = tokio::io::duplex(PIPE);
                        let (mut read, write) = tokio::io::split(ours);
                        conns.insert(id, write);
                        let frames = frames_tx.clone();
                        readers.insert(
                            id,
                            tokio::spawn(async move {
                                let mut chunk = vec![0u8; 64 * 1024];
                                loop {
                                    match read.read(&mut chunk).await {
                                        Ok(0) | Err(_) => {
                                            let _ = frames.send(frame(EOF, id, &[])).await;
                                            return;
                                        }
                                        Ok(n) => {
                                            if frames
                                                .send(frame(DATA, id, &chunk[..n]))
                                                .await
                                                .is_err()
                                            {
                                                return;
                                            }
                                        }
                                    }
                                }
                            }),
                        );
                        if accept_tx.send(theirs).await.is_err() {
                            break 'outer;
                        }
                    }
                    DATA => {
                        if let Some(write) = conns.get_mut(&id)
                            && write.write_all(&data).await.is_err()
                        {
                            conns.remove(&id);
                            let _ = frames_tx.send(frame(CLOSE, id, &[])).await;
                        }
                    }
                    EOF => {
                        if let Some(mut write) = conns.remove(&id) {
                            let _ = write.shutdown().await;
                        }
                    }
                    _ => {
                        conns.remove(&id);
                        if let Some(reader) = readers.remove(&id) {
                            reader.abort();
                        }
                    }
                }
            }
            match output.next().await {
                Some(Ok(chunk)) if chunk.stream == OutputStream::Stdout => {
                    buf.extend_from_slice(&chunk.data);
                    if buf.len() > MAX_FRAME + HEADER {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
        for (_, reader) in readers {
            reader.abort();
        }
        writer.abort();
    });
    Ok(EgressListener { accepted, pump })
}

fn frame(kind: u8, id: u32, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER + data.len());
    out.put_u8(kind);
    out.put_u32(id);
    out.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
    out.put_slice(data);
    out.freeze()
}

/// The next whole frame at the front of `buf`, if there is one.
fn take_frame(buf: &mut BytesMut) -> Option<(u8, u32, Bytes)> {
    if buf.len() < HEADER {
        return None;
    }
    let len = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) as usize;
    if buf.len() < HEADER + len {
        return None;
    }
    let kind = buf[0];
    let id = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    buf.advance(HEADER);
    Some((kind, id, buf.split_to(len).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_wait_for_their_whole_body() {
        let mut buf = BytesMut::new();
        let whole = frame(DATA, 7, b"hello");
        buf.extend_from_slice(&whole[..10]);
        assert!(take_frame(&mut buf).is_none());
        buf.extend_from_slice(&whole[10..]);
        buf.extend_from_slice(&frame(EOF, 7, &[]));
        assert_eq!(
            take_frame(&mut buf),
            Some((DATA, 7, Bytes::from_static(b"hello")))
        );
        assert_eq!(take_frame(&mut buf), Some((EOF, 7, Bytes::new())));
        assert!(buf.is_empty());
    }
}
