//! Reading an environment from a repository's files: `.drydock/environment.toml` (drydock's own
//! format) and the common subset of `.devcontainer/devcontainer.json`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{Base, Definition, NetworkPolicy, SetupUser, Source};

/// Path of drydock's environment file in a repository.
pub const ENVIRONMENT_TOML: &str = ".drydock/environment.toml";
/// Path of the dev container file drydock reads.
pub const DEVCONTAINER_JSON: &str = ".devcontainer/devcontainer.json";

/// The devcontainer.json keys drydock honours; every other top-level key is logged as ignored.
pub const DEVCONTAINER_HONOURED: &[&str] = &[
    "name",
    "image",
    "build",
    "containerEnv",
    "remoteUser",
    "onCreateCommand",
    "updateContentCommand",
    "postCreateCommand",
    "postStartCommand",
];

/// Why an environment file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file is not valid TOML / JSONC or has keys drydock does not know.
    #[error("{file} is not valid: {reason}")]
    Invalid {
        /// Which file.
        file: &'static str,
        /// What the parser said.
        reason: String,
    },
}

/// `.drydock/environment.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvironmentToml {
    /// An operator-registered image name.
    image: Option<String>,
    /// A Dockerfile in the repository, relative to its root.
    dockerfile: Option<String>,
    /// The build context of `dockerfile`, relative to the repository root (default `.`).
    context: Option<String>,
    /// `ARG` values for the build.
    #[serde(default)]
    build_args: BTreeMap<String, String>,
    /// Runs once per cache key.
    setup: Option<String>,
    /// `agent` (default) or `root`.
    setup_user: Option<String>,
    /// Runs on every start from a snapshot.
    maintenance: Option<String>,
    /// Files whose contents the snapshot depends on (default: the lockfiles present).
    inputs: Option<Vec<String>>,
    /// Plain variables.
    #[serde(default)]
    variables: BTreeMap<String, String>,
    /// The network policy of setup and of the agent (recorded, enforced by the network-policy
    /// work, issue 17).
    network: Option<NetworkPolicy>,
}

/// Parses `.drydock/environment.toml`.
pub fn parse_environment_toml(text: &str) -> Result<Definition, FileError> {
    let file: EnvironmentToml = toml::from_str(text).map_err(|e| FileError::Invalid {
        file: ENVIRONMENT_TOML,
        reason: e.message().to_owned(),
    })?;
    let base = match (file.image, file.dockerfile) {
        (Some(_), Some(_)) => {
            return Err(FileError::Invalid {
                file: ENVIRONMENT_TOML,
                reason: "name either `image` or `dockerfile`, not both".into(),
            });
        }
        (Some(image), None) => Base::Registered(image),
        (None, Some(dockerfile)) => Base::Dockerfile {
            context: file.context.unwrap_or_else(|| ".".into()),
            dockerfile,
            args: file.build_args,
        },
        (None, None) => Base::Default,
    };
    let setup_user = match file.setup_user.as_deref() {
        None | Some("agent") => SetupUser::Agent,
        Some("root") => SetupUser::Root,
        Some(other) => {
            return Err(FileError::Invalid {
                file: ENVIRONMENT_TOML,
                reason: format!("setup_user must be \"agent\" or \"root\", not {other:?}"),
            });
        }
    };
    Ok(Definition {
        source: Source::File,
        base,
        setup: file.setup.filter(|s| !s.trim().is_empty()),
        setup_user,
        maintenance: file.maintenance.filter(|s| !s.trim().is_empty()),
        inputs: file.inputs,
        variables: file.variables,
        network: file.network,
        notices: Vec::new(),
    })
}

/// Parses `.devcontainer/devcontainer.json` (JSON with comments): the keys in
/// [`DEVCONTAINER_HONOURED`] are used, the others named in a notice.
pub fn parse_devcontainer(text: &str) -> Result<Definition, FileError> {
    let invalid = |reason: String| FileError::Invalid {
        file: DEVCONTAINER_JSON,
        reason,
    };
    let value: Value = jsonc_parser::parse_to_serde_value(text, &Default::default())
        .map_err(|e| invalid(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(invalid("the file must hold a JSON object".into()));
    };
    let mut notices = Vec::new();
    let ignored: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| !DEVCONTAINER_HONOURED.contains(k))
        .collect();
    if !ignored.is_empty() {
        notices.push(format!(
            "{DEVCONTAINER_JSON}: ignored keys (drydock honours {}): {}",
            DEVCONTAINER_HONOURED.join(", "),
            ignored.join(", ")
        ));
    }
    let string = |key: &str| -> Result<Option<String>, FileError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(format!("`{key}` must be a string"))),
        }
    };
    let base = match (string("image")?, map.get("build")) {
        (_, Some(Value::Object(build))) => {
            let build_ignored: Vec<&str> = build
                .keys()
                .map(String::as_str)
                .filter(|k| !["dockerfile", "context", "args"].contains(k))
                .collect();
            if !build_ignored.is_empty() {
                notices.push(format!(
                    "{DEVCONTAINER_JSON}: ignored keys of `build`: {}",
                    build_ignored.join(", ")
                ));
            }
            let Some(Value::String(dockerfile)) = build.get("dockerfile") else {
                return Err(invalid("`build.dockerfile` must be a string".into()));
            };
            let context = match build.get("context") {
                Some(Value::String(c)) => c.clone(),
                None => ".".into(),
                Some(_) => return Err(invalid("`build.context` must be a string".into())),
            };
            let mut args = BTreeMap::new();
            if let Some(Value::Object(a)) = build.get("args") {
                for (k, v) in a {
                    let v = v
                        .as_str()
                        .ok_or_else(|| invalid(format!("`build.args.{k}` must be a string")))?;
                    args.insert(k.clone(), v.to_owned());
                }
            }
            // Paths in devcontainer.json are relative to the .devcontainer folder.
            Base::Dockerfile {
                context: join_relative(".devcontainer", &context),
                dockerfile: join_relative(".devcontainer", dockerfile),
                args,
            }
        }
        (_, Some(_)) => return Err(invalid("`build` must be an object".into())),
        (Some(image), None) => Base::Registered(image),
        (None, None) => Base::Default,
    };
    let mut variables = BTreeMap::new();
    if let Some(env) = map.get("containerEnv") {
        let Value::Object(env) = env else {
            return Err(invalid("`containerEnv` must be an object".into()));
        };
        for (k, v) in env {
            let v = v
                .as_str()
                .ok_or_else(|| invalid(format!("`containerEnv.{k}` must be a string")))?;
            variables.insert(k.clone(), v.to_owned());
        }
    }
    let setup_user = match string("remoteUser")?.as_deref() {
        Some("root") => SetupUser::Root,
        None => SetupUser::Agent,
        Some(other) => {
            if other != "agent" {
                notices.push(format!(
                    "{DEVCONTAINER_JSON}: remoteUser {other:?} is not a user of drydock's sandboxes; setup runs as the sandbox user"
                ));
            }
            SetupUser::Agent
        }
    };
    let mut setup = Vec::new();
    for key in [
        "onCreateCommand",
        "updateContentCommand",
        "postCreateCommand",
    ] {
        if let Some(command) = map.get(key) {
            setup.extend(lifecycle_command(command).map_err(|e| invalid(format!("`{key}` {e}")))?);
        }
    }
    let maintenance = match map.get("postStartCommand") {
        Some(command) => lifecycle_command(command)
            .map_err(|e| invalid(format!("`postStartCommand` {e}")))?
            .join("\n"),
        None => String::new(),
    };
    Ok(Definition {
        source: Source::Devcontainer,
        base,
        setup: Some(setup.join("\n")).filter(|s| !s.trim().is_empty()),
        setup_user,
        maintenance: Some(maintenance).filter(|s| !s.trim().is_empty()),
        inputs: None,
        variables,
        network: None,
        notices,
    })
}

/// A lifecycle command as shell lines: a string is a shell command; an array is argv (quoted
/// for the shell); an object holds named commands of either form (run one after another, where
/// dev containers would run them in parallel).
fn lifecycle_command(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(argv) => {
            let words: Option<Vec<String>> =
                argv.iter().map(|a| a.as_str().map(shell_quote)).collect();
            words
                .map(|w| vec![w.join(" ")])
                .ok_or_else(|| "must hold strings only".to_owned())
        }
        Value::Object(named) => {
            let mut lines = Vec::new();
            for command in named.values() {
                lines.extend(lifecycle_command(command)?);
            }
            Ok(lines)
        }
        Value::Null => Ok(Vec::new()),
        _ => Err("must be a string, an array of strings or an object".to_owned()),
    }
}

/// `word` quoted for `sh` (single quotes, embedded ones escaped).
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// `path` relative to `dir` (both relative to the repository root), normalised.
fn join_relative(dir: &str, path: &str) -> String {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devcontainer_subset_is_read_and_the_rest_named() {
        let def = parse_devcontainer(
            r#"{
              // a comment
              "name": "demo",
              "build": { "dockerfile": "Dockerfile", "context": "..", "args": { "V": "1" }, "target": "x" },
              "containerEnv": { "MODE": "dev" },
              "onCreateCommand": ["echo", "it's"],
              "postCreateCommand": { "a": "make tools", "b": "echo b" },
              "forwardPorts": [3000],
              "features": {},
            }"#,
        )
        .unwrap();
        assert_eq!(def.source, Source::Devcontainer);
        assert_eq!(
            def.base,
            Base::Dockerfile {
                context: ".".into(),
                dockerfile: ".devcontainer/Dockerfile".into(),
                args: [("V".to_owned(), "1".to_owned())].into()
            }
        );
        assert_eq!(
            def.setup.as_deref(),
            Some("echo 'it'\\''s'\nmake tools\necho b")
        );
        assert_eq!(def.variables["MODE"], "dev");
        assert!(
            def.notices[0].ends_with("forwardPorts, features"),
            "{:?}",
            def.notices
        );
        assert!(def.notices[1].contains("target"), "{:?}", def.notices);
    }

    #[test]
    fn environment_toml_refuses_unknown_keys_and_two_bases() {
        assert!(parse_environment_toml("setupp = 'x'").is_err());
        assert!(parse_environment_toml("image = 'a'\ndockerfile = 'b'").is_err());
        let def = parse_environment_toml(
            "setup = 'make'\nsetup_user = 'root'\n[variables]\nA = 'b'\n[network]\nsetup = 'registries'\n",
        )
        .unwrap();
        assert_eq!(def.setup_user, SetupUser::Root);
        assert_eq!(def.base, Base::Default);
        assert_eq!(def.network.unwrap().setup.as_deref(), Some("registries"));
    }
}
