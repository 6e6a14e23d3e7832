//! Outbound safety for calls the server makes on a user's behalf: which addresses are off limits,
//! and an HTTP client pinned to addresses that were checked after DNS resolution.
//!
//! A user-supplied URL must not turn the server into a proxy for the host's own services, the
//! cloud metadata endpoint or the private network. So the host is resolved here, every address
//! is checked, and the client connects only to those addresses (no second lookup that a DNS
//! rebinding could answer differently), never through a proxy and never following redirects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::Url;
use reqwest::redirect::Policy;

use super::mcp_client::ProbeError;

/// Why an address is off limits, for people; `None` when it is a public address.
pub fn forbidden_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified (\"this network\")")
    } else if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        Some("cloud metadata")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_private() {
        Some("private")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if a == 192 && b == 0 && c == 0 {
        Some("IETF protocol assignment")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("benchmarking")
    } else if ip.is_documentation() {
        Some("documentation")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() || a >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    // Addresses that embed an IPv4 address are judged by it: IPv4-mapped, IPv4-compatible,
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16).
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        return forbidden_v4(embedded_v4(seg[6], seg[7]));
    }
    if seg[0] == 0x2002 {
        return forbidden_v4(embedded_v4(seg[1], seg[2]));
    }
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if seg[..6] == [0, 0, 0, 0, 0, 0] {
        // IPv4-compatible (deprecated) addresses such as ::127.0.0.1.
        forbidden_v4(embedded_v4(seg[6], seg[7])).or(Some("reserved"))
    } else if seg[0] == 0xfd00 && seg[1] == 0x0ec2 {
        Some("cloud metadata")
    } else if seg[0] & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if seg[0] & 0xffc0 == 0xfe80 || seg[0] & 0xffc0 == 0xfec0 {
        Some("link-local")
    } else if seg[0] & 0xff00 == 0xff00 {
        Some("multicast")
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        Some("documentation")
    } else if seg[0] == 0x2001 && seg[1] == 0 {
        // Teredo tunnels reach IPv4 hosts the check above cannot see.
        Some("Teredo tunnel")
    } else if seg[0] == 0x0100 && seg[1..4] == [0, 0, 0] {
        Some("discard-only")
    } else {
        None
    }
}

fn embedded_v4(hi: u16, lo: u16) -> Ipv4Addr {
    let [a, b] = hi.to_be_bytes();
    let [c, d] = lo.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// Builds the client for calls to `url`: no proxy, no redirects, and unless `allow_private`,
/// pinned to the host's addresses after checking each of them.
pub async fn pinned_client(
    url: &Url,
    allow_private: bool,
    connect_timeout: Duration,
) -> Result<reqwest::Client, ProbeError> {
    let host = url
        .host_str()
        .ok_or_else(|| ProbeError::BadUrl("the URL has no host".into()))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| ProbeError::BadUrl("the URL has no port".into()))?;
    let mut builder = reqwest::Client::builder()
        .redirect(Policy::none())
        .no_proxy()
        .connect_timeout(connect_timeout)
        .user_agent(concat!("drydock/", env!("CARGO_PKG_VERSION")));
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        check(host, ip, allow_private)?;
    } else {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|err| ProbeError::Dns {
                host: host.to_owned(),
                detail: err.to_string(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(ProbeError::Dns {
                host: host.to_owned(),
                detail: "no addresses".into(),
            });
        }
        // Every answer must pass: a mixed answer is how rebinding attacks slip through.
        for addr in &addrs {
            check(host, addr.ip(), allow_private)?;
        }
        builder = builder.resolve_to_addrs(host, &addrs);
    }
    builder
        .build()
        .map_err(|err| ProbeError::Internal(err.to_string()))
}

fn check(host: &str, ip: IpAddr, allow_private: bool) -> Result<(), ProbeError> {
    match forbidden_kind(ip) {
        Some(kind) if !allow_private => Err(ProbeError::Refused {
            host: if host.trim_start_matches('[').trim_end_matches(']') == ip.to_string() {
                host.to_owned()
            } else {
                format!("{host} ({ip})")
            },
            kind,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ip: &str) -> Option<&'static str> {
        forbidden_kind(ip.parse().unwrap())
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "127.5.6.7",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "100.100.100.200",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "2002:7f00:1::",
            "ff02::1",
        ] {
            assert!(kind(ip).is_some(), "{ip} must be refused");
        }
        assert_eq!(kind("169.254.169.254"), Some("cloud metadata"));
        assert_eq!(kind("127.0.0.1"), Some("loopback"));
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "140.82.112.3",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(kind(ip), None, "{ip} is public");
        }
    }
}
