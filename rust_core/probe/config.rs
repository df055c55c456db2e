//! Probe settings: parsed once, when a check is loaded, from the JSON the Python side
//! sends (field names are the API's), validated, and kept ready to run.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use bytes::Bytes;
use hickory_proto::rr::RecordType;
use hyper::header::{HeaderName, HeaderValue};
use hyper::Method;
use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use url::Url;

use crate::aggregate::{FailureRule, Policy};
use crate::result::SourceId;
use crate::schedule::ProbeKind;

/// A setting the probe cannot use; `field` is the API field at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Clone, Debug)]
pub enum ContentMatch {
    Contains { text: String, case_sensitive: bool },
    NotContains { text: String, case_sensitive: bool },
    Regex(Regex),
}

impl ContentMatch {
    /// Whether `body` satisfies the rule.
    pub fn matches(&self, body: &str) -> bool {
        fn contains(body: &str, text: &str, case_sensitive: bool) -> bool {
            if case_sensitive {
                body.contains(text)
            } else {
                body.to_lowercase().contains(&text.to_lowercase())
            }
        }
        match self {
            ContentMatch::Contains {
                text,
                case_sensitive,
            } => contains(body, text, *case_sensitive),
            ContentMatch::NotContains {
                text,
                case_sensitive,
            } => !contains(body, text, *case_sensitive),
            ContentMatch::Regex(re) => re.is_match(body),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ContentMatch::Contains { text, .. } => format!("body does not contain {text:?}"),
            ContentMatch::NotContains { text, .. } => format!("body contains {text:?}"),
            ContentMatch::Regex(re) => format!("body does not match /{}/", re.as_str()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct HttpSpec {
    pub url: Url,
    pub method: Method,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<(Bytes, &'static str)>,
    pub follow_redirects: bool,
    pub expected_status_codes: Vec<u16>,
    pub authorization: Option<HeaderValue>,
    pub ssl_verify: bool,
    pub content_match: Option<ContentMatch>,
    pub degraded_threshold_ms: u64,
}

impl HttpSpec {
    pub fn expects(&self, code: u16) -> bool {
        if self.expected_status_codes.is_empty() {
            (200..=399).contains(&code)
        } else {
            self.expected_status_codes.contains(&code)
        }
    }
}

#[derive(Clone, Debug)]
pub struct TcpSpec {
    pub host: String,
    pub port: u16,
    pub payload: Option<Bytes>,
    pub expect: Option<String>,
}

#[derive(Clone, Debug)]
pub struct UdpSpec {
    pub host: String,
    pub port: u16,
    pub payload: Bytes,
    pub expect: Option<String>,
}

#[derive(Clone, Debug)]
pub struct DnsSpec {
    pub name: String,
    pub record_type: RecordType,
    /// `None`: the system resolver's first nameserver.
    pub server: Option<SocketAddr>,
    pub expected_value: Option<String>,
    pub expected_ips: Vec<IpAddr>,
}

#[derive(Clone, Debug)]
pub struct IcmpSpec {
    pub host: String,
    pub count: u16,
}

#[derive(Clone, Debug)]
pub struct TlsSpec {
    pub host: String,
    pub port: u16,
    pub server_name: String,
    pub ssl_verify: bool,
    pub expiry_threshold_days: i64,
}

/// A native probe, ready to run.
#[derive(Clone, Debug)]
pub enum ProbeSpec {
    Http(HttpSpec),
    Tcp(TcpSpec),
    Udp(UdpSpec),
    Dns(DnsSpec),
    Icmp(IcmpSpec),
    Tls(TlsSpec),
}

impl ProbeSpec {
    /// Parse the settings of a native probe kind; `Ok(None)` for kinds that have none.
    pub fn parse(kind: ProbeKind, json: &str) -> Result<Option<ProbeSpec>, ConfigError> {
        let value: serde_json::Value = if json.trim().is_empty() {
            serde_json::Value::Object(serde_json::Map::new())
        } else {
            serde_json::from_str(json)
                .map_err(|e| ConfigError::new("config", format!("invalid JSON: {e}")))?
        };
        Ok(Some(match kind {
            ProbeKind::Python | ProbeKind::Noop | ProbeKind::Heartbeat => return Ok(None),
            ProbeKind::Http => ProbeSpec::Http(http(de(value)?)?),
            ProbeKind::Tcp => ProbeSpec::Tcp(tcp(de(value)?)?),
            ProbeKind::Udp => ProbeSpec::Udp(udp(de(value)?)?),
            ProbeKind::Dns => ProbeSpec::Dns(dns(de(value)?)?),
            ProbeKind::Icmp => ProbeSpec::Icmp(icmp(&de(value)?)?),
            ProbeKind::Tls => ProbeSpec::Tls(tls(de(value)?)?),
        }))
    }

    /// What the per-host concurrency cap counts by.
    pub fn host(&self) -> &str {
        match self {
            ProbeSpec::Http(s) => s.url.host_str().unwrap_or(""),
            ProbeSpec::Tcp(s) => &s.host,
            ProbeSpec::Udp(s) => &s.host,
            ProbeSpec::Dns(s) => &s.name,
            ProbeSpec::Icmp(s) => &s.host,
            ProbeSpec::Tls(s) => &s.host,
        }
    }
}

#[derive(Deserialize)]
struct PolicyRaw {
    #[serde(default)]
    alert_after_failures: Option<u16>,
    /// Window mode: DOWN when `alert_after_failures` of the last this-many runs failed.
    #[serde(default)]
    alert_window_runs: Option<u16>,
    #[serde(default)]
    critical_sources: Vec<SourceId>,
    /// Probed by agents or geo locations only: never dispatched here.
    #[serde(default)]
    remote: bool,
}

/// How a check's results become its verdict, from the same settings JSON (any kind).
/// Heartbeat checks never go stale: their silence is judged by their deadlines.
pub fn policy(kind: ProbeKind, interval_ms: u64, json: &str) -> Result<Policy, ConfigError> {
    let raw: PolicyRaw = if json.trim().is_empty() {
        PolicyRaw {
            alert_after_failures: None,
            alert_window_runs: None,
            critical_sources: Vec::new(),
            remote: false,
        }
    } else {
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| ConfigError::new("config", format!("invalid JSON: {e}")))?;
        de(value)?
    };
    let failures = raw.alert_after_failures.unwrap_or(1);
    let rule = match raw.alert_window_runs {
        Some(runs) if runs > 0 => FailureRule::Window { failures, runs },
        _ => FailureRule::Consecutive(failures),
    }
    .validate()
    .map_err(|e| ConfigError::new("alert_after_failures", e))?;
    Ok(Policy {
        interval_ms,
        rule,
        critical: raw.critical_sources,
        stale_after: if kind.is_periodic() { 3 } else { 0 },
        remote: raw.remote && kind.is_periodic(),
    })
}

fn de<T: for<'a> Deserialize<'a>>(value: serde_json::Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." {
            "config".to_owned()
        } else {
            field
        };
        ConfigError {
            field,
            message: e.into_inner().to_string(),
        }
    })
}

fn default_true() -> bool {
    true
}

fn default_get() -> String {
    "GET".into()
}

fn default_none() -> String {
    "none".into()
}

fn default_contains() -> String {
    "contains".into()
}

#[derive(Deserialize)]
struct HttpRaw {
    #[serde(default)]
    url: String,
    #[serde(default = "default_get")]
    http_method: String,
    #[serde(default)]
    http_headers: BTreeMap<String, String>,
    #[serde(default)]
    http_body: String,
    #[serde(default = "default_none")]
    http_body_type: String,
    #[serde(default = "default_true")]
    http_follow_redirects: bool,
    #[serde(default)]
    expected_status_codes: Vec<u16>,
    #[serde(default = "default_none")]
    auth_method: String,
    #[serde(default)]
    auth_username: String,
    #[serde(default)]
    auth_password: String,
    #[serde(default)]
    auth_bearer_token: String,
    #[serde(default = "default_true")]
    ssl_verify: bool,
    #[serde(default)]
    content_match_enabled: bool,
    #[serde(default)]
    content_match_text: String,
    #[serde(default = "default_contains")]
    content_match_type: String,
    #[serde(default = "default_true")]
    content_match_case_sensitive: bool,
    #[serde(default)]
    degraded_threshold_ms: u64,
}

fn http(raw: HttpRaw) -> Result<HttpSpec, ConfigError> {
    let url = Url::parse(&raw.url).map_err(|e| ConfigError::new("url", e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::new(
            "url",
            "must be an absolute http:// or https:// URL",
        ));
    }
    let method = Method::from_bytes(raw.http_method.trim().to_uppercase().as_bytes())
        .map_err(|_| ConfigError::new("http_method", "not an HTTP method"))?;
    let mut headers = Vec::with_capacity(raw.http_headers.len());
    for (name, value) in &raw.http_headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConfigError::new("http_headers", format!("bad header name {name:?}")))?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            ConfigError::new("http_headers", format!("bad value for header {name}"))
        })?;
        headers.push((name, value));
    }
    let body = match raw.http_body_type.as_str() {
        "none" | "" => None,
        "json" => {
            if !raw.http_body.trim().is_empty() {
                serde_json::from_str::<serde_json::Value>(&raw.http_body).map_err(|e| {
                    ConfigError::new("http_body", format!("body type is json but: {e}"))
                })?;
            }
            Some((Bytes::from(raw.http_body), "application/json"))
        }
        "form" => Some((
            Bytes::from(raw.http_body),
            "application/x-www-form-urlencoded",
        )),
        "raw" => Some((Bytes::from(raw.http_body), "text/plain; charset=utf-8")),
        other => {
            return Err(ConfigError::new(
                "http_body_type",
                format!("must be none, json, form or raw, not {other:?}"),
            ))
        }
    };
    if let Some(bad) = raw
        .expected_status_codes
        .iter()
        .find(|c| !(100..=599).contains(*c))
    {
        return Err(ConfigError::new(
            "expected_status_codes",
            format!("{bad} is not an HTTP status code"),
        ));
    }
    let authorization = match raw.auth_method.as_str() {
        "none" | "" => None,
        "basic" => {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", raw.auth_username, raw.auth_password));
            Some(header(&format!("Basic {token}"), "auth_username")?)
        }
        "bearer" => {
            if raw.auth_bearer_token.is_empty() {
                return Err(ConfigError::new(
                    "auth_bearer_token",
                    "required for bearer auth",
                ));
            }
            Some(header(
                &format!("Bearer {}", raw.auth_bearer_token),
                "auth_bearer_token",
            )?)
        }
        other => {
            return Err(ConfigError::new(
                "auth_method",
                format!("must be none, basic or bearer, not {other:?}"),
            ))
        }
    };
    let content_match = if raw.content_match_enabled {
        let text = raw.content_match_text;
        let case_sensitive = raw.content_match_case_sensitive;
        Some(match raw.content_match_type.as_str() {
            "contains" => ContentMatch::Contains {
                text,
                case_sensitive,
            },
            "not_contains" => ContentMatch::NotContains {
                text,
                case_sensitive,
            },
            "regex" => ContentMatch::Regex(
                RegexBuilder::new(&text)
                    .case_insensitive(!case_sensitive)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| ConfigError::new("content_match_text", e.to_string()))?,
            ),
            other => {
                return Err(ConfigError::new(
                    "content_match_type",
                    format!("must be contains, not_contains or regex, not {other:?}"),
                ))
            }
        })
    } else {
        None
    };
    Ok(HttpSpec {
        url,
        method,
        headers,
        body,
        follow_redirects: raw.http_follow_redirects,
        expected_status_codes: raw.expected_status_codes,
        authorization,
        ssl_verify: raw.ssl_verify,
        content_match,
        degraded_threshold_ms: raw.degraded_threshold_ms,
    })
}

fn header(value: &str, field: &str) -> Result<HeaderValue, ConfigError> {
    HeaderValue::from_str(value).map_err(|_| ConfigError::new(field, "not valid in a header"))
}

fn host(host: &str) -> Result<String, ConfigError> {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(ConfigError::new("host", "required"));
    }
    if host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(ConfigError::new(
            "host",
            "must be a host name or an IP address",
        ));
    }
    Ok(host.to_owned())
}

fn port(port: Option<u16>) -> Result<u16, ConfigError> {
    match port {
        Some(p) if p > 0 => Ok(p),
        _ => Err(ConfigError::new("port", "required, 1-65535")),
    }
}

fn opt_text(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[derive(Deserialize)]
struct NetRaw {
    #[serde(default)]
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    payload: String,
    #[serde(default)]
    expected_response: String,
}

fn tcp(raw: NetRaw) -> Result<TcpSpec, ConfigError> {
    Ok(TcpSpec {
        host: host(&raw.host)?,
        port: port(raw.port)?,
        payload: opt_text(raw.payload).map(Bytes::from),
        expect: opt_text(raw.expected_response),
    })
}

fn udp(raw: NetRaw) -> Result<UdpSpec, ConfigError> {
    Ok(UdpSpec {
        host: host(&raw.host)?,
        port: port(raw.port)?,
        payload: Bytes::from(raw.payload),
        expect: opt_text(raw.expected_response),
    })
}

#[derive(Deserialize)]
struct DnsRaw {
    #[serde(default)]
    host: String,
    #[serde(default)]
    dns_server: String,
    #[serde(default)]
    dns_record_type: String,
    #[serde(default)]
    dns_expected_value: String,
    #[serde(default)]
    dns_expected_ips: Vec<String>,
}

const DNS_TYPES: [(&str, RecordType); 9] = [
    ("A", RecordType::A),
    ("AAAA", RecordType::AAAA),
    ("CNAME", RecordType::CNAME),
    ("MX", RecordType::MX),
    ("NS", RecordType::NS),
    ("TXT", RecordType::TXT),
    ("SOA", RecordType::SOA),
    ("SRV", RecordType::SRV),
    ("CAA", RecordType::CAA),
];

fn dns(raw: DnsRaw) -> Result<DnsSpec, ConfigError> {
    let name = host(&raw.host)?;
    let wanted = if raw.dns_record_type.is_empty() {
        "A".to_owned()
    } else {
        raw.dns_record_type.to_uppercase()
    };
    let record_type = DNS_TYPES
        .iter()
        .find(|(n, _)| *n == wanted)
        .map(|&(_, t)| t)
        .ok_or_else(|| {
            ConfigError::new(
                "dns_record_type",
                "must be one of A, AAAA, CNAME, MX, NS, TXT, SOA, SRV, CAA",
            )
        })?;
    let server = if raw.dns_server.trim().is_empty() {
        None
    } else {
        Some(parse_server(raw.dns_server.trim())?)
    };
    let expected_ips = raw
        .dns_expected_ips
        .iter()
        .map(|ip| {
            ip.trim()
                .parse::<IpAddr>()
                .map_err(|_| ConfigError::new("dns_expected_ips", format!("{ip:?} is not an IP")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DnsSpec {
        name,
        record_type,
        server,
        expected_value: opt_text(raw.dns_expected_value),
        expected_ips,
    })
}

fn parse_server(s: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| ConfigError::new("dns_server", "must be an IP address, optionally with :port"))
}

#[derive(Deserialize)]
struct IcmpRaw {
    #[serde(default)]
    host: String,
    #[serde(default)]
    ping_count: Option<u16>,
}

fn icmp(raw: &IcmpRaw) -> Result<IcmpSpec, ConfigError> {
    let count = raw.ping_count.unwrap_or(3);
    if !(1..=100).contains(&count) {
        return Err(ConfigError::new("ping_count", "must be 1-100"));
    }
    Ok(IcmpSpec {
        host: host(&raw.host)?,
        count,
    })
}

fn default_tls_threshold() -> i64 {
    14
}

#[derive(Deserialize)]
struct TlsRaw {
    #[serde(default)]
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    tls_server_name: String,
    #[serde(default = "default_true")]
    ssl_verify: bool,
    #[serde(default = "default_tls_threshold")]
    tls_expiry_threshold_days: i64,
}

fn tls(raw: TlsRaw) -> Result<TlsSpec, ConfigError> {
    let host = host(&raw.host)?;
    if !(0..=3650).contains(&raw.tls_expiry_threshold_days) {
        return Err(ConfigError::new(
            "tls_expiry_threshold_days",
            "must be 0-3650",
        ));
    }
    Ok(TlsSpec {
        server_name: opt_text(raw.tls_server_name).unwrap_or_else(|| host.clone()),
        host,
        port: raw.port.unwrap_or(443),
        ssl_verify: raw.ssl_verify,
        expiry_threshold_days: raw.tls_expiry_threshold_days,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kind: ProbeKind, json: &str) -> Result<ProbeSpec, ConfigError> {
        ProbeSpec::parse(kind, json).map(Option::unwrap)
    }

    #[test]
    fn http_defaults_and_expected_codes() {
        let ProbeSpec::Http(s) =
            parse(ProbeKind::Http, r#"{"url": "http://x.test/a?b=1"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(s.method, Method::GET);
        assert!(s.follow_redirects && s.ssl_verify && s.body.is_none());
        assert!(s.expects(200) && s.expects(399) && !s.expects(400) && !s.expects(199));
        let ProbeSpec::Http(s) = parse(
            ProbeKind::Http,
            r#"{"url": "https://x.test/", "expected_status_codes": [503], "http_method": "post",
                "http_body": "{\"a\": 1}", "http_body_type": "json", "auth_method": "basic",
                "auth_username": "u", "auth_password": "p", "unknown_field": 1}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert!(s.expects(503) && !s.expects(200));
        assert_eq!(s.method, Method::POST);
        assert_eq!(s.body.unwrap().1, "application/json");
        assert_eq!(s.authorization.unwrap(), "Basic dTpw");
    }

    #[test]
    fn errors_name_the_field() {
        let field = |kind, json| parse(kind, json).unwrap_err().field;
        assert_eq!(field(ProbeKind::Http, r#"{"url": "ftp://x"}"#), "url");
        assert_eq!(field(ProbeKind::Http, r#"{"url": "nope"}"#), "url");
        assert_eq!(
            field(
                ProbeKind::Http,
                r#"{"url": "http://x", "http_body_type": "xml"}"#
            ),
            "http_body_type"
        );
        assert_eq!(
            field(
                ProbeKind::Http,
                r#"{"url": "http://x", "content_match_enabled": true, "content_match_type": "regex", "content_match_text": "("}"#
            ),
            "content_match_text"
        );
        assert_eq!(field(ProbeKind::Tcp, r#"{"host": "a"}"#), "port");
        assert_eq!(
            field(ProbeKind::Tcp, r#"{"host": "a", "port": 70000}"#),
            "port"
        );
        assert_eq!(field(ProbeKind::Udp, r#"{"port": 53}"#), "host");
        assert_eq!(
            field(
                ProbeKind::Dns,
                r#"{"host": "a", "dns_record_type": "PTRX"}"#
            ),
            "dns_record_type"
        );
        assert_eq!(
            field(ProbeKind::Dns, r#"{"host": "a", "dns_server": "x"}"#),
            "dns_server"
        );
        assert_eq!(
            field(ProbeKind::Icmp, r#"{"host": "a", "ping_count": 0}"#),
            "ping_count"
        );
        assert_eq!(field(ProbeKind::Tls, "not json"), "config");
    }

    #[test]
    fn policies_from_settings() {
        let p = policy(ProbeKind::Http, 5_000, "").unwrap();
        assert_eq!(p.rule, FailureRule::Consecutive(1));
        let p = policy(
            ProbeKind::Http,
            5_000,
            r#"{"alert_after_failures": 3, "critical_sources": [0, 7]}"#,
        )
        .unwrap();
        assert_eq!(
            (p.rule, p.critical, p.interval_ms),
            (FailureRule::Consecutive(3), vec![0, 7], 5_000)
        );
        let p = policy(
            ProbeKind::Http,
            1,
            r#"{"alert_after_failures": 2, "alert_window_runs": 5}"#,
        )
        .unwrap();
        assert_eq!(
            p.rule,
            FailureRule::Window {
                failures: 2,
                runs: 5
            }
        );
        assert_eq!(
            policy(ProbeKind::Http, 1, r#"{"alert_after_failures": 0}"#)
                .unwrap_err()
                .field,
            "alert_after_failures"
        );
        assert_eq!(
            policy(
                ProbeKind::Http,
                1,
                r#"{"alert_after_failures": 9, "alert_window_runs": 5}"#
            )
            .unwrap_err()
            .field,
            "alert_after_failures"
        );
    }

    #[test]
    fn content_match_modes() {
        let contains = ContentMatch::Contains {
            text: "Hello".into(),
            case_sensitive: false,
        };
        assert!(contains.matches("oh hello there"));
        let strict = ContentMatch::Contains {
            text: "Hello".into(),
            case_sensitive: true,
        };
        assert!(!strict.matches("oh hello there"));
        let not = ContentMatch::NotContains {
            text: "error".into(),
            case_sensitive: true,
        };
        assert!(not.matches("all fine") && !not.matches("an error"));
        let re = ContentMatch::Regex(RegexBuilder::new(r"v\d+\.\d+").build().unwrap());
        assert!(re.matches("running v1.2") && !re.matches("running"));
    }

    #[test]
    fn dns_server_with_and_without_port() {
        let ProbeSpec::Dns(s) = parse(
            ProbeKind::Dns,
            r#"{"host": "example.test", "dns_server": "127.0.0.1:5353", "dns_record_type": "mx"}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(s.server, Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(s.record_type, RecordType::MX);
        let ProbeSpec::Dns(s) =
            parse(ProbeKind::Dns, r#"{"host": "e.test", "dns_server": "::1"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(s.server, Some("[::1]:53".parse().unwrap()));
        assert_eq!(s.record_type, RecordType::A);
    }
}
