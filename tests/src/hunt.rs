//! The LLM-key hunt: whether a user's real model key is anywhere in a running sandbox, in every
//! process's environment and command line (`/proc/*/environ`, `/proc/*/cmdline`) and in the
//! files under `/home`, `/workspace`, `/tmp` and `/etc`. It runs as the agent's user (uid 1000):
//! the same uid may read its processes' environments, and the sandbox has no capabilities, so
//! root inside could not see more.
//!
//! A real CLI's process lives only while its turn runs, so [`KeyHunt::now`] is meant to be
//! called from a model stand-in's script: the CLI is then alive, waiting for the answer.

use std::sync::Mutex;

/// Runs `script` with `sh -c` in `container` as uid 1000; stdout and stderr together.
pub fn exec_as_agent(container: &str, script: &str) -> Vec<u8> {
    let out = std::process::Command::new("docker")
        .args(["exec", "-u", "1000", container, "sh", "-c", script])
        .output()
        .expect("docker exec");
    let mut all = out.stdout;
    all.extend_from_slice(&out.stderr);
    all
}

/// Every process's environment and command line in `container`.
pub fn processes(container: &str) -> Vec<u8> {
    exec_as_agent(
        container,
        "for p in /proc/[0-9]*; do cat $p/environ $p/cmdline 2>/dev/null; echo; done",
    )
}

/// The files a key could be written to in `container`, as one tar stream.
pub fn files(container: &str) -> Vec<u8> {
    exec_as_agent(
        container,
        "tar -cf - /home /workspace /tmp /etc 2>/dev/null",
    )
}

/// Whether `haystack` contains `needle` (a sandbox's files run to hundreds of megabytes: the
/// CLIs unpack themselves under the agent's home).
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    memchr::memmem::find(haystack, needle.as_bytes()).is_some()
}

/// What one hunt saw in a sandbox.
#[derive(Clone)]
pub struct Hunted {
    /// The containers hunted in.
    pub containers: Vec<String>,
    /// [`processes`] of them.
    pub processes: Vec<u8>,
    /// [`files`] of them.
    pub files: Vec<u8>,
}

/// A hunt for `key` in the sandboxes of a drydock server that runs one task.
pub struct KeyHunt {
    key: String,
    instance: Mutex<Option<String>>,
    hunted: Mutex<Option<Hunted>>,
}

impl KeyHunt {
    /// A hunt for `key`; [`KeyHunt::watch`] names the server.
    pub fn new(key: &str) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            key: key.to_owned(),
            instance: Mutex::new(None),
            hunted: Mutex::new(None),
        })
    }

    /// Hunts in the sandboxes of the server with this instance id (its `drydock.instance`).
    pub fn watch(&self, instance_id: &str) {
        *self.instance.lock().unwrap_or_else(|e| e.into_inner()) = Some(instance_id.to_owned());
    }

    /// Hunts once: the first call while a task sandbox of the watched server runs takes a look;
    /// later calls do nothing.
    pub fn now(&self) {
        let Some(instance) = self
            .instance
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return;
        };
        let mut hunted = self.hunted.lock().unwrap_or_else(|e| e.into_inner());
        if hunted.is_some() {
            return;
        }
        // Every sandbox of the server: the task's may have come from the warm pool (labelled
        // `drydock.pool`, not `drydock.task`), and idle pool sandboxes must not hold it either.
        let out = std::process::Command::new("docker")
            .args([
                "ps",
                "-q",
                "--filter",
                &format!("label=drydock.instance={instance}"),
            ])
            .output()
            .expect("docker ps");
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        if ids.is_empty() {
            return;
        }
        let mut seen = Hunted {
            containers: ids.clone(),
            processes: Vec::new(),
            files: Vec::new(),
        };
        let started = std::time::Instant::now();
        for id in &ids {
            seen.processes.extend(processes(id));
            seen.files.extend(files(id));
        }
        eprintln!(
            "key hunt: {} sandbox(es), {} bytes of processes, {} bytes of files, {:?}",
            ids.len(),
            seen.processes.len(),
            seen.files.len(),
            started.elapsed()
        );
        *hunted = Some(seen);
    }

    /// Checks the hunt ran while the agent's CLI was alive (its environment carries a gateway
    /// placeholder, `ddgw-…`) and found neither the key nor its first 24 characters anywhere.
    pub fn assert_key_never_in_the_sandbox(&self) {
        let hunted = self
            .hunted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .expect("the hunt ran while the task's sandbox was up");
        assert!(
            contains(&hunted.processes, "ddgw-"),
            "the hunt saw the agent's environment, with its placeholder"
        );
        for (what, bytes) in [("processes", &hunted.processes), ("files", &hunted.files)] {
            assert!(
                !contains(bytes, &self.key),
                "the real key is in the sandbox's {what}"
            );
            assert!(
                !contains(bytes, &self.key[..24]),
                "part of the key is in the sandbox's {what}"
            );
        }
    }
}
