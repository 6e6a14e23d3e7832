//! A Docker host reached over mutual TLS (`DOCKER_HOST=tcp://…` with `DOCKER_CERT_PATH`): the
//! test starts a second `dockerd` of its own (own unix socket, data root, exec root, pid file
//! and bridge, no iptables, so the main daemon's `docker0` is never touched: a daemon started
//! with `--bridge=none` deletes the host's `docker0` interface on Docker 20.10)
//! listening on `tcp://127.0.0.1:PORT --tlsverify` with certificates from a throwaway openssl
//! CA, runs a sandbox there, and stops and removes the daemon and everything in it at the end.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use drydock_sandbox::{ExecSpec, Images, Sandboxes};

const IMAGE: &str = "drydock-tls-test:tiny";

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`
/// (`ca.pem`, `server-cert.pem`, `server-key.pem`; the client's as `cert.pem`/`key.pem` in
/// `dir/client`, with `ca.pem`, the layout `DOCKER_CERT_PATH` names).
fn make_certs(dir: &Path) -> PathBuf {
    let ssl = |args: &[&str]| run(Command::new("openssl").current_dir(dir).args(args));
    ssl(&["genrsa", "-out", "ca-key.pem", "2048"]);
    ssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca-key.pem",
        "-days",
        "1",
        "-subj",
        "/CN=drydock test CA",
        "-out",
        "ca.pem",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (who, subject) in [("server", "/CN=127.0.0.1"), ("client", "/CN=drydock")] {
        ssl(&["genrsa", "-out", &format!("{who}-key.pem"), "2048"]);
        ssl(&[
            "req",
            "-new",
            "-key",
            &format!("{who}-key.pem"),
            "-subj",
            subject,
            "-out",
            &format!("{who}.csr"),
        ]);
        ssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{who}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &format!("{who}.ext"),
            "-out",
            &format!("{who}-cert.pem"),
        ]);
    }
    let client = dir.join("client");
    std::fs::create_dir_all(&client).unwrap();
    std::fs::copy(dir.join("ca.pem"), client.join("ca.pem")).unwrap();
    std::fs::copy(dir.join("client-cert.pem"), client.join("cert.pem")).unwrap();
    std::fs::copy(dir.join("client-key.pem"), client.join("key.pem")).unwrap();
    client
}

/// The second daemon: stopped, and its state removed, when dropped.
struct Daemon {
    child: Child,
    /// The bridge interface created for this daemon (removed at the end).
    bridge: String,
    dir: tempfile::TempDir,
    socket: String,
    tcp: String,
    client_certs: PathBuf,
}

impl Daemon {
    fn start() -> Self {
        // Short paths: containerd's socket under the exec root must fit a unix socket path.
        let dir = tempfile::Builder::new()
            .prefix("ddtls")
            .tempdir_in("/tmp")
            .unwrap();
        let root = dir.path();
        let client_certs = make_certs(root);
        // Its own bridge, made here: `--bridge=none` would make dockerd delete `docker0`.
        let bridge = format!("ddtls{:x}", std::process::id() & 0xfffff);
        run(Command::new("ip").args(["link", "add", &bridge, "type", "bridge"]));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(root.join("daemon.json"), "{}").unwrap();
        let socket = format!("unix://{}", root.join("d.sock").display());
        let tcp = format!("tcp://127.0.0.1:{port}");
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(root.join("daemon.json"))
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("x"))
            .arg("--pidfile")
            .arg(root.join("d.pid"))
            .args(["-H", &socket, "-H", &tcp])
            .args([
                &format!("--bridge={bridge}"),
                "--iptables=false",
                "--ip-masq=false",
                "--ip-forward=false",
            ])
            .args(["--tlsverify", "--tlscacert"])
            .arg(root.join("ca.pem"))
            .arg("--tlscert")
            .arg(root.join("server-cert.pem"))
            .arg("--tlskey")
            .arg(root.join("server-key.pem"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("dockerd.log")).unwrap())
            .spawn()
            .unwrap();
        let daemon = Daemon {
            child,
            bridge,
            dir,
            socket,
            tcp,
            client_certs,
        };
        let started = Instant::now();
        while !daemon.docker(&["version"]).status.success() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the test dockerd did not start: {}",
                std::fs::read_to_string(daemon.dir.path().join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        daemon
    }

    /// `docker` against this daemon's own unix socket.
    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .env_remove("DOCKER_HOST")
            .args(["-H", &self.socket])
            .args(args)
            .output()
            .unwrap()
    }

    /// A tiny image made from the host's own `dash` and `coreutils` (no registry here): enough
    /// for a sandbox's `sleep` and a shell exec.
    fn import_tiny_image(&self) {
        let rootfs = self.dir.path().join("rootfs");
        let mut files: Vec<PathBuf> = Vec::new();
        for bin in [
            "/bin/dash",
            "/bin/sleep",
            "/bin/echo",
            "/bin/cat",
            "/bin/rm",
            "/usr/bin/id",
            "/usr/bin/setsid",
        ] {
            files.push(PathBuf::from(bin));
            let ldd = Command::new("ldd").arg(bin).output().unwrap();
            for line in String::from_utf8_lossy(&ldd.stdout).lines() {
                if let Some(lib) = line.split_whitespace().find(|w| w.starts_with('/')) {
                    files.push(PathBuf::from(lib));
                }
            }
        }
        for file in &files {
            let to = rootfs.join(file.strip_prefix("/").unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(std::fs::canonicalize(file).unwrap(), &to).unwrap();
        }
        std::os::unix::fs::symlink("dash", rootfs.join("bin/sh")).unwrap();
        std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
        std::fs::set_permissions(
            rootfs.join("tmp"),
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .unwrap();
        let tar = self.dir.path().join("rootfs.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg("."));
        let out = self.docker(&[
            "import",
            "--change",
            "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            tar.to_str().unwrap(),
            IMAGE,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).lines() {
            let _ = self.docker(&["rm", "-f", "-v", id]);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Overlay mounts of the daemon's data root are gone once it stopped; what is left is
        // plain files, removed with the temporary directory.
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.path().join("data"))
            .output();
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_host_over_tls_runs_sandboxes_with_the_client_certificate() {
    let daemon = Daemon::start();
    daemon.import_tiny_image();

    let mut defaults = common::defaults("tls");
    defaults.image = IMAGE.to_owned();
    defaults.tls_cert_path = Some(daemon.client_certs.clone());
    let sandboxes = Sandboxes::connect_to(&daemon.tcp, defaults.clone())
        .await
        .unwrap();
    let sandbox = sandboxes.create(sandboxes.spec("tls-task")).await.unwrap();
    let said = common::sh(&sandbox, "echo over-tls; id -u").await;
    assert_eq!(said, "over-tls\n1000", "the exec ran as the sandbox user");
    let failed = common::run(&sandbox, ExecSpec::shell("exit 7")).await;
    assert!(
        matches!(failed.exit, drydock_sandbox::ExecExit::Code(7)),
        "{:?}",
        failed.exit
    );
    let listed = sandboxes.list(&[]).await.unwrap();
    assert_eq!(
        listed.len(),
        1,
        "the sandbox is on the TLS host: {listed:?}"
    );
    // It is on the second daemon, not the main one.
    let main = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=drydock.instance={}", defaults.instance_id))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&main.stdout).trim().is_empty());
    sandbox.remove().await.unwrap();
    assert!(sandboxes.list(&[]).await.unwrap().is_empty());

    let images = Images::connect(Some(&daemon.tcp), Some(&daemon.client_certs))
        .await
        .unwrap();
    assert!(images.exists(IMAGE).await.unwrap());

    // Without the client certificate the daemon refuses the connection.
    let mut plain = defaults.clone();
    plain.tls_cert_path = None;
    assert!(Sandboxes::connect_to(&daemon.tcp, plain).await.is_err());
    // A client certificate from another CA is refused too.
    let stranger = tempfile::tempdir().unwrap();
    run(Command::new("openssl")
        .current_dir(stranger.path())
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=stranger",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ]));
    std::fs::copy(
        daemon.dir.path().join("ca.pem"),
        stranger.path().join("ca.pem"),
    )
    .unwrap();
    let mut wrong = defaults;
    wrong.tls_cert_path = Some(stranger.path().to_owned());
    assert!(Sandboxes::connect_to(&daemon.tcp, wrong).await.is_err());
}
