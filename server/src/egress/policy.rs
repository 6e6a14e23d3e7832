//! The network policy of a task: what a sandbox may reach, chosen at submit within what the
//! operator allows (a user may only narrow it), stored with the task as JSON.
//!
//! This is a plain type with no I/O, so other sources of policy (per environment, per
//! repository) can build one and narrow it the same way.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

/// How much of the network a sandbox gets, from the narrowest to the widest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Only drydock's model gateway (and the task's MCP connectors).
    Gateway,
    /// The gateway, plus HTTP/HTTPS to the allowlisted domains through the egress proxy.
    Allowlist,
    /// Any public address through the egress proxy (never the host, other sandboxes,
    /// private, link-local or metadata addresses).
    Open,
}

impl PolicyMode {
    /// Parses `gateway`, `allowlist` or `open`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "gateway" => Some(Self::Gateway),
            "allowlist" => Some(Self::Allowlist),
            "open" => Some(Self::Open),
            _ => None,
        }
    }

    /// The name users write.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Allowlist => "allowlist",
            Self::Open => "open",
        }
    }
}

/// A named list of hosts maintained in `presets.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// npm, PyPI, crates.io, Go, Maven, RubyGems, Debian/Ubuntu mirrors.
    PackageRegistries,
    /// GitHub's read-only clone and fetch hosts.
    Github,
}

impl Preset {
    fn key(self) -> &'static str {
        match self {
            Self::PackageRegistries => "package-registries",
            Self::Github => "github",
        }
    }

    /// The preset's hosts.
    pub fn hosts(self) -> &'static [String] {
        PRESETS
            .sections
            .get(self.key())
            .map_or(&[], |s| s.hosts.as_slice())
    }
}

#[derive(Deserialize)]
struct PresetFile {
    #[serde(flatten)]
    sections: BTreeMap<String, PresetHosts>,
    #[serde(default)]
    agents: BTreeMap<String, PresetHosts>,
}

#[derive(Deserialize)]
struct PresetHosts {
    hosts: Vec<String>,
}

static PRESETS: LazyLock<PresetFile> = LazyLock::new(|| {
    // The file is compiled in and covered by a unit test, so it always parses.
    toml::from_str(include_str!("presets.toml")).unwrap_or(PresetFile {
        sections: BTreeMap::new(),
        agents: BTreeMap::new(),
    })
});

/// The vendor hosts of an agent that cannot use the model gateway (empty for the others).
pub fn agent_vendor_hosts(agent: &str) -> &'static [String] {
    PRESETS
        .agents
        .get(agent)
        .map_or(&[], |s| s.hosts.as_slice())
}

/// What a user asks for at submit (`network` in `POST /api/tasks`); every field optional.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkRequest {
    /// `gateway`, `allowlist` or `open` (the operator's default when absent).
    pub mode: Option<String>,
    /// Presets to allow: `package-registries`, `github` (both when absent).
    pub presets: Option<Vec<String>>,
    /// More domains to allow (`example.org` also allows its subdomains).
    pub allow: Option<Vec<String>>,
    /// Allow only GET, HEAD and OPTIONS on plain HTTP requests through the proxy.
    #[serde(default)]
    pub read_only: bool,
}

/// The operator's bounds (`DRYDOCK_NETWORK_POLICY`, `_MAX`, `DRYDOCK_EGRESS_ALLOW`).
#[derive(Debug, Clone)]
pub struct PolicyBounds {
    /// The default mode; `None` when policies are off.
    pub default: Option<PolicyMode>,
    /// The widest mode a user may choose.
    pub max: PolicyMode,
    /// Domains every allowlist task may reach.
    pub operator_allow: Vec<String>,
}

impl PolicyBounds {
    /// Bounds from the settings; `Err` names the bad one.
    pub fn parse(default: &str, max: &str, allow: &[String]) -> Result<Self, String> {
        let default = match default.trim() {
            "off" => None,
            other => Some(PolicyMode::parse(other).ok_or_else(|| {
                format!(
                    "DRYDOCK_NETWORK_POLICY must be off, gateway, allowlist or open, not {other:?}"
                )
            })?),
        };
        let max = PolicyMode::parse(max).ok_or_else(|| {
            format!("DRYDOCK_NETWORK_POLICY_MAX must be gateway, allowlist or open, not {max:?}")
        })?;
        if let Some(default) = default
            && default > max
        {
            return Err(format!(
                "DRYDOCK_NETWORK_POLICY is {} but DRYDOCK_NETWORK_POLICY_MAX is the narrower {}: \
                 the default cannot be wider than the maximum",
                default.as_str(),
                max.as_str()
            ));
        }
        let mut operator_allow = Vec::new();
        for entry in allow.iter().filter(|a| !a.trim().is_empty()) {
            operator_allow
                .push(normalize_host(entry).map_err(|why| format!("DRYDOCK_EGRESS_ALLOW: {why}"))?);
        }
        Ok(Self {
            default,
            max,
            operator_allow,
        })
    }

    /// The policy of a new task from what its user asked; `Ok(None)` when policies are off.
    /// `Err` says (for people) why the request cannot be granted.
    pub fn resolve(
        &self,
        request: Option<&NetworkRequest>,
    ) -> Result<Option<NetworkPolicy>, String> {
        let Some(default) = self.default else {
            return match request {
                Some(_) => Err("network policies are off on this server".into()),
                None => Ok(None),
            };
        };
        let request = request.cloned().unwrap_or_default();
        let mode = match request.mode.as_deref() {
            None => default,
            Some(m) => {
                let mode = PolicyMode::parse(m).ok_or_else(|| {
                    format!("unknown network mode {m:?}; use gateway, allowlist or open")
                })?;
                if mode > self.max {
                    return Err(format!(
                        "this server allows at most the {} network policy",
                        self.max.as_str()
                    ));
                }
                mode
            }
        };
        let presets = match &request.presets {
            None => vec![Preset::PackageRegistries, Preset::Github],
            Some(names) => {
                let mut presets = Vec::new();
                for name in names {
                    presets.push(match name.as_str() {
                        "package-registries" => Preset::PackageRegistries,
                        "github" => Preset::Github,
                        other => {
                            return Err(format!(
                                "unknown preset {other:?}; use package-registries or github"
                            ));
                        }
                    });
                }
                presets.sort();
                presets.dedup();
                presets
            }
        };
        let mut allow = Vec::new();
        for entry in request.allow.iter().flatten() {
            allow.push(normalize_host(entry)?);
        }
        if allow.len() > 200 {
            return Err("at most 200 allowed domains".into());
        }
        Ok(Some(NetworkPolicy {
            mode,
            presets,
            allow,
            operator_allow: self.operator_allow.clone(),
            read_only: request.read_only,
        }))
    }
}

/// A task's network policy, as stored with it (JSON) and shown by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetworkPolicy {
    /// `gateway`, `allowlist` or `open`.
    #[schema(value_type = String)]
    pub mode: PolicyMode,
    /// Presets allowed (allowlist only).
    #[schema(value_type = Vec<String>)]
    pub presets: Vec<Preset>,
    /// Domains the user allowed.
    pub allow: Vec<String>,
    /// Domains the operator allowed for every task, at submit time.
    pub operator_allow: Vec<String>,
    /// Only GET, HEAD and OPTIONS on plain HTTP.
    pub read_only: bool,
}

impl NetworkPolicy {
    /// This policy narrowed for one phase of a task by a repository's environment
    /// (`[network]` in `.drydock/environment.toml`): `gateway` (alias `none`: only the model
    /// gateway and the task's connectors), `registries` (the package-registries preset only),
    /// `allowlist` or `open`. A repository file is not trusted: it can only narrow what the
    /// user and operator allowed, never widen it. `Err` names an unknown phase policy.
    pub fn narrowed_for_phase(&self, phase: &str) -> Result<NetworkPolicy, String> {
        let mut narrowed = self.clone();
        let mode = match phase.trim() {
            "gateway" | "none" => PolicyMode::Gateway,
            "registries" => {
                narrowed.presets.retain(|p| *p == Preset::PackageRegistries);
                narrowed.allow.clear();
                PolicyMode::Allowlist
            }
            "allowlist" => PolicyMode::Allowlist,
            "open" => PolicyMode::Open,
            other => {
                return Err(format!(
                    "unknown network policy {other:?} in the environment; use gateway, none, \
                     registries, allowlist or open"
                ));
            }
        };
        narrowed.mode = narrowed.mode.min(mode);
        Ok(narrowed)
    }
}

/// Why a request through the proxy was refused, for the task's log (`None`: let it through).
pub fn refusal(
    policy: &NetworkPolicy,
    agent: &str,
    method: &str,
    host: &str,
    tunnel: bool,
) -> Option<&'static str> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let vendor = agent_vendor_hosts(agent).iter().any(|h| matches(h, &host));
    let listed = vendor
        || match policy.mode {
            PolicyMode::Gateway => false,
            PolicyMode::Open => true,
            PolicyMode::Allowlist => policy
                .presets
                .iter()
                .flat_map(|p| p.hosts().iter())
                .chain(policy.allow.iter())
                .chain(policy.operator_allow.iter())
                .any(|h| matches(h, &host)),
        };
    if !listed {
        return Some(match policy.mode {
            PolicyMode::Gateway => "the gateway policy allows only the model gateway",
            _ => "not on the allowlist",
        });
    }
    if policy.read_only && !tunnel && !matches!(method, "GET" | "HEAD" | "OPTIONS") {
        return Some("read-only methods: only GET, HEAD and OPTIONS");
    }
    None
}

/// Whether allowlist entry `entry` covers `host` (both lower-case): the host itself and its
/// subdomains; `*.domain` only the subdomains.
fn matches(entry: &str, host: &str) -> bool {
    if let Some(domain) = entry.strip_prefix("*.") {
        return host.len() > domain.len() + 1
            && host.ends_with(domain)
            && host.as_bytes()[host.len() - domain.len() - 1] == b'.';
    }
    host == entry
        || (host.len() > entry.len() + 1
            && host.ends_with(entry)
            && host.as_bytes()[host.len() - entry.len() - 1] == b'.')
}

/// A host name, IP address or `*.domain`, lower-cased.
///
/// Errors (in words, for the settings or the API): not a host name at all (a URL, a path, a port,
/// spaces), or a single label such as `com` or `localhost`: an entry also allows its subdomains,
/// so `com` would allow every `.com` host, and a local name never passes the proxy's address
/// check anyway.
fn normalize_host(entry: &str) -> Result<String, String> {
    let host = entry.trim().trim_end_matches('.').to_ascii_lowercase();
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(host);
    }
    let bare = host.strip_prefix("*.").unwrap_or(&host);
    let ok = !bare.is_empty()
        && bare.len() <= 253
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !ok {
        return Err(format!(
            "{entry:?} is not a domain name or address (write a host such as example.org, no scheme, path or port)"
        ));
    }
    if !bare.contains('.') {
        return Err(format!(
            "{entry:?} is a single label: an entry allows its subdomains too, so name a domain such as example.org"
        ));
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(default: &str, max: &str) -> PolicyBounds {
        PolicyBounds::parse(default, max, &["corp.example".to_owned()]).unwrap()
    }

    #[test]
    fn presets_file_parses_with_every_preset() {
        assert!(
            Preset::PackageRegistries
                .hosts()
                .iter()
                .any(|h| h == "registry.npmjs.org")
        );
        assert!(Preset::Github.hosts().iter().any(|h| h == "github.com"));
        assert!(!agent_vendor_hosts("cursor").is_empty());
        assert!(agent_vendor_hosts("claude").is_empty());
    }

    #[test]
    fn users_may_only_narrow_the_operators_policy() {
        let b = bounds("allowlist", "allowlist");
        let open = NetworkRequest {
            mode: Some("open".into()),
            ..Default::default()
        };
        assert!(
            b.resolve(Some(&open))
                .unwrap_err()
                .contains("at most the allowlist")
        );
        let gateway = NetworkRequest {
            mode: Some("gateway".into()),
            ..Default::default()
        };
        assert_eq!(
            b.resolve(Some(&gateway)).unwrap().unwrap().mode,
            PolicyMode::Gateway
        );
        let p = b.resolve(None).unwrap().unwrap();
        assert_eq!(p.mode, PolicyMode::Allowlist);
        assert_eq!(p.presets, vec![Preset::PackageRegistries, Preset::Github]);
        assert_eq!(p.operator_allow, vec!["corp.example"]);
        // A default wider than the maximum is a configuration error, not silently cut down.
        assert!(PolicyBounds::parse("open", "gateway", &[]).is_err());
        assert!(bounds("off", "open").resolve(None).unwrap().is_none());
        assert!(bounds("off", "open").resolve(Some(&gateway)).is_err());
    }

    #[test]
    fn allowlist_entries_are_domains_with_a_dot_or_addresses() {
        assert_eq!(normalize_host(" PyPI.org. ").unwrap(), "pypi.org");
        assert_eq!(normalize_host("*.example.org").unwrap(), "*.example.org");
        assert_eq!(normalize_host("10.1.2.3").unwrap(), "10.1.2.3");
        assert_eq!(normalize_host("::1").unwrap(), "::1");
        for single in ["com", "localhost", "*.com", "intranet"] {
            let err = normalize_host(single).unwrap_err();
            assert!(err.contains("single label"), "{single}: {err}");
        }
        for bad in [
            "https://pypi.org",
            "pypi.org/simple",
            "pypi.org:443",
            "a b.org",
            "",
            "*.",
        ] {
            let err = normalize_host(bad).unwrap_err();
            assert!(err.contains("not a domain name or address"), "{bad}: {err}");
        }
    }

    #[test]
    fn allowlist_matches_hosts_and_subdomains_only() {
        let b = bounds("allowlist", "open");
        let req = NetworkRequest {
            presets: Some(vec![]),
            allow: Some(vec!["Example.ORG".into(), "*.only-sub.test".into()]),
            ..Default::default()
        };
        let p = b.resolve(Some(&req)).unwrap().unwrap();
        assert_eq!(refusal(&p, "claude", "GET", "example.org", false), None);
        assert_eq!(refusal(&p, "claude", "GET", "api.example.org", false), None);
        assert!(refusal(&p, "claude", "GET", "badexample.org", false).is_some());
        assert!(refusal(&p, "claude", "GET", "example.org.evil.test", false).is_some());
        assert!(refusal(&p, "claude", "GET", "only-sub.test", false).is_some());
        assert_eq!(refusal(&p, "claude", "GET", "a.only-sub.test", false), None);
        assert_eq!(refusal(&p, "claude", "GET", "corp.example", false), None);
        assert_eq!(
            refusal(&p, "claude", "GET", "registry.npmjs.org", false),
            Some("not on the allowlist")
        );
        assert_eq!(refusal(&p, "cursor", "POST", "api2.cursor.sh", true), None);
        for bad in [
            "https://x.org",
            "x.org/path",
            "x.org:443",
            "a b",
            "",
            "-x.org",
        ] {
            let req = NetworkRequest {
                allow: Some(vec![bad.into()]),
                ..Default::default()
            };
            assert!(b.resolve(Some(&req)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn read_only_allows_only_safe_methods_on_plain_http() {
        let b = bounds("allowlist", "allowlist");
        let req = NetworkRequest {
            allow: Some(vec!["example.org".into()]),
            read_only: true,
            ..Default::default()
        };
        let p = b.resolve(Some(&req)).unwrap().unwrap();
        assert_eq!(refusal(&p, "claude", "GET", "example.org", false), None);
        assert_eq!(refusal(&p, "claude", "HEAD", "example.org", false), None);
        assert!(refusal(&p, "claude", "POST", "example.org", false).is_some());
        assert!(refusal(&p, "claude", "PUT", "example.org", false).is_some());
    }

    #[test]
    fn an_environment_only_narrows_a_phase() {
        let bounds = PolicyBounds::parse("allowlist", "open", &[]).unwrap();
        let request = NetworkRequest {
            allow: Some(vec!["example.org".into()]),
            ..Default::default()
        };
        let task = bounds.resolve(Some(&request)).unwrap().unwrap();
        let open = task.narrowed_for_phase("open").unwrap();
        assert_eq!(open, task, "a repository cannot widen the task's policy");
        let gateway = task.narrowed_for_phase("none").unwrap();
        assert_eq!(gateway.mode, PolicyMode::Gateway);
        let registries = task.narrowed_for_phase("registries").unwrap();
        assert_eq!(registries.mode, PolicyMode::Allowlist);
        assert_eq!(registries.presets, vec![Preset::PackageRegistries]);
        assert!(
            registries.allow.is_empty(),
            "the user's additions are for the agent's phase"
        );
        let err = task.narrowed_for_phase("everything").unwrap_err();
        assert!(err.contains("\"everything\""), "{err}");
    }

    #[test]
    fn a_default_wider_than_the_maximum_is_a_configuration_error() {
        let err = PolicyBounds::parse("open", "gateway", &[]).unwrap_err();
        assert!(
            err.contains("DRYDOCK_NETWORK_POLICY is open") && err.contains("narrower gateway"),
            "{err}"
        );
        assert!(PolicyBounds::parse("gateway", "open", &[]).is_ok());
        assert!(PolicyBounds::parse("off", "gateway", &[]).is_ok());
    }
}
