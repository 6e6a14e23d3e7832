//! Tar archives for uploads, built on the fly so large trees stream in bounded memory.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

use crate::error::{Result, SandboxError};
use crate::sandbox::Owner;

const CHUNK: usize = 256 * 1024;

/// A `Write` that hands full chunks to an async receiver; the bounded channel
/// makes the tar builder wait for the upload instead of filling memory.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "upload was abandoned"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Streams a tar of the contents of `dir` (not `dir` itself), every entry
/// owned by `owner`. Symlinks are stored as links, never followed.
pub(crate) fn tar_dir(
    dir: PathBuf,
    owner: Owner,
) -> Result<impl Stream<Item = io::Result<Bytes>> + Send + 'static> {
    if !fs::metadata(&dir)?.is_dir() {
        return Err(SandboxError::Invalid(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let result = (|| -> io::Result<()> {
            let mut builder = tar::Builder::new(&mut writer);
            append_tree(&mut builder, &dir, Path::new(""), owner)?;
            builder.finish()?;
            drop(builder);
            Ok(())
        })()
        .and_then(|()| writer.flush());
        if let Err(e) = result {
            // Ends the body with an error so Docker sees a failed upload
            // rather than a silently truncated tree.
            let _ = tx.blocking_send(Err(e));
        }
    });
    Ok(tokio_stream_from(rx))
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<io::Result<Bytes>>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn append_tree<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    owner: Owner,
) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(root.join(rel))?.collect::<io::Result<_>>()?;
    // Sorted for reproducible archives.
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let rel_path = rel.join(entry.file_name());
        let full = root.join(&rel_path);
        let meta = fs::symlink_metadata(&full)?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        header.set_uid(u64::from(owner.uid));
        header.set_gid(u64::from(owner.gid));
        // Names on the host mean nothing inside the sandbox.
        header.set_username("")?;
        header.set_groupname("")?;
        let ft = meta.file_type();
        if ft.is_dir() {
            header.set_size(0);
            builder.append_data(&mut header, &rel_path, io::empty())?;
            append_tree(builder, root, &rel_path, owner)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&full)?;
            header.set_size(0);
            builder.append_link(&mut header, &rel_path, &target)?;
        } else if ft.is_file() {
            let file = fs::File::open(&full)?;
            builder.append_data(&mut header, &rel_path, file)?;
        }
        // Sockets, fifos and devices are skipped: they have no place in a
        // working tree.
    }
    Ok(())
}

/// A tar holding one regular file.
pub(crate) fn single_file_tar(
    name: &str,
    contents: &[u8],
    mode: u32,
    owner: Owner,
) -> Result<Vec<u8>> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(contents.len() as u64);
    header.set_mode(mode & 0o7777);
    header.set_uid(u64::from(owner.uid));
    header.set_gid(u64::from(owner.gid));
    header.set_mtime(crate::sandbox::unix_now());
    let mut builder = tar::Builder::new(Vec::with_capacity(contents.len() + 1024));
    builder.append_data(&mut header, name, contents)?;
    Ok(builder.into_inner()?)
}

/// [`Sandbox::upload`](crate::Sandbox::upload) where there is no archive endpoint
/// (Kubernetes): `tar -x` inside the sandbox, fed through the exec's stdin. The extraction runs
/// as the sandbox user, so entries come out owned by it whatever the headers say.
pub(crate) async fn through_exec<S>(
    shared: &std::sync::Arc<crate::sandbox::Shared>,
    dest: &str,
    tar: S,
) -> Result<()>
where
    S: Stream<Item = io::Result<Bytes>> + Send + 'static,
{
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;

    let spec = crate::exec::ExecSpec::new(["tar", "-x", "-p", "-f", "-", "-C", dest])
        .workdir("/")
        .with_stdin();
    let mut output = crate::exec::start(shared, &spec).await?;
    let mut stdin = output
        .take_stdin()
        .ok_or_else(|| SandboxError::Invalid("the upload exec has no stdin".into()))?;
    let canceller = output.canceller();
    let feed = async move {
        let sent = async {
            let mut tar = std::pin::pin!(tar);
            while let Some(chunk) = tar.next().await {
                stdin.write_all(&chunk?).await?;
            }
            stdin.shutdown().await?;
            Ok::<_, SandboxError>(())
        }
        .await;
        if sent.is_err() {
            // `tar` would wait for the rest forever.
            let _ = canceller.cancel().await;
        }
        sent
    };
    let drain = async {
        let mut stderr = Vec::new();
        while let Some(chunk) = output.next().await {
            let chunk = chunk?;
            if chunk.stream == crate::OutputStream::Stderr && stderr.len() < 16 * 1024 {
                stderr.extend_from_slice(&chunk.data);
            }
        }
        Ok::<_, SandboxError>(stderr)
    };
    // The output closes when `tar` has ended; input it did not take (it failed early) has
    // nowhere to go, so the feed is dropped then instead of waiting for it.
    let (fed, stderr) = {
        tokio::pin!(feed);
        tokio::pin!(drain);
        let mut fed = None;
        let stderr = loop {
            tokio::select! {
                r = &mut feed, if fed.is_none() => fed = Some(r),
                d = &mut drain => break d,
            }
        };
        (fed, stderr)
    };
    let stderr = stderr?;
    let exit = output.exit().await?;
    if exit.success() {
        fed.unwrap_or(Ok(()))?;
    }
    if !exit.success() {
        return Err(SandboxError::Invalid(format!(
            "upload into {dest} failed ({exit}): {}",
            String::from_utf8_lossy(&stderr).trim()
        )));
    }
    Ok(())
}
