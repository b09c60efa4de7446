//! The media fetcher: turns an OpenAI `image_url.url` into bytes, SSRF-safe by construction.
//!
//! [`load`] accepts four kinds of URL:
//!
//! - `data:image/{png,jpeg,jpg,webp,gif}[;param=…];base64,<payload>`. The media type is matched
//!   case-insensitively; the payload is the standard base64 alphabet, padding optional, ASCII
//!   whitespace (line-wrapped base64) ignored. The URL-safe alphabet and percent-encoded
//!   (non-base64) payloads are refused with a clear reason.
//! - `file:///path` (also `file://localhost/path` and `file:/path`), only when
//!   [`MediaPolicy::allowed_local_path`] is set. The path is percent-decoded, normalized
//!   lexically (so `..` cannot climb out), then canonicalized (so a symbolic link cannot lead
//!   out) and must stay inside the canonical folder. A path that lies outside lexically gets
//!   "outside the allowed media folder" (decided without touching the file system); a path
//!   that is inside lexically but missing, unreadable or escaping through a link always gets
//!   the same "no readable file" reason, so answers do not reveal what exists outside.
//! - `http://` and `https://`, fetched as described below.
//!
//! Anything else is an unsupported scheme. Bytes are returned as they are: sniffing the image
//! format is the decoder's job.
//!
//! # Why it is SSRF-safe
//!
//! Every hop (the first request and each redirect) goes through the same steps: parse the URL
//! (own parser; refusing credentials, non-dotted-decimal numeric hosts, zone ids), resolve the
//! host once (`tokio::net::lookup_host`, or the IP literal itself), classify **every** resolved
//! address, and then connect with `TcpStream::connect(SocketAddr)` to exactly the checked
//! addresses, never resolving the name again, so DNS rebinding cannot swap in another address.
//! If any resolved address is refused and not allow-listed, the whole fetch is refused with the
//! reason (rather than silently trying the others): a name that mixes public and internal
//! addresses is a misconfiguration or an attack, and either way the operator should hear of it.
//!
//! Refused addresses (see `classify`): IPv4 0/8, 10/8, 100.64/10, 127/8, 169.254/16, 172.16/12,
//! 192.0.0/24, 192.0.2/24, 192.88.99/24, 192.168/16, 198.18/15, 198.51.100/24, 203.0.113/24,
//! 224/4, 240/4 (incl. 255.255.255.255). Documentation and benchmarking ranges are refused too:
//! they are never real image hosts, and 198.18/15 is used inside private networks (VPN "fake
//! IP" resolvers). IPv6: `::`, `::1`, anything outside 2000::/3 (so fc00::/7 ULA, fe80::/10,
//! fec0::/10, ff00::/8, 100::/64 …), and inside it Teredo 2001::/32, 2001:2::/48, 2001:10::/28,
//! 2001:db8::/32, 3fff::/20, 5f00::/16. Addresses that embed an IPv4 address are judged by it:
//! IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96` and 6to4 `2002::/16` are allowed when the
//! embedded address is public (NAT64 is how IPv6-only hosts reach IPv4 servers), the deprecated
//! IPv4-compatible `::a.b.c.d` is always refused, as is the local-use NAT64 prefix 64:ff9b:1::/48.
//!
//! [`MediaPolicy::allow_hosts`] exempts a host: a name rule (exact, case-insensitive, optional
//! port) exempts every address that name resolves to; an IP/CIDR rule (optional port for a single
//! address) exempts the matching addresses, also in their IPv4-mapped form.
//!
//! # Other decisions
//!
//! - URLs with credentials (`user:pass@host`) are refused, not stripped: silently dropping them
//!   would turn into a confusing 401, and refusing means they are never sent anywhere. No error
//!   and no log line contains them, nor a URL's path or query (S3-style pre-signed URLs carry
//!   secrets there): errors name only `scheme://host[:port]`, the one debug line per fetch names
//!   `scheme://host[:port]/path` without the query.
//! - Redirects 301/302/303/307/308 are followed manually, at most `max_redirects`, each `Location`
//!   resolved against the current URL (RFC 3986) and checked like the first URL; a redirect to any
//!   scheme but http(s) is refused. https→http redirects are followed: nothing secret is sent.
//! - A fresh connection per hop (`hyper::client::conn::http1`, no pool), `Connection: close`,
//!   ALPN `http/1.1`; TLS with rustls (ring provider), verified against the URL's host name
//!   (SNI is sent for names, not for IP literals) with the system roots plus `extra_roots`.
//! - Timeouts: `connect_timeout` per connection attempt, `total_timeout` over everything
//!   (resolution, all hops, TLS, headers and body). The size cap is checked against
//!   `Content-Length` before reading and against the bytes received while streaming.
//! - An empty image (zero bytes) is an error: no decoder accepts it and the reason is clearer here.
//! - Cancellation: everything runs inside the returned future (the connection is driven by
//!   `select!`, not spawned), so dropping it closes the socket. Two things cannot be interrupted:
//!   `lookup_host`'s blocking `getaddrinfo` (it finishes within the resolver's own timeout, its
//!   answer unused), and a local file read, which runs in `spawn_blocking` and stops at its next
//!   256 KiB chunk once the future is dropped.
//! - Host names must be ASCII (international names in their punycode `xn--` form).

use std::fmt;
use std::io::{ErrorKind, Read as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Sent with every request, so image hosts can tell who is fetching.
const USER_AGENT: &str = concat!("kiln/", env!("CARGO_PKG_VERSION"));

/// Local files are read in chunks of this size, so a dropped fetch stops reading soon.
const FILE_CHUNK: usize = 256 * 1024;

/// What the server may fetch media from, built once from the server's flags.
#[derive(Clone, Debug)]
pub struct MediaPolicy {
    /// `--allow-media-host`: hosts and networks exempt from the address checks.
    pub allow_hosts: Vec<HostRule>,
    /// `--allowed-local-media-path`: `file://` URLs are accepted only for files under it.
    pub allowed_local_path: Option<PathBuf>,
    /// The largest image accepted, in bytes (decoded bytes for data URLs).
    pub max_bytes: usize,
    /// The limit for each TCP connection attempt.
    pub connect_timeout: Duration,
    /// The limit for the whole fetch: resolution, redirects, TLS, headers and body.
    pub total_timeout: Duration,
    /// How many redirects are followed at most.
    pub max_redirects: u8,
    /// Trust anchors added to the system roots (private CAs, tests).
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl Default for MediaPolicy {
    fn default() -> Self {
        Self {
            allow_hosts: Vec::new(),
            allowed_local_path: None,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(30),
            max_redirects: 3,
            extra_roots: Vec::new(),
        }
    }
}

impl MediaPolicy {
    /// The default image size limit: 20 MiB.
    pub const DEFAULT_MAX_BYTES: usize = 20 * 1024 * 1024;

    /// Parses one `--allow-media-host` value; see [`HostRule`] for the forms.
    pub fn parse_host_rule(s: &str) -> Result<HostRule, String> {
        s.parse()
    }
}

/// One `--allow-media-host` entry: `name`, `name:port`, an IP address (`10.1.2.3`, `::1`,
/// `[::1]`), an address with a port (`10.1.2.3:8080`, `[fd00::1]:8080`), or a network in CIDR
/// form (`10.0.0.0/8`, `fd00::/8`; host bits must be zero). Names match exactly and
/// case-insensitively (no wildcards).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRule(Rule);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Rule {
    Name { host: String, port: Option<u16> },
    Net { net: IpNet, port: Option<u16> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    fn contains(&self, ip: IpAddr) -> bool {
        // checked_shr yields None for a shift by the full width, i.e. a /0: everything matches.
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                (u32::from(net) ^ u32::from(ip))
                    .checked_shr(32 - u32::from(self.prefix))
                    .unwrap_or(0)
                    == 0
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                (u128::from(net) ^ u128::from(ip))
                    .checked_shr(128 - u32::from(self.prefix))
                    .unwrap_or(0)
                    == 0
            }
            _ => false,
        }
    }
}

impl HostRule {
    fn matches_name(&self, host: &str, port: u16) -> bool {
        match &self.0 {
            Rule::Name { host: h, port: p } => h == host && p.is_none_or(|p| p == port),
            Rule::Net { .. } => false,
        }
    }

    fn matches_addr(&self, ip: IpAddr, port: u16) -> bool {
        match &self.0 {
            Rule::Net { net, port: p } => {
                (net.contains(ip) || net.contains(ip.to_canonical())) && p.is_none_or(|p| p == port)
            }
            Rule::Name { .. } => false,
        }
    }
}

impl FromStr for HostRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = |why: &str| format!("invalid --allow-media-host `{s}`: {why}");
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.contains('*') {
            return Err(bad("wildcards are not supported; list each host name"));
        }
        if let Some((addr, prefix)) = s.split_once('/') {
            let addr = addr
                .strip_prefix('[')
                .and_then(|a| a.strip_suffix(']'))
                .unwrap_or(addr);
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| bad("the part before `/` is not an IP address"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad(&format!("the prefix length must be 0 to {max}")))?;
            let net = IpNet { addr, prefix };
            let base = network_base(net);
            if base != addr {
                return Err(bad(&format!(
                    "it has host bits set; did you mean {base}/{prefix}?"
                )));
            }
            return Ok(Self(Rule::Net { net, port: None }));
        }
        if let Ok(addr) = s.parse::<IpAddr>() {
            return Ok(Self(Rule::Net {
                net: single(addr),
                port: None,
            }));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("unterminated `[`"))?;
            let v6: Ipv6Addr = v6.parse().map_err(|_| bad("not an IPv6 address"))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .and_then(parse_port)
                        .ok_or_else(|| bad("expected `:port` after `]`"))?,
                ),
            };
            return Ok(Self(Rule::Net {
                net: single(IpAddr::V6(v6)),
                port,
            }));
        } else if let Some((host, port)) = s.rsplit_once(':') {
            let port = parse_port(port).ok_or_else(|| bad("the port is not 1 to 65535"))?;
            (host, Some(port))
        } else {
            (s, None)
        };
        match normalize_host(host).map_err(bad)? {
            Host::Ip(ip) => Ok(Self(Rule::Net {
                net: single(ip),
                port,
            })),
            Host::Name(host) => Ok(Self(Rule::Name { host, port })),
        }
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Rule::Name { host, port: None } => write!(f, "{host}"),
            Rule::Name {
                host,
                port: Some(p),
            } => write!(f, "{host}:{p}"),
            Rule::Net { net, port: None } => write!(f, "{}/{}", net.addr, net.prefix),
            Rule::Net { net, port: Some(p) } => match net.addr {
                IpAddr::V4(a) => write!(f, "{a}:{p}"),
                IpAddr::V6(a) => write!(f, "[{a}]:{p}"),
            },
        }
    }
}

fn single(addr: IpAddr) -> IpNet {
    let prefix = if addr.is_ipv4() { 32 } else { 128 };
    IpNet { addr, prefix }
}

fn network_base(net: IpNet) -> IpAddr {
    match net.addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(net.prefix))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(net.prefix))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

fn parse_port(s: &str) -> Option<u16> {
    // u16::from_str accepts a leading `+`; a URL port is digits only.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|p| *p != 0)
}

/// Why an IPv4 address is not fetched from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V4Class {
    /// 127.0.0.0/8
    Loopback,
    /// 10/8, 172.16/12, 192.168/16
    Private,
    /// 169.254/16, where cloud metadata services live
    LinkLocal,
    /// 100.64/10
    SharedCgnat,
    /// 224/4
    Multicast,
    /// 0.0.0.0
    Unspecified,
    /// 255.255.255.255
    Broadcast,
    /// 0/8
    ThisNetwork,
    /// 192.0.0/24, 192.88.99/24, 240/4
    Reserved,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24
    Documentation,
    /// 198.18/15
    Benchmarking,
}

impl fmt::Display for V4Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loopback => "a loopback address",
            Self::Private => "a private address",
            Self::LinkLocal => "a link-local address (the range of cloud metadata services)",
            Self::SharedCgnat => "a carrier-grade NAT (shared) address",
            Self::Multicast => "a multicast address",
            Self::Unspecified => "the unspecified address",
            Self::Broadcast => "the broadcast address",
            Self::ThisNetwork => "a \"this network\" (0.0.0.0/8) address",
            Self::Reserved => "a reserved address",
            Self::Documentation => "a documentation address",
            Self::Benchmarking => "a benchmarking address",
        })
    }
}

/// How an IPv6 address embeds an IPv4 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Embedding {
    /// `::ffff:a.b.c.d`
    Mapped,
    /// `::a.b.c.d` (deprecated)
    Compatible,
    /// `64:ff9b::a.b.c.d`
    Nat64,
    /// `2002:aabb:ccdd::/48`
    SixToFour,
}

/// Why an address is not fetched from; its Display completes "… is {class}".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrClass {
    /// An IPv4 address.
    V4(V4Class),
    /// An IPv6 address that embeds a refused IPv4 address.
    Embedded {
        /// The form of embedding.
        form: Embedding,
        /// The embedded address.
        v4: Ipv4Addr,
        /// Why the embedded address is refused.
        class: V4Class,
    },
    /// `::1`
    Loopback6,
    /// `::`
    Unspecified6,
    /// fc00::/7
    UniqueLocal,
    /// fe80::/10
    LinkLocal6,
    /// fec0::/10
    SiteLocal,
    /// ff00::/8
    Multicast6,
    /// 2001:db8::/32, 3fff::/20
    Documentation6,
    /// 2001:2::/48
    Benchmarking6,
    /// 2001::/32
    Teredo,
    /// 64:ff9b:1::/48
    LocalNat64,
    /// `::a.b.c.d` with a public IPv4 address
    Ipv4Compatible,
    /// Anything else outside global unicast, or reserved inside it.
    Reserved6,
}

impl fmt::Display for AddrClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(c) => c.fmt(f),
            Self::Embedded { form, v4, class } => {
                let form = match form {
                    Embedding::Mapped => "an IPv4-mapped",
                    Embedding::Compatible => "an IPv4-compatible",
                    Embedding::Nat64 => "a NAT64",
                    Embedding::SixToFour => "a 6to4",
                };
                write!(f, "{form} form of {v4}, {class}")
            }
            Self::Loopback6 => f.write_str("a loopback address"),
            Self::Unspecified6 => f.write_str("the unspecified address"),
            Self::UniqueLocal => f.write_str("a unique local (private) address"),
            Self::LinkLocal6 => f.write_str("a link-local address"),
            Self::SiteLocal => f.write_str("a site-local address"),
            Self::Multicast6 => f.write_str("a multicast address"),
            Self::Documentation6 => f.write_str("a documentation address"),
            Self::Benchmarking6 => f.write_str("a benchmarking address"),
            Self::Teredo => f.write_str("a Teredo tunnel address"),
            Self::LocalNat64 => f.write_str("a local-use NAT64 address"),
            Self::Ipv4Compatible => f.write_str("a deprecated IPv4-compatible address"),
            Self::Reserved6 => f.write_str("a reserved or non-global address"),
        }
    }
}

/// `None` for an address that may be fetched from without an allow-list rule.
fn classify(ip: IpAddr) -> Option<AddrClass> {
    match ip {
        IpAddr::V4(a) => classify_v4(a).map(AddrClass::V4),
        IpAddr::V6(a) => classify_v6(a),
    }
}

fn in_v4(a: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    (u32::from(a) ^ u32::from_be_bytes(net)) >> (32 - prefix) == 0
}

fn classify_v4(a: Ipv4Addr) -> Option<V4Class> {
    use V4Class::*;
    let class = if a.is_unspecified() {
        Unspecified
    } else if a.is_broadcast() {
        Broadcast
    } else if in_v4(a, [0, 0, 0, 0], 8) {
        ThisNetwork
    } else if in_v4(a, [127, 0, 0, 0], 8) {
        Loopback
    } else if in_v4(a, [10, 0, 0, 0], 8)
        || in_v4(a, [172, 16, 0, 0], 12)
        || in_v4(a, [192, 168, 0, 0], 16)
    {
        Private
    } else if in_v4(a, [169, 254, 0, 0], 16) {
        LinkLocal
    } else if in_v4(a, [100, 64, 0, 0], 10) {
        SharedCgnat
    } else if in_v4(a, [224, 0, 0, 0], 4) {
        Multicast
    } else if in_v4(a, [192, 0, 2, 0], 24)
        || in_v4(a, [198, 51, 100, 0], 24)
        || in_v4(a, [203, 0, 113, 0], 24)
    {
        Documentation
    } else if in_v4(a, [198, 18, 0, 0], 15) {
        Benchmarking
    } else if in_v4(a, [240, 0, 0, 0], 4)
        || in_v4(a, [192, 0, 0, 0], 24)
        || in_v4(a, [192, 88, 99, 0], 24)
    {
        Reserved
    } else {
        return None;
    };
    Some(class)
}

fn in_v6(a: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    (u128::from(a) ^ u128::from(net)) >> (128 - prefix) == 0
}

const fn v6(s: [u16; 8]) -> Ipv6Addr {
    Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])
}

fn classify_v6(a: Ipv6Addr) -> Option<AddrClass> {
    let s = a.segments();
    let low_v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let embedded = |form, v4| classify_v4(v4).map(|class| AddrClass::Embedded { form, v4, class });
    if a.is_unspecified() {
        return Some(AddrClass::Unspecified6);
    }
    if a.is_loopback() {
        return Some(AddrClass::Loopback6);
    }
    if let Some(v4) = a.to_ipv4_mapped() {
        return embedded(Embedding::Mapped, v4);
    }
    if s[..6] == [0; 6] {
        return Some(embedded(Embedding::Compatible, low_v4).unwrap_or(AddrClass::Ipv4Compatible));
    }
    if in_v6(a, v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0]), 96) {
        return embedded(Embedding::Nat64, low_v4);
    }
    if in_v6(a, v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0]), 48) {
        return Some(AddrClass::LocalNat64);
    }
    if in_v6(a, v6([0x2002, 0, 0, 0, 0, 0, 0, 0]), 16) {
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return embedded(Embedding::SixToFour, v4);
    }
    let class = if in_v6(a, v6([0xff00, 0, 0, 0, 0, 0, 0, 0]), 8) {
        AddrClass::Multicast6
    } else if in_v6(a, v6([0xfe80, 0, 0, 0, 0, 0, 0, 0]), 10) {
        AddrClass::LinkLocal6
    } else if in_v6(a, v6([0xfec0, 0, 0, 0, 0, 0, 0, 0]), 10) {
        AddrClass::SiteLocal
    } else if in_v6(a, v6([0xfc00, 0, 0, 0, 0, 0, 0, 0]), 7) {
        AddrClass::UniqueLocal
    } else if !in_v6(a, v6([0x2000, 0, 0, 0, 0, 0, 0, 0]), 3) {
        AddrClass::Reserved6
    } else if in_v6(a, v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]), 32)
        || in_v6(a, v6([0x3fff, 0, 0, 0, 0, 0, 0, 0]), 20)
    {
        AddrClass::Documentation6
    } else if in_v6(a, v6([0x2001, 2, 0, 0, 0, 0, 0, 0]), 48) {
        AddrClass::Benchmarking6
    } else if in_v6(a, v6([0x2001, 0, 0, 0, 0, 0, 0, 0]), 32) {
        AddrClass::Teredo
    } else if in_v6(a, v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0]), 28)
        || in_v6(a, v6([0x5f00, 0, 0, 0, 0, 0, 0, 0]), 16)
    {
        AddrClass::Reserved6
    } else {
        return None;
    };
    Some(class)
}

/// Why a fetch failed. Display is the user-facing reason (the gateway answers 400 with
/// `image_url: <reason>`); it never contains URL credentials, paths or queries.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL cannot be parsed.
    #[error("the URL is not valid: {0}")]
    InvalidUrl(&'static str),
    /// A scheme other than data, file, http and https.
    #[error("unsupported URL scheme `{0}` (expected http, https or data)")]
    UnsupportedScheme(String),
    /// The URL has a `user:password@` part.
    #[error("URLs with credentials (user:password@host) are not accepted")]
    Credentials,
    /// Name resolution failed or found nothing.
    #[error("the host `{host}` could not be resolved")]
    Resolve {
        /// The host name.
        host: String,
    },
    /// The host is, or resolves to, an address that is not fetched from.
    #[error("{}", refused_text(.host.as_deref(), *.addr, .class))]
    Refused {
        /// The host name, `None` for an IP literal.
        host: Option<String>,
        /// The refused address.
        addr: IpAddr,
        /// Why it is refused.
        class: AddrClass,
    },
    /// Every connection attempt failed.
    #[error("could not connect to `{host}`: {kind}")]
    Connect {
        /// `host[:port]`.
        host: String,
        /// The last attempt's error.
        kind: ErrorKind,
    },
    /// The (last) connection attempt timed out.
    #[error("connecting to `{host}` timed out after {}", duration_text(*.after))]
    ConnectTimeout {
        /// `host[:port]`.
        host: String,
        /// The per-attempt limit.
        after: Duration,
    },
    /// The TLS handshake failed (certificate not trusted or not for this name, …).
    #[error("the TLS connection to `{host}` failed: {reason}")]
    Tls {
        /// `host[:port]`.
        host: String,
        /// rustls' reason.
        reason: String,
    },
    /// The HTTP exchange failed (connection closed early, malformed response, …).
    #[error("the HTTP exchange with `{host}` failed: {reason}")]
    Http {
        /// `host[:port]`.
        host: String,
        /// hyper's reason.
        reason: String,
    },
    /// A status that is neither 2xx nor a followed redirect.
    #[error("the server answered {}", status_text(*.0))]
    Status(StatusCode),
    /// A redirect status without a usable `Location`.
    #[error("the server answered {} without a Location header", status_text(*.0))]
    RedirectWithoutLocation(StatusCode),
    /// A redirect's `Location` cannot be parsed.
    #[error("the server redirected to an invalid URL: {0}")]
    RedirectInvalid(&'static str),
    /// A redirect to a scheme other than http(s).
    #[error("the server redirected to a `{0}:` URL, which this server does not follow")]
    RedirectScheme(String),
    /// More redirects than `max_redirects`.
    #[error("too many redirects (more than {0})")]
    TooManyRedirects(u8),
    /// A failure after one or more redirects, naming where they led.
    #[error("after a redirect to `{to}`: {cause}")]
    Redirected {
        /// `scheme://host[:port]` of the redirect target.
        to: String,
        /// What went wrong there.
        cause: Box<FetchError>,
    },
    /// The image exceeds `max_bytes`.
    #[error("the image is larger than the {} limit", size_text(*.limit))]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Zero bytes.
    #[error("the image is empty")]
    Empty,
    /// The whole fetch took longer than `total_timeout`.
    #[error("fetching timed out after {}", duration_text(*.0))]
    Timeout(Duration),
    /// A data URL whose media type is not an accepted image type.
    #[error(
        "the data URL's media type `{0}` is not an image type this server accepts \
         (image/png, image/jpeg, image/webp, image/gif)"
    )]
    DataMediaType(String),
    /// A data URL without `;base64`.
    #[error("the data URL is not base64-encoded (expected `data:image/…;base64,…`)")]
    DataNotBase64,
    /// A data URL without the `,` or without a media type.
    #[error("the data URL is malformed: {0}")]
    DataMalformed(&'static str),
    /// The base64 payload does not decode.
    #[error("the data URL's base64 payload is invalid: {0}")]
    DataBase64(String),
    /// `file://` while `allowed_local_path` is unset.
    #[error(
        "file:// URLs are not accepted by this server (enable them with --allowed-local-media-path)"
    )]
    FileDisabled,
    /// A path outside the allowed folder, decided without touching the file system.
    #[error("the file is outside the allowed media folder")]
    FileOutside,
    /// Missing, unreadable, not a file, or escaping the folder through a link: one reason for
    /// all, so the answer does not tell what exists outside.
    #[error("there is no readable file at that path inside the allowed media folder")]
    FileUnavailable,
    /// Reading a file inside the folder failed midway.
    #[error("the file could not be read: {0}")]
    FileRead(ErrorKind),
}

fn refused_text(host: Option<&str>, addr: IpAddr, class: &AddrClass) -> String {
    let what = match host {
        Some(h) => format!("the host `{h}` resolves to {addr}, {class}"),
        None => format!("the address {addr} is {class}"),
    };
    format!("{what}, which this server does not fetch from (allow it with --allow-media-host)")
}

fn status_text(s: StatusCode) -> String {
    match s.canonical_reason() {
        Some(r) => format!("{} {r}", s.as_u16()),
        None => s.as_u16().to_string(),
    }
}

fn duration_text(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn size_text(n: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

/// Fetches the bytes behind an `image_url.url` under `policy`. Dropping the future cancels the
/// fetch.
/// The certificates of a PEM file (`--media-ca-file`: a private CA trusted for https image
/// URLs besides the system's roots).
pub fn read_pem_certificates(
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificates in the file", path.display()));
    }
    Ok(certs)
}

pub async fn load(url: &str, policy: &MediaPolicy) -> Result<Vec<u8>, FetchError> {
    let url = url.trim_matches(|c: char| c.is_ascii_whitespace() || c.is_ascii_control());
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(policy.total_timeout, load_inner(url, policy))
        .await
        .unwrap_or(Err(FetchError::Timeout(policy.total_timeout)));
    let elapsed_ms = started.elapsed().as_millis();
    match &result {
        Ok(bytes) => {
            tracing::debug!(url = %redacted(url), bytes = bytes.len(), elapsed_ms, "fetched media")
        }
        Err(error) => {
            tracing::debug!(url = %redacted(url), %error, elapsed_ms, "media fetch failed")
        }
    }
    result
}

async fn load_inner(url: &str, policy: &MediaPolicy) -> Result<Vec<u8>, FetchError> {
    let Some((scheme, rest)) = split_scheme(url) else {
        return Err(FetchError::InvalidUrl(
            "it has no scheme (expected http, https or data)",
        ));
    };
    match scheme.as_str() {
        "data" => decode_data_url(rest, policy.max_bytes),
        "file" => load_file(rest, policy).await,
        "http" | "https" => fetch_http(parse_http(scheme == "https", rest)?, policy).await,
        _ => Err(FetchError::UnsupportedScheme(scheme)),
    }
}

/// Splits `scheme:rest`, the scheme lowercased; `None` when there is no RFC 3986 scheme.
fn split_scheme(url: &str) -> Option<(String, &str)> {
    let (scheme, rest) = url.split_once(':')?;
    let mut bytes = scheme.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    (first_ok && rest_ok && scheme.len() <= 32).then(|| (scheme.to_ascii_lowercase(), rest))
}

/// The URL as one log line may show it: no credentials (they are refused anyway), no query.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = split_scheme(url) else {
        return "<no scheme>".to_owned();
    };
    match scheme.as_str() {
        "http" | "https" => match parse_http(scheme == "https", rest) {
            Ok(t) => {
                let path = t.path_and_query.split('?').next().unwrap_or("");
                format!("{}{path}", t.origin())
            }
            Err(_) => format!("{scheme}://<invalid>"),
        },
        "data" => {
            let meta = rest.split([',', ';']).next().unwrap_or("");
            format!("data:{};… ({} chars)", sanitize(meta), rest.len())
        }
        "file" => format!(
            "file:{}",
            sanitize(rest.split(['?', '#']).next().unwrap_or(""))
        ),
        _ => format!("{scheme}:…"),
    }
}

/// Makes user-provided text safe to quote: printable ASCII only, at most 64 characters.
fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if s.chars().nth(64).is_some() {
        out.push('…');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// data: URLs

const DATA_IMAGE_TYPES: [&str; 5] = [
    "image/png",
    "image/jpeg",
    "image/jpg",
    "image/webp",
    "image/gif",
];

fn decode_data_url(rest: &str, max: usize) -> Result<Vec<u8>, FetchError> {
    let (meta, payload) = rest
        .split_once(',')
        .ok_or(FetchError::DataMalformed("it has no `,` before the data"))?;
    let mut params = meta.split(';');
    let media_type = params.next().unwrap_or("").trim();
    // RFC 2397: `;base64` is the last parameter; others (charset, name) are ignored.
    let base64 = meta
        .rsplit(';')
        .next()
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("base64"))
        && meta.contains(';');
    if media_type.is_empty() {
        return Err(FetchError::DataMalformed(
            "it has no media type (expected `data:image/png;base64,…`)",
        ));
    }
    if !DATA_IMAGE_TYPES
        .iter()
        .any(|t| t.eq_ignore_ascii_case(media_type))
    {
        return Err(FetchError::DataMediaType(sanitize(media_type)));
    }
    if !base64 {
        return Err(FetchError::DataNotBase64);
    }
    decode_base64(payload, max)
}

fn decode_base64(payload: &str, max: usize) -> Result<Vec<u8>, FetchError> {
    let chars = payload.bytes().filter(|b| !b.is_ascii_whitespace()).count();
    if chars == 0 {
        return Err(FetchError::Empty);
    }
    // Any valid payload of n characters decodes to at least (n - 2) * 3 / 4 bytes: refuse an
    // oversized one before allocating anything for it.
    if chars.saturating_sub(2) / 4 * 3 > max {
        return Err(FetchError::TooLarge { limit: max });
    }
    // Line-wrapped (MIME) base64 is common enough to accept; strip the whitespace first.
    let compact;
    let payload = if chars == payload.len() {
        payload.as_bytes()
    } else {
        compact = payload
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .collect::<Vec<u8>>();
        &compact[..]
    };
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let bytes = engine
        .decode(payload)
        .map_err(|e| FetchError::DataBase64(e.to_string()))?;
    if bytes.len() > max {
        return Err(FetchError::TooLarge { limit: max });
    }
    if bytes.is_empty() {
        return Err(FetchError::Empty);
    }
    Ok(bytes)
}

// ---------------------------------------------------------------------------------------------
// file: URLs

/// Sets the flag when the fetch future is dropped, so the blocking read stops.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn load_file(rest: &str, policy: &MediaPolicy) -> Result<Vec<u8>, FetchError> {
    let Some(root) = policy.allowed_local_path.clone() else {
        return Err(FetchError::FileDisabled);
    };
    let path = parse_file_url(rest)?;
    let max = policy.max_bytes;
    let cancelled = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(Arc::clone(&cancelled));
    tokio::task::spawn_blocking(move || read_local(&root, &path, max, &cancelled))
        .await
        .unwrap_or(Err(FetchError::FileRead(ErrorKind::Other)))
}

/// The absolute, percent-decoded, lexically normalized path of a `file:` URL (after `file:`).
fn parse_file_url(rest: &str) -> Result<PathBuf, FetchError> {
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let path = match rest.strip_prefix("//") {
        Some(after) => {
            let (host, path) = after.split_at(after.find('/').unwrap_or(after.len()));
            if !host.is_empty() && !host.eq_ignore_ascii_case("localhost") {
                return Err(FetchError::InvalidUrl("a file URL must not name a host"));
            }
            path
        }
        None => rest,
    };
    if !path.starts_with('/') {
        return Err(FetchError::InvalidUrl("a file URL needs an absolute path"));
    }
    let bytes = percent_decode(path).ok_or(FetchError::InvalidUrl(
        "the file URL has an invalid percent-encoding",
    ))?;
    if bytes.contains(&0) {
        return Err(FetchError::InvalidUrl("the file URL contains a NUL byte"));
    }
    Ok(lexical_normalize(&path_from_bytes(bytes)?))
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = char::from(bytes.next()?).to_digit(16)?;
            let lo = char::from(bytes.next()?).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

#[cfg(unix)]
fn path_from_bytes(bytes: Vec<u8>) -> Result<PathBuf, FetchError> {
    use std::os::unix::ffi::OsStringExt as _;
    Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

#[cfg(not(unix))]
fn path_from_bytes(bytes: Vec<u8>) -> Result<PathBuf, FetchError> {
    String::from_utf8(bytes)
        .map(PathBuf::from)
        .map_err(|_| FetchError::InvalidUrl("the file path is not UTF-8"))
}

/// Resolves `.` and `..` without the file system; `..` at the root stays at the root.
fn lexical_normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn read_local(
    root: &Path,
    path: &Path,
    max: usize,
    cancelled: &AtomicBool,
) -> Result<Vec<u8>, FetchError> {
    let root_canon = std::fs::canonicalize(root).map_err(|_| FetchError::FileUnavailable)?;
    // The configured folder may itself be (under) a link: accept paths written either way.
    let root_lexical = std::path::absolute(root)
        .map(|r| lexical_normalize(&r))
        .unwrap_or_else(|_| root_canon.clone());
    if !path.starts_with(&root_canon) && !path.starts_with(&root_lexical) {
        return Err(FetchError::FileOutside);
    }
    let canon = std::fs::canonicalize(path).map_err(|_| FetchError::FileUnavailable)?;
    if !canon.starts_with(&root_canon) {
        return Err(FetchError::FileUnavailable);
    }
    // Checked before opening: opening a FIFO would block.
    let meta = std::fs::metadata(&canon).map_err(|_| FetchError::FileUnavailable)?;
    if !meta.is_file() {
        return Err(FetchError::FileUnavailable);
    }
    if meta.len() > max as u64 {
        return Err(FetchError::TooLarge { limit: max });
    }
    let file = std::fs::File::open(&canon).map_err(|_| FetchError::FileUnavailable)?;
    // The file may grow after the metadata check: the read itself is capped too.
    let mut reader = file.take(max as u64 + 1);
    let mut out = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0).min(max));
    let mut chunk = vec![0; FILE_CHUNK];
    loop {
        if cancelled.load(Ordering::Relaxed) {
            return Err(FetchError::FileRead(ErrorKind::Interrupted));
        }
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(FetchError::FileRead(e.kind())),
        }
        if out.len() > max {
            return Err(FetchError::TooLarge { limit: max });
        }
    }
    if out.is_empty() {
        return Err(FetchError::Empty);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// http(s) URLs

#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    Name(String),
    Ip(IpAddr),
}

/// A parsed http(s) URL, without credentials or fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    https: bool,
    host: Host,
    port: u16,
    /// Origin-form request target, percent-encoded: `/path?query`.
    path_and_query: String,
}

impl Target {
    fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// `host[:port]` as in a Host header: IPv6 in brackets, the default port omitted.
    fn authority(&self) -> String {
        let host = match &self.host {
            Host::Name(n) => n.clone(),
            Host::Ip(IpAddr::V4(a)) => a.to_string(),
            Host::Ip(IpAddr::V6(a)) => format!("[{a}]"),
        };
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    fn origin(&self) -> String {
        format!("{}://{}", self.scheme(), self.authority())
    }
}

/// Parses what follows `http:` / `https:`.
fn parse_http(https: bool, rest: &str) -> Result<Target, FetchError> {
    let rest = rest
        .strip_prefix("//")
        .ok_or(FetchError::InvalidUrl("expected `//` after the scheme"))?;
    let rest = rest.split('#').next().unwrap_or("");
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    if authority.contains('@') {
        return Err(FetchError::Credentials);
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (inner, after) = bracketed.split_once(']').ok_or(FetchError::InvalidUrl(
            "the IPv6 address has no closing `]`",
        ))?;
        if inner.contains('%') {
            return Err(FetchError::InvalidUrl(
                "IPv6 zone identifiers are not supported",
            ));
        }
        let ip: Ipv6Addr = inner
            .parse()
            .map_err(|_| FetchError::InvalidUrl("the IPv6 address in `[…]` is not valid"))?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(FetchError::InvalidUrl(
                "unexpected characters after the IPv6 address",
            ))?),
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        (normalize_host(host).map_err(FetchError::InvalidUrl)?, port)
    };
    let port = match port {
        None | Some("") => {
            if https {
                443
            } else {
                80
            }
        }
        Some(p) => parse_port(p).ok_or(FetchError::InvalidUrl("the port is not 1 to 65535"))?,
    };
    let mut path_and_query = String::with_capacity(tail.len() + 1);
    if !tail.starts_with('/') {
        path_and_query.push('/');
    }
    encode_into(&mut path_and_query, tail);
    Ok(Target {
        https,
        host,
        port,
        path_and_query,
    })
}

/// Validates and lowercases a host name; a dotted-decimal IPv4 address becomes `Host::Ip`.
fn normalize_host(s: &str) -> Result<Host, &'static str> {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() {
        return Err("the host is empty");
    }
    if s.len() > 253
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(
            "the host name has characters that are not allowed (international names need \
             their xn-- form)",
        );
    }
    if s.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Err("the host name has an empty or overlong label");
    }
    if let Ok(v4) = s.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(v4)));
    }
    // `127.1`, `2130706433`, `0x7f.0.0.1`: browsers and getaddrinfo read these as IPv4
    // addresses, in ways that differ; no real name ends in a numeric label, so refuse them.
    let last = s.rsplit('.').next().unwrap_or(s);
    let hex = last.len() > 2
        && last[..2].eq_ignore_ascii_case("0x")
        && last[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if last.bytes().all(|b| b.is_ascii_digit()) || hex {
        return Err("a numeric host must be a dotted-decimal IPv4 address (a.b.c.d)");
    }
    Ok(Host::Name(s.to_ascii_lowercase()))
}

/// Appends `s`, percent-encoding every byte that may not appear in a request target (spaces,
/// non-ASCII, `"<>\^`{|}`, controls). Existing `%XX` escapes are kept as they are.
fn encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
                    | b'/'
                    | b'?'
                    | b'%'
            );
        if keep {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// Resolves a `Location` value against the URL it came from (RFC 3986 §5.2), as a URL string.
fn resolve_location(base: &Target, location: &str) -> String {
    let location = location.trim();
    if split_scheme(location).is_some() {
        return location.to_owned();
    }
    if location.starts_with("//") {
        return format!("{}:{location}", base.scheme());
    }
    let location = location.split('#').next().unwrap_or("");
    let base_path = base.path_and_query.split('?').next().unwrap_or("/");
    let (path, query) = match location.find('?') {
        Some(i) => location.split_at(i),
        None => (location, ""),
    };
    let path = if path.is_empty() {
        if query.is_empty() {
            return format!("{}{}", base.origin(), base.path_and_query);
        }
        base_path.to_owned()
    } else if path.starts_with('/') {
        remove_dot_segments(path)
    } else {
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        remove_dot_segments(&format!("{dir}{path}"))
    };
    format!("{}{path}{query}", base.origin())
}

fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut trailing = false;
    for seg in path.strip_prefix('/').unwrap_or(path).split('/') {
        trailing = false;
        match seg {
            "." => trailing = true,
            ".." => {
                out.pop();
                trailing = true;
            }
            s => out.push(s),
        }
    }
    let mut result = format!("/{}", out.join("/"));
    if trailing && !result.ends_with('/') {
        result.push('/');
    }
    result
}

/// Parses a redirect target, mapping parse failures to redirect-specific reasons.
fn parse_redirect(base: &Target, location: &str) -> Result<Target, FetchError> {
    let url = resolve_location(base, location);
    let Some((scheme, rest)) = split_scheme(&url) else {
        return Err(FetchError::RedirectInvalid("it has no scheme"));
    };
    if scheme != "http" && scheme != "https" {
        return Err(FetchError::RedirectScheme(scheme));
    }
    parse_http(scheme == "https", rest).map_err(|e| match e {
        FetchError::InvalidUrl(why) => FetchError::RedirectInvalid(why),
        FetchError::Credentials => FetchError::RedirectInvalid("it contains credentials"),
        other => other,
    })
}

/// The outcome of one request.
enum Hop {
    Body(Vec<u8>),
    Redirect(String),
}

async fn fetch_http(mut target: Target, policy: &MediaPolicy) -> Result<Vec<u8>, FetchError> {
    let mut redirects = 0u8;
    loop {
        let hop = fetch_once(&target, policy).await.map_err(|e| {
            if redirects == 0 {
                e
            } else {
                FetchError::Redirected {
                    to: target.origin(),
                    cause: Box::new(e),
                }
            }
        })?;
        match hop {
            Hop::Body(bytes) => return Ok(bytes),
            Hop::Redirect(location) => {
                if redirects >= policy.max_redirects {
                    return Err(FetchError::TooManyRedirects(policy.max_redirects));
                }
                redirects += 1;
                target = parse_redirect(&target, &location)?;
            }
        }
    }
}

async fn fetch_once(target: &Target, policy: &MediaPolicy) -> Result<Hop, FetchError> {
    let addrs = resolve_checked(target, policy).await?;
    let tcp = connect_any(target, &addrs, policy.connect_timeout).await?;
    if target.https {
        let tls = tls_connect(tcp, target, policy).await?;
        exchange(tls, target, policy.max_bytes).await
    } else {
        exchange(tcp, target, policy.max_bytes).await
    }
}

/// Resolves the host once and checks every address; the result is what may be connected to.
async fn resolve_checked(
    target: &Target,
    policy: &MediaPolicy,
) -> Result<Vec<SocketAddr>, FetchError> {
    let port = target.port;
    match &target.host {
        Host::Ip(ip) => {
            check_addr(None, *ip, port, policy)?;
            Ok(vec![SocketAddr::new(ip.to_canonical(), port)])
        }
        Host::Name(name) => {
            let resolve_error = || FetchError::Resolve { host: name.clone() };
            let name_allowed = policy
                .allow_hosts
                .iter()
                .any(|r| r.matches_name(name, port));
            let resolved = tokio::net::lookup_host((name.as_str(), port))
                .await
                .map_err(|_| resolve_error())?;
            let mut addrs = Vec::new();
            for sa in resolved {
                if !name_allowed {
                    check_addr(Some(name), sa.ip(), port, policy)?;
                }
                let sa = SocketAddr::new(sa.ip().to_canonical(), port);
                if !addrs.contains(&sa) {
                    addrs.push(sa);
                }
            }
            if addrs.is_empty() {
                return Err(resolve_error());
            }
            Ok(addrs)
        }
    }
}

fn check_addr(
    host: Option<&str>,
    ip: IpAddr,
    port: u16,
    policy: &MediaPolicy,
) -> Result<(), FetchError> {
    let Some(class) = classify(ip) else {
        return Ok(());
    };
    if policy.allow_hosts.iter().any(|r| r.matches_addr(ip, port)) {
        return Ok(());
    }
    Err(FetchError::Refused {
        host: host.map(str::to_owned),
        addr: ip,
        class,
    })
}

/// Connects to the checked addresses in order; never resolves anything.
async fn connect_any(
    target: &Target,
    addrs: &[SocketAddr],
    limit: Duration,
) -> Result<TcpStream, FetchError> {
    let mut last = None;
    for addr in addrs {
        // A safety net for this file's tests: they must never send a packet off this machine.
        #[cfg(test)]
        assert!(addr.ip().is_loopback(), "test tried to connect to {addr}");
        match tokio::time::timeout(limit, TcpStream::connect(*addr)).await {
            Ok(Ok(stream)) => {
                // Only latency is at stake; a failure here changes nothing else.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => {
                last = Some(FetchError::Connect {
                    host: target.authority(),
                    kind: e.kind(),
                })
            }
            Err(_) => {
                last = Some(FetchError::ConnectTimeout {
                    host: target.authority(),
                    after: limit,
                })
            }
        }
    }
    Err(last.unwrap_or(FetchError::Connect {
        host: target.authority(),
        kind: ErrorKind::NotFound,
    }))
}

/// The system trust anchors, loaded once per process.
fn system_roots() -> &'static rustls::RootCertStore {
    static ROOTS: OnceLock<rustls::RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if !found.errors.is_empty() {
            tracing::warn!(errors = ?found.errors, "some system CA certificates could not be loaded");
        }
        let mut roots = rustls::RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!("no system CA certificates found; https media fetches will fail");
        }
        tracing::debug!(added, ignored, "loaded system CA certificates");
        roots
    })
}

fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, rustls::Error> {
    // The provider is explicit so that another crate enabling aws-lc-rs cannot make rustls'
    // process-wide default ambiguous.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn tls_config(policy: &MediaPolicy) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    static DEFAULT: OnceLock<Result<Arc<rustls::ClientConfig>, rustls::Error>> = OnceLock::new();
    if policy.extra_roots.is_empty() {
        return DEFAULT
            .get_or_init(|| client_config(system_roots().clone()).map(Arc::new))
            .clone();
    }
    let mut roots = system_roots().clone();
    for cert in &policy.extra_roots {
        roots.add(cert.clone())?;
    }
    client_config(roots).map(Arc::new)
}

async fn tls_connect(
    tcp: TcpStream,
    target: &Target,
    policy: &MediaPolicy,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, FetchError> {
    let tls_error = |reason: String| FetchError::Tls {
        host: target.authority(),
        reason,
    };
    let config = tls_config(policy).map_err(|e| tls_error(e.to_string()))?;
    let name = match &target.host {
        Host::Name(n) => ServerName::try_from(n.clone())
            .map_err(|_| tls_error("the host name is not valid for TLS".to_owned()))?,
        Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
    };
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| tls_error(e.to_string()))
}

fn is_followed_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// One HTTP/1.1 GET over `io`. The connection is driven in this future, not spawned.
async fn exchange<T>(io: T, target: &Target, max: usize) -> Result<Hop, FetchError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let http_error = |e: hyper::Error| FetchError::Http {
        host: target.authority(),
        reason: e.to_string(),
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(http_error)?;
    let request = Request::builder()
        .method(Method::GET)
        .uri(target.path_and_query.as_str())
        .header(header::HOST, target.authority())
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::ACCEPT, "image/*")
        .header(header::CONNECTION, "close")
        .body(Empty::new())
        .map_err(|_| FetchError::InvalidUrl("the path is not valid"))?;
    let work = async {
        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status();
        if is_followed_redirect(status) {
            let location = response
                .headers()
                .get(header::LOCATION)
                .ok_or(FetchError::RedirectWithoutLocation(status))?
                .to_str()
                .map_err(|_| FetchError::RedirectInvalid("the Location header is not ASCII"))?;
            return Ok(Hop::Redirect(location.to_owned()));
        }
        if !status.is_success() {
            return Err(FetchError::Status(status));
        }
        let announced = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if announced.is_some_and(|n| n > max as u64) {
            return Err(FetchError::TooLarge { limit: max });
        }
        let capacity = announced.map_or(0, |n| usize::try_from(n).unwrap_or(max).min(max));
        let mut body = response.into_body();
        let mut bytes = Vec::with_capacity(capacity);
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(http_error)?.into_data() {
                if bytes.len() + data.len() > max {
                    return Err(FetchError::TooLarge { limit: max });
                }
                bytes.extend_from_slice(&data);
            }
        }
        if bytes.is_empty() {
            return Err(FetchError::Empty);
        }
        Ok(Hop::Body(bytes))
    };
    let mut work = std::pin::pin!(work);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        biased;
        result = &mut work => result,
        // The connection may finish (the server closed it) while `work` still has buffered
        // frames to take; only an error ends the exchange early.
        done = &mut conn => match done {
            Ok(()) => work.await,
            Err(e) => Err(http_error(e)),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering::SeqCst;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR-not-really-a-png";

    #[derive(Clone)]
    enum Reply {
        /// Raw response bytes, then close.
        Full(Vec<u8>),
        /// The head, then one byte of body every `every`.
        Trickle { head: String, every: Duration },
        /// A chunked body that never ends.
        Endless,
        /// Never answers; counts the connection as closed when the client goes away.
        Hang,
    }

    fn ok(body: &[u8]) -> Reply {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        Reply::Full(r)
    }

    fn status(line: &str) -> Reply {
        Reply::Full(
            format!("HTTP/1.1 {line}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .into_bytes(),
        )
    }

    fn redirect(code: u16, location: &str) -> Reply {
        Reply::Full(
            format!(
                "HTTP/1.1 {code} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            )
            .into_bytes(),
        )
    }

    type Handler = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

    /// A local HTTP(S) server that counts connections.
    struct Server {
        addr: SocketAddr,
        conns: Arc<AtomicUsize>,
        closed: Arc<AtomicUsize>,
        requests: Arc<Mutex<Vec<String>>>,
        sni: Arc<Mutex<Vec<String>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl Server {
        fn port(&self) -> u16 {
            self.addr.port()
        }
        fn conns(&self) -> usize {
            self.conns.load(SeqCst)
        }
    }

    async fn serve(ip: &str, handler: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Server {
        try_serve(ip, None, Arc::new(handler)).await.unwrap()
    }

    async fn try_serve(
        ip: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
        handler: Handler,
    ) -> Option<Server> {
        let ip: IpAddr = ip.parse().unwrap();
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.ok()?;
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let sni = Arc::new(Mutex::new(Vec::new()));
        let (c, cl, rq, sn) = (conns.clone(), closed.clone(), requests.clone(), sni.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, SeqCst);
                let (handler, cl, rq, sn, tls) = (
                    handler.clone(),
                    cl.clone(),
                    rq.clone(),
                    sn.clone(),
                    tls.clone(),
                );
                tokio::spawn(async move {
                    match tls {
                        None => handle(stream, handler, rq, cl).await,
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                if let Some(name) = s.get_ref().1.server_name() {
                                    sn.lock().unwrap().push(name.to_owned());
                                }
                                handle(s, handler, rq, cl).await;
                            }
                        }
                    }
                });
            }
        });
        Some(Server {
            addr,
            conns,
            closed,
            requests,
            sni,
            task,
        })
    }

    async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
        mut s: S,
        handler: Handler,
        requests: Arc<Mutex<Vec<String>>>,
        closed: Arc<AtomicUsize>,
    ) {
        let mut buf = Vec::new();
        let mut tmp = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let head = String::from_utf8_lossy(&buf).into_owned();
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        requests.lock().unwrap().push(head);
        match handler(&path) {
            Reply::Full(bytes) => {
                let _ = s.write_all(&bytes).await;
                let _ = s.shutdown().await;
            }
            Reply::Trickle { head, every } => {
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    tokio::time::sleep(every).await;
                    if s.write_all(b"x").await.is_err() || s.flush().await.is_err() {
                        return;
                    }
                }
            }
            Reply::Endless => {
                let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                if s.write_all(head).await.is_err() {
                    return;
                }
                let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
                while s.write_all(chunk.as_bytes()).await.is_ok() {}
            }
            Reply::Hang => {
                while let Ok(n) = s.read(&mut tmp).await {
                    if n == 0 {
                        break;
                    }
                }
                closed.fetch_add(1, SeqCst);
            }
        }
    }

    fn policy(rules: &[&str]) -> MediaPolicy {
        MediaPolicy {
            allow_hosts: rules.iter().map(|r| r.parse().unwrap()).collect(),
            connect_timeout: Duration::from_secs(2),
            total_timeout: Duration::from_secs(10),
            ..MediaPolicy::default()
        }
    }

    /// The error behind any `Redirected` wrappers.
    fn root(e: &FetchError) -> &FetchError {
        match e {
            FetchError::Redirected { cause, .. } => root(cause),
            other => other,
        }
    }

    // ---- address classifier -------------------------------------------------------------

    #[test]
    fn classifies_ipv4() {
        use V4Class::*;
        let refused = [
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", ThisNetwork),
            ("10.0.0.1", Private),
            ("10.255.255.255", Private),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("169.254.169.254", LinkLocal),
            ("169.254.0.1", LinkLocal),
            ("100.64.0.1", SharedCgnat),
            ("100.127.255.255", SharedCgnat),
            ("224.0.0.1", Multicast),
            ("239.255.255.255", Multicast),
            ("240.0.0.1", Reserved),
            ("255.255.255.254", Reserved),
            ("255.255.255.255", Broadcast),
            ("192.0.0.170", Reserved),
            ("192.88.99.1", Reserved),
            ("192.0.2.1", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("198.18.0.1", Benchmarking),
            ("198.19.255.255", Benchmarking),
        ];
        for (a, class) in refused {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(classify(ip), Some(AddrClass::V4(class)), "{a}");
        }
        let public = [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "9.255.255.255",
            "11.0.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "192.0.1.255",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "126.255.255.255",
            "128.0.0.0",
        ];
        for a in public {
            assert_eq!(classify(a.parse().unwrap()), None, "{a}");
        }
    }

    #[test]
    fn classifies_ipv6() {
        use AddrClass::*;
        let emb = |form, v4: &str, class| Embedded {
            form,
            v4: v4.parse().unwrap(),
            class,
        };
        let refused = [
            ("::", Unspecified6),
            ("::1", Loopback6),
            (
                "::ffff:127.0.0.1",
                emb(Embedding::Mapped, "127.0.0.1", V4Class::Loopback),
            ),
            (
                "::ffff:169.254.169.254",
                emb(Embedding::Mapped, "169.254.169.254", V4Class::LinkLocal),
            ),
            (
                "::ffff:10.0.0.1",
                emb(Embedding::Mapped, "10.0.0.1", V4Class::Private),
            ),
            (
                "::ffff:0.0.0.0",
                emb(Embedding::Mapped, "0.0.0.0", V4Class::Unspecified),
            ),
            (
                "::127.0.0.1",
                emb(Embedding::Compatible, "127.0.0.1", V4Class::Loopback),
            ),
            ("::8.8.8.8", Ipv4Compatible),
            (
                "64:ff9b::10.0.0.1",
                emb(Embedding::Nat64, "10.0.0.1", V4Class::Private),
            ),
            (
                "64:ff9b::7f00:1",
                emb(Embedding::Nat64, "127.0.0.1", V4Class::Loopback),
            ),
            (
                "64:ff9b::a9fe:a9fe",
                emb(Embedding::Nat64, "169.254.169.254", V4Class::LinkLocal),
            ),
            ("64:ff9b:1::1", LocalNat64),
            (
                "2002:7f00:1::",
                emb(Embedding::SixToFour, "127.0.0.1", V4Class::Loopback),
            ),
            (
                "2002:a9fe:a9fe::1",
                emb(Embedding::SixToFour, "169.254.169.254", V4Class::LinkLocal),
            ),
            (
                "2002:c0a8:101:1::1",
                emb(Embedding::SixToFour, "192.168.1.1", V4Class::Private),
            ),
            ("2001::1", Teredo),
            ("2001:0:4136:e378::1", Teredo),
            ("fc00::1", UniqueLocal),
            ("fd00::1", UniqueLocal),
            ("fdff:ffff::1", UniqueLocal),
            ("fe80::1", LinkLocal6),
            ("febf::1", LinkLocal6),
            ("fec0::1", SiteLocal),
            ("ff02::1", Multicast6),
            ("ff00::", Multicast6),
            ("ff0e::1", Multicast6),
            ("2001:db8::1", Documentation6),
            ("3fff::1", Documentation6),
            ("2001:2::1", Benchmarking6),
            ("2001:10::1", Reserved6),
            ("5f00::1", Reserved6),
            ("100::1", Reserved6),
            ("::ffff:0:7f00:1", Reserved6),
            ("1::1", Reserved6),
            ("4000::1", Reserved6),
            ("e000::1", Reserved6),
        ];
        for (a, class) in refused {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(classify(ip), Some(class), "{a}");
        }
        let public = [
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450:4001::1",
            "2400:cb00::1",
            "2001:20::1",
            "2001:db9::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "3ffe::1",
        ];
        for a in public {
            assert_eq!(classify(a.parse().unwrap()), None, "{a}");
        }
    }

    #[test]
    fn refusal_messages() {
        let e = FetchError::Refused {
            host: Some("localhost".into()),
            addr: "127.0.0.1".parse().unwrap(),
            class: AddrClass::V4(V4Class::Loopback),
        };
        assert_eq!(
            e.to_string(),
            "the host `localhost` resolves to 127.0.0.1, a loopback address, which this server \
             does not fetch from (allow it with --allow-media-host)"
        );
        let ip: IpAddr = "::ffff:169.254.169.254".parse().unwrap();
        let e = FetchError::Refused {
            host: None,
            addr: ip,
            class: classify(ip).unwrap(),
        };
        assert_eq!(
            e.to_string(),
            "the address ::ffff:169.254.169.254 is an IPv4-mapped form of 169.254.169.254, a \
             link-local address (the range of cloud metadata services), which this server does \
             not fetch from (allow it with --allow-media-host)"
        );
        assert_eq!(
            FetchError::TooLarge { limit: 20 << 20 }.to_string(),
            "the image is larger than the 20 MiB limit"
        );
        assert_eq!(
            FetchError::Timeout(Duration::from_secs(30)).to_string(),
            "fetching timed out after 30 s"
        );
        assert_eq!(
            FetchError::Status(StatusCode::NOT_FOUND).to_string(),
            "the server answered 404 Not Found"
        );
        assert_eq!(
            FetchError::TooManyRedirects(3).to_string(),
            "too many redirects (more than 3)"
        );
        assert_eq!(duration_text(Duration::from_millis(250)), "250 ms");
        assert_eq!(duration_text(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(size_text(512 * 1024), "512 KiB");
        assert_eq!(size_text(1000), "1000 bytes");
    }

    // ---- host rules ---------------------------------------------------------------------

    #[test]
    fn parses_host_rules() {
        let r = |s: &str| MediaPolicy::parse_host_rule(s).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();

        let name = r(" Minio.Internal. ");
        assert_eq!(name.to_string(), "minio.internal");
        assert!(name.matches_name("minio.internal", 9000));
        assert!(!name.matches_name("other.internal", 9000));
        assert!(!name.matches_addr(ip("10.0.0.1"), 80));

        let with_port = r("minio.internal:9000");
        assert_eq!(with_port.to_string(), "minio.internal:9000");
        assert!(with_port.matches_name("minio.internal", 9000));
        assert!(!with_port.matches_name("minio.internal", 80));

        let net = r("10.0.0.0/8");
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.matches_addr(ip("10.1.2.3"), 80));
        assert!(net.matches_addr(ip("::ffff:10.1.2.3"), 80));
        assert!(!net.matches_addr(ip("11.0.0.1"), 80));
        assert!(!net.matches_name("10.0.0.1", 80));

        let one = r("127.0.0.1");
        assert_eq!(one.to_string(), "127.0.0.1/32");
        assert!(one.matches_addr(ip("127.0.0.1"), 1));
        assert!(one.matches_addr(ip("::ffff:127.0.0.1"), 1));
        assert!(!one.matches_addr(ip("127.0.0.2"), 1));

        let v4_port = r("127.0.0.1:8080");
        assert!(v4_port.matches_addr(ip("127.0.0.1"), 8080));
        assert!(!v4_port.matches_addr(ip("127.0.0.1"), 8081));

        assert_eq!(r("::1"), r("[::1]"));
        assert!(r("::1").matches_addr(ip("::1"), 5));
        let v6_port = r("[fd00::1]:8080");
        assert_eq!(v6_port.to_string(), "[fd00::1]:8080");
        assert!(v6_port.matches_addr(ip("fd00::1"), 8080));
        assert!(!v6_port.matches_addr(ip("fd00::1"), 80));

        let ula = r("fd00::/8");
        assert!(ula.matches_addr(ip("fd12:3456::1"), 80));
        assert!(!ula.matches_addr(ip("fe80::1"), 80));
        assert!(r("[fd00::]/8").matches_addr(ip("fd00::9"), 1));
        assert!(r("0.0.0.0/0").matches_addr(ip("1.2.3.4"), 1));
        assert!(!r("0.0.0.0/0").matches_addr(ip("::1"), 1));
        assert!(r("::/0").matches_addr(ip("::1"), 1));

        let err = |s: &str| MediaPolicy::parse_host_rule(s).unwrap_err();
        assert!(
            err("10.1.0.0/8").contains("did you mean 10.0.0.0/8?"),
            "{}",
            err("10.1.0.0/8")
        );
        assert!(err("*.example.com").contains("wildcards"));
        assert!(err("").contains("empty"));
        for bad in [
            "host:0",
            "host:abc",
            "host:",
            "1.2.3.4/33",
            "a b",
            "127.1",
            "2130706433",
            "[::1",
            "[::1]x",
            "fe80::/129",
            "a:b:c",
            "example.com/8",
        ] {
            assert!(MediaPolicy::parse_host_rule(bad).is_err(), "{bad}");
        }
    }

    // ---- URL parsing ----------------------------------------------------------------------

    #[test]
    fn parses_http_urls() {
        let p = |s: &str| parse_http(false, s);
        let t = p("//Example.COM./a b/ü?x=1&y=\"2\"#frag").unwrap();
        assert_eq!(t.host, Host::Name("example.com".into()));
        assert_eq!(t.port, 80);
        assert_eq!(t.path_and_query, "/a%20b/%C3%BC?x=1&y=%222%22");
        assert_eq!(t.origin(), "http://example.com");

        let t = p("//[::1]:8080/x%2Fy").unwrap();
        assert_eq!(t.host, Host::Ip("::1".parse().unwrap()));
        assert_eq!((t.port, t.path_and_query.as_str()), (8080, "/x%2Fy"));
        assert_eq!(t.origin(), "http://[::1]:8080");
        let t = parse_http(true, "//[2001:db8::1]").unwrap();
        assert_eq!((t.port, t.path_and_query.as_str()), (443, "/"));
        assert_eq!(t.authority(), "[2001:db8::1]");
        let t = p("//host:/?q").unwrap();
        assert_eq!((t.port, t.path_and_query.as_str()), (80, "/?q"));
        let t = p("//host?q").unwrap();
        assert_eq!(t.path_and_query, "/?q");
        let t = p("//1.2.3.4:81").unwrap();
        assert_eq!(t.host, Host::Ip("1.2.3.4".parse().unwrap()));
        assert_eq!(t.authority(), "1.2.3.4:81");
        assert_eq!(parse_http(true, "//h:443/").unwrap().authority(), "h");

        for bad in [
            "/host/x",
            "//",
            "//?q",
            "//:80/",
            "//host:0/",
            "//host:99999/",
            "//host:+80/",
            "//host:8o/",
            "//a..b/",
            "//ex\\ample.com/",
            "//例え.jp/",
            "//exa mple.com/",
            "//127.1/",
            "//2130706433/",
            "//0x7f.0.0.1/",
            "//0x7f000001/",
            "//1.2.3.256/",
            "//[fe80::1%25eth0]/",
            "//[::1/",
            "//[::1]x/",
            "//[1.2.3.4]/",
            "//a:b:c/",
        ] {
            assert!(
                matches!(p(bad), Err(FetchError::InvalidUrl(_))),
                "{bad}: {:?}",
                p(bad)
            );
        }
        for creds in [
            "//user:pass@host/",
            "//user@host/",
            "//@host/",
            "//u:p@[::1]:80/",
        ] {
            assert!(matches!(p(creds), Err(FetchError::Credentials)), "{creds}");
        }
    }

    #[test]
    fn resolves_locations() {
        let base = parse_http(false, "//h:8080/a/b/c?q").unwrap();
        let cases = [
            ("/x", "http://h:8080/x"),
            ("x", "http://h:8080/a/b/x"),
            ("../x", "http://h:8080/a/x"),
            ("../../../../x?y", "http://h:8080/x?y"),
            ("./", "http://h:8080/a/b/"),
            ("..", "http://h:8080/a/"),
            ("?z", "http://h:8080/a/b/c?z"),
            ("#f", "http://h:8080/a/b/c?q"),
            ("", "http://h:8080/a/b/c?q"),
            ("//other/y", "http://other/y"),
            ("https://o/z", "https://o/z"),
            ("FILE:///etc/passwd", "FILE:///etc/passwd"),
            ("/a/./b/../c#frag", "http://h:8080/a/c"),
        ];
        for (loc, want) in cases {
            assert_eq!(resolve_location(&base, loc), want, "{loc}");
        }
    }

    #[test]
    fn redacts_urls_for_logs() {
        assert_eq!(
            redacted("https://Host.example/p/a.png?X-Amz-Signature=abc#f"),
            "https://host.example/p/a.png"
        );
        assert_eq!(redacted("http://user:s3cret@host/x"), "http://<invalid>");
        assert!(redacted("data:image/png;base64,AAAA").starts_with("data:image/png;"));
        assert_eq!(redacted("ftp://x/y"), "ftp:…");
    }

    // ---- data: URLs -----------------------------------------------------------------------

    #[tokio::test]
    async fn data_urls() {
        let p = MediaPolicy::default();
        let png = b"\x89PNG\r\n\x1a\n".to_vec();
        for url in [
            "data:image/png;base64,iVBORw0KGgo=",
            "data:image/png;base64,iVBORw0KGgo",
            "data:image/png;base64,iVBO Rw0K\r\nGgo=",
            "DATA:IMAGE/PNG;BASE64,iVBORw0KGgo=",
            "data:image/webp;base64,iVBORw0KGgo=",
            "data:image/gif;base64,iVBORw0KGgo=",
            "data:image/jpeg;base64,iVBORw0KGgo=",
            "data:image/jpg;base64,iVBORw0KGgo=",
            "data:image/png;name=a.png;base64,iVBORw0KGgo=",
            "  data:image/png;base64,iVBORw0KGgo=\n",
        ] {
            assert_eq!(load(url, &p).await.unwrap(), png, "{url}");
        }
        let e = load("data:text/plain;base64,aGk=", &p).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the data URL's media type `text/plain` is not an image type this server accepts \
             (image/png, image/jpeg, image/webp, image/gif)"
        );
        type Check = fn(&FetchError) -> bool;
        let cases: [(&str, Check); 9] = [
            ("data:image/png,rawbytes", |e| {
                matches!(e, FetchError::DataNotBase64)
            }),
            ("data:image/png;charset=utf-8,x", |e| {
                matches!(e, FetchError::DataNotBase64)
            }),
            ("data:image/png;base64,!!!!", |e| {
                matches!(e, FetchError::DataBase64(_))
            }),
            ("data:image/png;base64,iVBO-w0K_go", |e| {
                matches!(e, FetchError::DataBase64(_))
            }),
            ("data:image/png;base64,iVBORw0KGgo==x", |e| {
                matches!(e, FetchError::DataBase64(_))
            }),
            ("data:image/png;base64,", |e| matches!(e, FetchError::Empty)),
            ("data:image/png;base64", |e| {
                matches!(e, FetchError::DataMalformed(_))
            }),
            ("data:;base64,AAAA", |e| {
                matches!(e, FetchError::DataMalformed(_))
            }),
            ("data:image/svg+xml;base64,AAAA", |e| {
                matches!(e, FetchError::DataMediaType(_))
            }),
        ];
        for (url, check) in cases {
            let e = load(url, &p).await.unwrap_err();
            assert!(check(&e), "{url}: {e:?}");
        }
        // The cap applies to decoded bytes (12 and 9 against a limit of 6): refused by the
        // estimate before decoding, and after decoding.
        let small = MediaPolicy {
            max_bytes: 6,
            ..MediaPolicy::default()
        };
        for url in [
            "data:image/png;base64,AAAAAAAAAAAAAAAA",
            "data:image/png;base64,AAAAAAAAAAAA",
        ] {
            let e = load(url, &small).await.unwrap_err();
            assert!(
                matches!(e, FetchError::TooLarge { limit: 6 }),
                "{url}: {e:?}"
            );
        }
        assert_eq!(
            load("data:image/png;base64,AAAAAAAAAAAA", &small)
                .await
                .unwrap_err()
                .to_string(),
            "the image is larger than the 6 bytes limit"
        );
        assert_eq!(
            load("data:image/png;base64,AAAAAAA", &small)
                .await
                .unwrap()
                .len(),
            5
        );
    }

    #[tokio::test]
    async fn schemes() {
        let p = MediaPolicy::default();
        let e = load("ftp://example.com/a.png", &p).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "unsupported URL scheme `ftp` (expected http, https or data)"
        );
        for url in ["example.com/a.png", "", "://x", "1http://x"] {
            let e = load(url, &p).await.unwrap_err();
            assert!(matches!(e, FetchError::InvalidUrl(_)), "{url}: {e:?}");
        }
        let e = load("file:///etc/passwd", &p).await.unwrap_err();
        assert!(matches!(e, FetchError::FileDisabled), "{e:?}");
    }

    // ---- file: URLs -----------------------------------------------------------------------

    #[cfg(unix)]
    #[tokio::test]
    async fn file_urls() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let root = base.join("media");
        let outside = base.join("secret");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("img.png"), PNG).unwrap();
        std::fs::write(root.join("with space #1.png"), PNG).unwrap();
        std::fs::write(root.join("sub/b.png"), PNG).unwrap();
        std::fs::write(root.join("empty.png"), b"").unwrap();
        std::fs::write(outside.join("secret.png"), b"top secret").unwrap();
        symlink(outside.join("secret.png"), root.join("link.png")).unwrap();
        symlink(&outside, root.join("linkdir")).unwrap();
        symlink(root.join("sub/b.png"), root.join("inner-link.png")).unwrap();
        symlink(&root, base.join("media-link")).unwrap();

        let p = MediaPolicy {
            allowed_local_path: Some(root.clone()),
            ..MediaPolicy::default()
        };
        let r = root.display();
        for url in [
            format!("file://{r}/img.png"),
            format!("file://localhost{r}/img.png"),
            format!("FILE:{r}/img.png"),
            format!("file://{r}/./sub/../img.png"),
            format!("file://{r}/with%20space%20%231.png"),
            format!("file://{r}/sub/b.png?x#y"),
            format!("file://{r}/inner-link.png"),
        ] {
            assert_eq!(load(&url, &p).await.unwrap(), PNG, "{url}");
        }
        let s = outside.display();
        for url in [
            format!("file://{s}/secret.png"),
            format!("file://{r}/../secret/secret.png"),
            format!("file://{r}/%2e%2e/secret/secret.png"),
            format!("file://{r}%2F..%2Fsecret%2Fsecret.png"),
            "file:///etc/passwd".to_owned(),
            format!("file://{s}/does-not-exist.png"),
        ] {
            let e = load(&url, &p).await.unwrap_err();
            assert!(matches!(e, FetchError::FileOutside), "{url}: {e:?}");
        }
        // Escaping through a link reads exactly like a missing file.
        let missing = load(&format!("file://{r}/missing.png"), &p)
            .await
            .unwrap_err();
        assert!(
            matches!(missing, FetchError::FileUnavailable),
            "{missing:?}"
        );
        for url in [
            format!("file://{r}/link.png"),
            format!("file://{r}/linkdir/secret.png"),
            format!("file://{r}/linkdir/nothing-here.png"),
            format!("file://{r}/sub"),
        ] {
            let e = load(&url, &p).await.unwrap_err();
            assert_eq!(e.to_string(), missing.to_string(), "{url}");
            assert!(!e.to_string().contains("secret"));
        }
        assert!(matches!(
            load(&format!("file://{r}/empty.png"), &p)
                .await
                .unwrap_err(),
            FetchError::Empty
        ));
        assert!(matches!(
            load(&format!("file://otherhost{r}/img.png"), &p)
                .await
                .unwrap_err(),
            FetchError::InvalidUrl(_)
        ));
        assert!(matches!(
            load("file://relative/x.png", &p).await.unwrap_err(),
            FetchError::InvalidUrl(_)
        ));
        assert!(matches!(
            load(&format!("file://{r}/a%00.png"), &p).await.unwrap_err(),
            FetchError::InvalidUrl(_)
        ));
        let small = MediaPolicy {
            max_bytes: 8,
            ..p.clone()
        };
        assert!(matches!(
            load(&format!("file://{r}/img.png"), &small)
                .await
                .unwrap_err(),
            FetchError::TooLarge { limit: 8 }
        ));
        // The folder configured through a link: both spellings of the path work.
        let via_link = MediaPolicy {
            allowed_local_path: Some(base.join("media-link")),
            ..MediaPolicy::default()
        };
        let l = base.join("media-link");
        let l = l.display();
        assert_eq!(
            load(&format!("file://{l}/img.png"), &via_link)
                .await
                .unwrap(),
            PNG
        );
        assert_eq!(
            load(&format!("file://{r}/img.png"), &via_link)
                .await
                .unwrap(),
            PNG
        );
        assert!(matches!(
            load(&format!("file://{l}/link.png"), &via_link)
                .await
                .unwrap_err(),
            FetchError::FileUnavailable
        ));
    }

    // ---- http ---------------------------------------------------------------------------

    #[tokio::test]
    async fn fetches_from_an_allowed_address() {
        let server = serve("127.0.0.1", |path| match path {
            "/img.png" => ok(PNG),
            _ => status("404 Not Found"),
        })
        .await;
        let p = policy(&["127.0.0.1"]);
        let url = format!("http://127.0.0.1:{}/img.png", server.port());
        assert_eq!(load(&url, &p).await.unwrap(), PNG);
        assert_eq!(server.conns(), 1);
        let head = server.requests.lock().unwrap()[0].to_ascii_lowercase();
        assert!(head.starts_with("get /img.png http/1.1\r\n"), "{head}");
        assert!(
            head.contains(&format!("host: 127.0.0.1:{}\r\n", server.port())),
            "{head}"
        );
        assert!(head.contains(&format!(
            "user-agent: kiln/{}\r\n",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(head.contains("accept: image/*\r\n"), "{head}");

        // 404 names the status; the query (a secret) is in no message.
        let e = load(
            &format!("http://127.0.0.1:{}/nope.png?sig=TOPSECRET", server.port()),
            &p,
        )
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "the server answered 404 Not Found");
        assert!(matches!(e, FetchError::Status(StatusCode::NOT_FOUND)));
    }

    #[tokio::test]
    async fn allows_by_host_name() {
        let server = serve("127.0.0.1", |_| ok(PNG)).await;
        let port = server.port();
        let url = format!("http://LocalHost:{port}/img.png");
        assert_eq!(load(&url, &policy(&["localhost"])).await.unwrap(), PNG);
        assert_eq!(
            load(&url, &policy(&[&format!("localhost:{port}")]))
                .await
                .unwrap(),
            PNG
        );
        let e = load(&url, &policy(&["localhost:1"])).await.unwrap_err();
        assert!(matches!(e, FetchError::Refused { .. }), "{e:?}");
        // A name rule does not cover the same address written as a literal.
        let e = load(
            &format!("http://127.0.0.1:{port}/"),
            &policy(&["localhost"]),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, FetchError::Refused { host: None, .. }), "{e:?}");
    }

    #[tokio::test]
    async fn refuses_internal_addresses_before_connecting() {
        let v4 = serve("127.0.0.1", |_| ok(PNG)).await;
        let v6 = try_serve("::1", None, Arc::new(|_: &str| ok(PNG))).await;
        let p4 = v4.port();
        let p6 = v6.as_ref().map_or(p4, Server::port);
        let p = policy(&[]);
        let urls = [
            format!("http://127.0.0.1:{p4}/img.png"),
            format!("https://127.0.0.1:{p4}/img.png"),
            format!("http://127.1.2.3:{p4}/img.png"),
            format!("http://localhost:{p4}/img.png"),
            format!("http://localhost.:{p4}/img.png"),
            format!("http://[::1]:{p6}/img.png"),
            format!("http://0.0.0.0:{p4}/img.png"),
            format!("http://[::]:{p6}/img.png"),
            format!("http://[::ffff:127.0.0.1]:{p4}/img.png"),
            format!("http://[::ffff:7f00:1]:{p4}/img.png"),
            format!("http://[::127.0.0.1]:{p4}/img.png"),
            "http://10.0.0.1/img.png".to_owned(),
            "http://172.16.0.1/img.png".to_owned(),
            "http://192.168.1.1/img.png".to_owned(),
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "http://100.64.0.1/img.png".to_owned(),
            "http://224.0.0.1/img.png".to_owned(),
            "http://255.255.255.255/img.png".to_owned(),
            "http://[fd00::1]/img.png".to_owned(),
            "http://[fe80::1]/img.png".to_owned(),
            "http://[ff02::1]/img.png".to_owned(),
            "http://[::ffff:169.254.169.254]/img.png".to_owned(),
            "http://[64:ff9b::a9fe:a9fe]/img.png".to_owned(),
            "http://[2002:a9fe:a9fe::1]/img.png".to_owned(),
        ];
        for url in &urls {
            let e = load(url, &p).await.unwrap_err();
            assert!(matches!(e, FetchError::Refused { .. }), "{url}: {e:?}");
            assert!(e.to_string().contains("--allow-media-host"), "{e}");
        }
        assert_eq!(v4.conns(), 0);
        if let Some(v6) = &v6 {
            assert_eq!(v6.conns(), 0);
        }
        let e = load(&format!("http://localhost:{p4}/"), &p)
            .await
            .unwrap_err();
        let FetchError::Refused {
            host: Some(host),
            class,
            ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(host, "localhost");
        assert!(matches!(
            class,
            AddrClass::V4(V4Class::Loopback) | AddrClass::Loopback6
        ));
        assert!(
            e.to_string()
                .starts_with("the host `localhost` resolves to "),
            "{e}"
        );
        let e = load(&format!("http://127.0.0.1:{p4}/"), &p)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the address 127.0.0.1 is a loopback address, which this server does not fetch from \
             (allow it with --allow-media-host)"
        );
    }

    #[tokio::test]
    async fn rechecks_redirect_targets() {
        let other = serve("127.0.0.2", |_| ok(PNG)).await;
        let to = format!("http://127.0.0.2:{}/img.png", other.port());
        let server = serve("127.0.0.1", move |path| match path {
            "/to-other" => redirect(302, &to),
            "/to-file" => redirect(301, "file:///etc/passwd"),
            "/to-data" => redirect(307, "data:image/png;base64,iVBORw0KGgo="),
            "/to-ftp" => redirect(308, "ftp://example.com/x"),
            "/to-creds" => redirect(303, "http://alice:s3cret@127.0.0.1/x"),
            "/to-internal" => redirect(302, "http://10.0.0.1/x"),
            "/no-location" => status("302 Found"),
            _ => ok(PNG),
        })
        .await;
        let base = format!("http://127.0.0.1:{}", server.port());
        let p = policy(&["127.0.0.1"]);

        let e = load(&format!("{base}/to-other"), &p).await.unwrap_err();
        let FetchError::Redirected { to, cause } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(to, &format!("http://127.0.0.2:{}", other.port()));
        assert!(
            matches!(**cause, FetchError::Refused { host: None, .. }),
            "{cause:?}"
        );
        assert!(
            e.to_string()
                .starts_with("after a redirect to `http://127.0.0.2:"),
            "{e}"
        );
        assert!(!e.to_string().contains("img.png"));
        assert_eq!(other.conns(), 0);

        let e = load(&format!("{base}/to-file"), &p).await.unwrap_err();
        assert!(
            matches!(&e, FetchError::RedirectScheme(s) if s == "file"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "the server redirected to a `file:` URL, which this server does not follow"
        );
        let e = load(&format!("{base}/to-data"), &p).await.unwrap_err();
        assert!(
            matches!(&e, FetchError::RedirectScheme(s) if s == "data"),
            "{e:?}"
        );
        let e = load(&format!("{base}/to-ftp"), &p).await.unwrap_err();
        assert!(
            matches!(&e, FetchError::RedirectScheme(s) if s == "ftp"),
            "{e:?}"
        );
        let e = load(&format!("{base}/to-creds"), &p).await.unwrap_err();
        assert!(matches!(e, FetchError::RedirectInvalid(_)), "{e:?}");
        assert!(!e.to_string().contains("s3cret") && !e.to_string().contains("alice"));
        let e = load(&format!("{base}/to-internal"), &p).await.unwrap_err();
        assert!(matches!(root(&e), FetchError::Refused { .. }), "{e:?}");
        let e = load(&format!("{base}/no-location"), &p).await.unwrap_err();
        assert!(matches!(e, FetchError::RedirectWithoutLocation(_)), "{e:?}");

        // With both allowed, the same redirect is followed.
        let both = policy(&["127.0.0.0/8"]);
        assert_eq!(load(&format!("{base}/to-other"), &both).await.unwrap(), PNG);
        assert_eq!(other.conns(), 1);
    }

    #[tokio::test]
    async fn limits_redirects() {
        let server = serve("127.0.0.1", |path| {
            let n: u32 = path.trim_start_matches("/r/").parse().unwrap_or(0);
            if n == 0 {
                ok(PNG)
            } else if n.is_multiple_of(2) {
                redirect(302, &format!("/r/{}", n - 1))
            } else {
                redirect(301, &format!("../r/{}", n - 1))
            }
        })
        .await;
        let p = policy(&["127.0.0.1"]);
        let base = format!("http://127.0.0.1:{}", server.port());
        assert_eq!(load(&format!("{base}/r/3"), &p).await.unwrap(), PNG);
        assert_eq!(server.conns(), 4);
        let e = load(&format!("{base}/r/4"), &p).await.unwrap_err();
        assert!(matches!(e, FetchError::TooManyRedirects(3)), "{e:?}");
        assert_eq!(e.to_string(), "too many redirects (more than 3)");
        let none = MediaPolicy {
            max_redirects: 0,
            ..p.clone()
        };
        let e = load(&format!("{base}/r/1"), &none).await.unwrap_err();
        assert!(matches!(e, FetchError::TooManyRedirects(0)), "{e:?}");
    }

    #[tokio::test]
    async fn caps_the_body() {
        let server = serve("127.0.0.1", |path| match path {
            "/big" => ok(&[7; 5000]),
            "/exact" => ok(&[7; 1000]),
            "/lying" => Reply::Full(
                [
                    &b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n"[..],
                    &[7; 100],
                ]
                .concat(),
            ),
            "/chunked" => Reply::Endless,
            "/empty" => status("200 OK"),
            _ => status("500 Internal Server Error"),
        })
        .await;
        let p = MediaPolicy {
            max_bytes: 1000,
            ..policy(&["127.0.0.1"])
        };
        let base = format!("http://127.0.0.1:{}", server.port());
        assert_eq!(
            load(&format!("{base}/exact"), &p).await.unwrap().len(),
            1000
        );
        for path in ["/big", "/lying", "/chunked"] {
            let e = load(&format!("{base}{path}"), &p).await.unwrap_err();
            assert!(
                matches!(e, FetchError::TooLarge { limit: 1000 }),
                "{path}: {e:?}"
            );
        }
        let e = load(&format!("{base}/empty"), &p).await.unwrap_err();
        assert!(matches!(e, FetchError::Empty), "{e:?}");
        let e = load(&format!("{base}/fail"), &p).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the server answered 500 Internal Server Error"
        );
    }

    #[tokio::test]
    async fn total_timeout_covers_a_slow_body_and_a_silent_server() {
        let server = serve("127.0.0.1", |path| match path {
            "/slow" => Reply::Trickle {
                head: "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".into(),
                every: Duration::from_millis(20),
            },
            _ => Reply::Hang,
        })
        .await;
        let p = MediaPolicy {
            total_timeout: Duration::from_millis(400),
            ..policy(&["127.0.0.1"])
        };
        for path in ["/slow", "/silent"] {
            let started = std::time::Instant::now();
            let e = load(&format!("http://127.0.0.1:{}{path}", server.port()), &p)
                .await
                .unwrap_err();
            assert!(matches!(e, FetchError::Timeout(_)), "{path}: {e:?}");
            assert_eq!(e.to_string(), "fetching timed out after 400 ms");
            assert!(started.elapsed() < Duration::from_secs(3));
        }
    }

    #[tokio::test]
    async fn connect_timeout() {
        // A listener that never accepts, with its accept queue filled: Linux then drops further
        // SYNs, so a connect attempt hangs like one to a firewalled host.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        let mut saturated = false;
        for _ in 0..16 {
            match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => fillers.push(s),
                _ => {
                    saturated = true;
                    break;
                }
            }
        }
        if !saturated {
            eprintln!("skipping connect_timeout: the kernel accepted every connection");
            return;
        }
        let p = MediaPolicy {
            connect_timeout: Duration::from_millis(300),
            total_timeout: Duration::from_secs(5),
            ..policy(&["127.0.0.1"])
        };
        let started = std::time::Instant::now();
        let e = load(&format!("http://127.0.0.1:{}/", addr.port()), &p)
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::ConnectTimeout { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "connecting to `127.0.0.1:{}` timed out after 300 ms",
                addr.port()
            )
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(fillers);
    }

    #[tokio::test]
    async fn connection_refused() {
        // Bind then drop, so nothing listens on the port.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = load(
            &format!("http://127.0.0.1:{port}/"),
            &policy(&["127.0.0.1"]),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                e,
                FetchError::Connect {
                    kind: ErrorKind::ConnectionRefused,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("could not connect to `127.0.0.1:{port}`: connection refused")
        );
    }

    #[tokio::test]
    async fn dropping_the_future_closes_the_connection() {
        let server = serve("127.0.0.1", |_| Reply::Hang).await;
        let p = policy(&["127.0.0.1"]);
        let url = format!("http://127.0.0.1:{}/", server.port());
        let cut = tokio::time::timeout(Duration::from_millis(300), load(&url, &p)).await;
        assert!(cut.is_err(), "the fetch should still have been waiting");
        assert_eq!(server.conns(), 1);
        for _ in 0..100 {
            if server.closed.load(SeqCst) == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the server never saw the connection close");
    }

    #[test]
    fn the_future_is_send() {
        fn assert_send<T: Send>(_: T) {}
        let p = MediaPolicy::default();
        assert_send(load("http://example.com/", &p));
    }

    #[tokio::test]
    async fn credentials_never_appear_in_errors() {
        let server = serve("127.0.0.1", |_| status("404 Not Found")).await;
        let port = server.port();
        let p = policy(&["127.0.0.1"]);
        for url in [
            "https://alice:s3cret@127.0.0.1/img.png".to_owned(),
            "http://alice:s3cret@[::1]:80/img.png".to_owned(),
            "http://s3cret@example.com/".to_owned(),
            "http://alice:s3cret@10.0.0.1/img.png?token=s3cret".to_owned(),
            format!("http://alice:s3cret@127.0.0.1:{port}/"),
        ] {
            let e = load(&url, &p).await.unwrap_err();
            assert!(matches!(e, FetchError::Credentials), "{url}: {e:?}");
            let text = format!("{e} {e:?}");
            assert!(
                !text.contains("s3cret") && !text.contains("alice"),
                "{text}"
            );
        }
        assert_eq!(server.conns(), 0);
        // Queries and paths stay out of errors too.
        for url in [
            "http://10.0.0.1/hidden-dir/a.png?sig=s3cret".to_owned(),
            format!("http://127.0.0.1:{port}/hidden-dir/a.png?sig=s3cret"),
        ] {
            let e = load(&url, &p).await.unwrap_err();
            let text = format!("{e} {e:?}");
            assert!(
                !text.contains("s3cret") && !text.contains("hidden-dir"),
                "{text}"
            );
        }
    }

    // ---- https ----------------------------------------------------------------------------

    fn tls_acceptor(names: &[&str]) -> (tokio_rustls::TlsAcceptor, CertificateDer<'static>) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let ck = rcgen::generate_simple_self_signed(names).unwrap();
        let cert = ck.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()),
        );
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        (tokio_rustls::TlsAcceptor::from(Arc::new(config)), cert)
    }

    async fn tls_server(names: &[&str]) -> (Server, CertificateDer<'static>) {
        let (acceptor, cert) = tls_acceptor(names);
        let server = try_serve("127.0.0.1", Some(acceptor), Arc::new(|_: &str| ok(PNG)))
            .await
            .unwrap();
        (server, cert)
    }

    #[tokio::test]
    async fn https_verifies_the_host_name() {
        let (server, cert) = tls_server(&["localhost"]).await;
        let url = format!("https://localhost:{}/img.png", server.port());
        let p = MediaPolicy {
            extra_roots: vec![cert.clone()],
            ..policy(&["localhost"])
        };
        assert_eq!(load(&url, &p).await.unwrap(), PNG);
        assert_eq!(server.sni.lock().unwrap().as_slice(), ["localhost"]);
        let head = server.requests.lock().unwrap()[0].to_ascii_lowercase();
        assert!(
            head.contains(&format!("host: localhost:{}\r\n", server.port())),
            "{head}"
        );

        // The certificate is for `localhost`, not for the address.
        let p_ip = MediaPolicy {
            extra_roots: vec![cert],
            ..policy(&["127.0.0.1"])
        };
        let e = load(
            &format!("https://127.0.0.1:{}/img.png", server.port()),
            &p_ip,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, FetchError::Tls { .. }), "{e:?}");

        // Without the extra root the self-signed certificate is not trusted.
        let e = load(&url, &policy(&["localhost"])).await.unwrap_err();
        assert!(matches!(e, FetchError::Tls { .. }), "{e:?}");
        assert!(e.to_string().starts_with(&format!(
            "the TLS connection to `localhost:{}` failed: ",
            server.port()
        )));
    }

    #[tokio::test]
    async fn https_refuses_a_certificate_for_another_name() {
        let (server, cert) = tls_server(&["other.example"]).await;
        let p = MediaPolicy {
            extra_roots: vec![cert],
            ..policy(&["localhost"])
        };
        let e = load(&format!("https://localhost:{}/img.png", server.port()), &p)
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Tls { .. }), "{e:?}");
        assert!(e.to_string().contains("not valid for name"), "{e}");
    }

    #[tokio::test]
    async fn https_to_an_ip_literal() {
        let (server, cert) = tls_server(&["127.0.0.1"]).await;
        let p = MediaPolicy {
            extra_roots: vec![cert],
            ..policy(&["127.0.0.1"])
        };
        let url = format!("https://127.0.0.1:{}/img.png", server.port());
        assert_eq!(load(&url, &p).await.unwrap(), PNG);
        // No SNI for an IP address.
        assert!(server.sni.lock().unwrap().is_empty());
    }
}
