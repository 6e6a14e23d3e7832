//! TCP connections from the host to a port inside a sandbox, relayed over an
//! exec's stdin and stdout (see [`Sandbox::connect_port`](crate::Sandbox::connect_port)).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{Result, SandboxError};
use crate::exec::{self, ExecExit, ExecOutput, ExecSpec, ExecStdin, OutputStream};
use crate::sandbox::Shared;

/// The relay run inside the sandbox as `python3 -I -c RELAY <port>`; the port
/// is its only argument (`sys.argv[1]`), never interpolated into code.
///
/// It connects to `127.0.0.1:<port>` and then writes the one-byte
/// [`READY`] marker to stdout; when nothing listens it says so on stderr and
/// exits with [`EXIT_REFUSED`] (other connect failures: [`EXIT_CONNECT`]).
/// Then stdin is copied to the socket by a thread (stdin EOF becomes
/// `shutdown(SHUT_WR)`) and the socket to stdout by the main thread (socket
/// EOF: everything is already written, exit 0). A socket error while reading
/// is reported on stderr with exit 1. Reads are 64 KiB at most and writes
/// block, so nothing piles up in the relay. `-I` keeps the sandbox's working
/// directory and `PYTHON*` variables out of the module search path.
const RELAY: &str = r#"# drydock-sandbox port relay: stdin/stdout <-> 127.0.0.1:<port>
import os, socket, sys, threading
port = int(sys.argv[1])
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
except ConnectionRefusedError:
    sys.stderr.write("nothing listens on 127.0.0.1:%d\n" % port)
    sys.exit(3)
except OSError as e:
    sys.stderr.write("cannot connect to 127.0.0.1:%d: %s\n" % (port, e))
    sys.exit(4)
s.settimeout(None)

def out(data):
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]

def upstream():
    try:
        while True:
            data = os.read(0, 65536)
            if not data:
                s.shutdown(socket.SHUT_WR)
                return
            s.sendall(data)
    except OSError:
        pass
    # The peer stopped reading: drain stdin so the host's writes never hang.
    # The reading side reports how the connection ended.
    try:
        while os.read(0, 65536):
            pass
    except OSError:
        pass

out(b"R")
threading.Thread(target=upstream, daemon=True).start()
try:
    while True:
        data = s.recv(65536)
        if not data:
            break
        out(data)
except OSError as e:
    sys.stderr.write("connection to 127.0.0.1:%d failed: %s\n" % (port, e))
    sys.stderr.flush()
    os._exit(1)
os._exit(0)
"#;

/// The byte the relay writes to stdout once connected.
const READY: u8 = b'R';
/// The relay's exit code when the connection was refused.
const EXIT_REFUSED: i64 = 3;
/// The relay's exit code for any other connect failure.
const EXIT_CONNECT: i64 = 4;
/// How long to wait for the relay to report (python's start-up plus the
/// relay's own 10 s connect timeout, with room to spare on a busy host).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of the relay's stderr is kept for error messages.
const STDERR_TAIL: usize = 4 * 1024;

/// A TCP connection to a port inside a sandbox, from
/// [`Sandbox::connect_port`](crate::Sandbox::connect_port).
///
/// Reading yields the bytes the peer sent (end-of-file when it closed its
/// side); writing sends bytes to the peer, and
/// [`shutdown`](tokio::io::AsyncWriteExt::shutdown) half-closes the
/// connection (the peer reads end-of-file and can still answer). Use
/// [`tokio::io::split`] to read and write from different tasks. Dropping it
/// closes the connection and ends the relay inside the sandbox.
pub struct PortStream {
    port: u16,
    output: ExecOutput,
    stdin: ExecStdin,
    /// Stdout bytes received but not read yet: at most one frame.
    pending: Bytes,
    /// The tail of the relay's stderr, which is diagnostics, not data.
    stderr: Vec<u8>,
    /// The relay's output has closed.
    ended: bool,
}

impl PortStream {
    /// The port inside the sandbox this stream is connected to.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn keep_stderr(&mut self, data: &[u8]) {
        keep_tail(&mut self.stderr, data);
    }
}

fn keep_tail(tail: &mut Vec<u8>, data: &[u8]) {
    tail.extend_from_slice(data);
    let excess = tail.len().saturating_sub(STDERR_TAIL);
    tail.drain(..excess);
}

impl AsyncRead for PortStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            match this.output.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => match chunk.stream {
                    OutputStream::Stdout => this.pending = chunk.data,
                    OutputStream::Stderr => this.keep_stderr(&chunk.data),
                },
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    return Poll::Ready(Err(io::Error::other(e)));
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    // The relay only writes to stderr when the connection
                    // failed (reset by the peer, for instance): report that
                    // once instead of a clean end-of-file.
                    if !this.stderr.is_empty() {
                        let detail = String::from_utf8_lossy(&this.stderr).trim().to_owned();
                        this.stderr.clear();
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::ConnectionReset,
                            format!("port {} inside the sandbox: {detail}", this.port),
                        )));
                    }
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl AsyncWrite for PortStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stdin).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdin).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}

impl std::fmt::Debug for PortStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortStream")
            .field("port", &self.port)
            .field("exec", &self.output)
            .field("ended", &self.ended)
            .finish()
    }
}

/// Starts the relay for `port` and waits until it has connected.
pub(crate) async fn connect(shared: &Arc<Shared>, port: u16) -> Result<PortStream> {
    if port == 0 {
        return Err(SandboxError::Invalid(
            "port 0 cannot be connected to".into(),
        ));
    }
    let spec = ExecSpec::new(["python3", "-I", "-c", RELAY, &port.to_string()])
        .workdir("/")
        .with_stdin();
    let mut output = exec::start(shared, &spec).await?;
    let stdin = output.take_stdin().ok_or_else(|| SandboxError::PortRelay {
        port,
        detail: "the exec has no stdin".into(),
    })?;
    let mut stderr = Vec::new();
    let first = tokio::time::timeout(READY_TIMEOUT, async {
        while let Some(chunk) = output.next().await {
            let chunk = chunk?;
            match chunk.stream {
                OutputStream::Stdout if !chunk.data.is_empty() => return Ok(Some(chunk.data)),
                OutputStream::Stdout => {}
                OutputStream::Stderr => keep_tail(&mut stderr, &chunk.data),
            }
        }
        Ok::<_, SandboxError>(None)
    })
    .await;
    let detail = |what: String, stderr: &[u8]| {
        let stderr = String::from_utf8_lossy(stderr);
        let stderr = stderr.trim();
        if stderr.is_empty() {
            what
        } else {
            format!("{what}: {stderr}")
        }
    };
    match first {
        // Dropping `output` cancels the relay.
        Err(_) => Err(SandboxError::PortRelay {
            port,
            detail: detail(
                format!("the relay did not connect within {READY_TIMEOUT:?}"),
                &stderr,
            ),
        }),
        Ok(Err(e)) => Err(e),
        Ok(Ok(Some(data))) if data[0] == READY => Ok(PortStream {
            port,
            output,
            stdin,
            pending: data.slice(1..),
            stderr,
            ended: false,
        }),
        Ok(Ok(Some(_))) => Err(SandboxError::PortRelay {
            port,
            detail: detail("the relay wrote unexpected output".into(), &stderr),
        }),
        Ok(Ok(None)) => match output.exit().await? {
            ExecExit::Code(EXIT_REFUSED) => Err(SandboxError::PortClosed { port }),
            ExecExit::Code(EXIT_CONNECT) => Err(SandboxError::PortRelay {
                port,
                detail: detail("cannot connect".into(), &stderr),
            }),
            ExecExit::Code(127) => Err(SandboxError::PortRelay {
                port,
                detail: detail(
                    "python3 is not installed in the sandbox image".into(),
                    &stderr,
                ),
            }),
            exit => Err(SandboxError::PortRelay {
                port,
                detail: detail(format!("the relay ended ({exit})"), &stderr),
            }),
        },
    }
}
