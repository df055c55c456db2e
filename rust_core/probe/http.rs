//! The `uptime` (HTTP/HTTPS) probe: a new connection per request (what a monitor must
//! measure), timed phase by phase, redirects followed up to 10 hops, the body read up
//! to 1 MiB for content matching.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use url::{Host, Url};

use super::config::HttpSpec;
use super::net::{connect, Failure};
use super::tls::{expiry, handshake};
use super::{elapsed_us, ErrorKind, Outcome, ProbeContext, Timings};

pub const BODY_LIMIT: usize = 1 << 20;
pub const MAX_REDIRECTS: usize = 10;
const USER_AGENT: &str = concat!("tocsin/", env!("CARGO_PKG_VERSION"));

struct Hop {
    status: StatusCode,
    location: Option<String>,
    body: Bytes,
    address: String,
    cert: Option<(i64, i64)>,
}

fn add(total: &mut Timings, hop: Timings) {
    let sum = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    };
    total.dns_us = sum(total.dns_us, hop.dns_us);
    total.connect_us = sum(total.connect_us, hop.connect_us);
    total.tls_us = sum(total.tls_us, hop.tls_us);
    total.first_byte_us = sum(total.first_byte_us, hop.first_byte_us);
}

fn host_of(url: &Url) -> Option<String> {
    match url.host()? {
        Host::Domain(d) => Some(d.to_owned()),
        Host::Ipv4(ip) => Some(ip.to_string()),
        Host::Ipv6(ip) => Some(ip.to_string()),
    }
}

async fn request(
    url: &Url,
    method: &Method,
    body: Option<&(Bytes, &'static str)>,
    spec: &HttpSpec,
    ctx: &ProbeContext,
    deadline: Instant,
    timings: &mut Timings,
) -> Result<Hop, Failure> {
    let host = host_of(url).ok_or((ErrorKind::ProtocolError, format!("{url} has no host")))?;
    let port = url
        .port_or_known_default()
        .ok_or((ErrorKind::ProtocolError, format!("{url} has no port")))?;
    let (tcp, addr) = connect(&host, port, deadline, timings).await?;

    let mut req = Request::builder()
        .method(method.clone())
        .uri(match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        });
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let headers = req.headers_mut().expect("builder without errors so far");
    headers.insert(
        header::HOST,
        HeaderValue::from_str(&authority)
            .map_err(|_| (ErrorKind::ProtocolError, "bad host".to_owned()))?,
    );
    headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if let Some((_, content_type)) = body {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    if let Some(auth) = &spec.authorization {
        headers.insert(header::AUTHORIZATION, auth.clone());
    }
    for (name, value) in &spec.headers {
        headers.insert(name.clone(), value.clone());
    }
    let payload = body.map_or_else(Bytes::new, |(b, _)| b.clone());
    let req = req.body(Full::new(payload)).map_err(|e| {
        (
            ErrorKind::ProtocolError,
            format!("cannot build the request: {e}"),
        )
    })?;

    let (exchange, cert) = if url.scheme() == "https" {
        let start = Instant::now();
        let tls = handshake(ctx, spec.ssl_verify, &host, tcp, deadline).await?;
        timings.tls_us = Some(elapsed_us(start));
        let cert = expiry(&tls);
        (send(TokioIo::new(tls), req, timings).await?, cert)
    } else {
        (send(TokioIo::new(tcp), req, timings).await?, None)
    };
    let (status, location, body) = exchange;
    Ok(Hop {
        status,
        location,
        body,
        address: addr.to_string(),
        cert,
    })
}

async fn send<T>(
    io: TokioIo<T>,
    req: Request<Full<Bytes>>,
    timings: &mut Timings,
) -> Result<(StatusCode, Option<String>, Bytes), Failure>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let protocol = |e: hyper::Error| (ErrorKind::ProtocolError, format!("HTTP error: {e}"));
    let (mut sender, conn) = http1::handshake(io).await.map_err(protocol)?;
    let start = Instant::now();
    let exchange = async {
        let resp = sender.send_request(req).await.map_err(protocol)?;
        let first_byte_us = elapsed_us(start);
        let status = resp.status();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = resp.into_body();
        let mut buf = BytesMut::new();
        while buf.len() < BODY_LIMIT {
            match body.frame().await {
                None => break,
                Some(Err(e)) => return Err(protocol(e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let take = data.len().min(BODY_LIMIT - buf.len());
                        buf.extend_from_slice(&data[..take]);
                    }
                }
            }
        }
        Ok((first_byte_us, status, location, buf.freeze()))
    };
    // PERF: the connection is driven inside this task rather than a spawned one: one
    // task per probe, and nothing outlives the probe (a hung server's socket closes
    // when the probe times out and this future is dropped).
    tokio::pin!(conn, exchange);
    let done = tokio::select! {
        biased;
        done = &mut exchange => done,
        driven = &mut conn => match driven {
            // The connection finished (closed after the response): the exchange has
            // everything it needs buffered, or fails with what went wrong.
            Ok(()) => exchange.await,
            Err(e) => Err(protocol(e)),
        },
    };
    let (first_byte_us, status, location, body) = done?;
    timings.first_byte_us = Some(first_byte_us);
    Ok((status, location, body))
}

pub async fn probe(spec: &HttpSpec, ctx: &ProbeContext, deadline: Instant) -> Outcome {
    let start = Instant::now();
    let mut url = spec.url.clone();
    let mut method = spec.method.clone();
    let mut body = spec.body.clone();
    let mut timings = Timings::default();
    let mut redirects = 0usize;
    let hop = loop {
        let mut hop_timings = Timings::default();
        let result = request(
            &url,
            &method,
            body.as_ref(),
            spec,
            ctx,
            deadline,
            &mut hop_timings,
        )
        .await;
        add(&mut timings, hop_timings);
        let hop = match result {
            Ok(hop) => hop,
            Err((kind, msg)) => {
                return Outcome::down(kind, msg)
                    .with_timings(timings)
                    .detail("redirects", redirects)
            }
        };
        let follow = spec.follow_redirects && hop.status.is_redirection();
        let Some(location) = hop.location.as_deref().filter(|_| follow) else {
            break hop;
        };
        if redirects == MAX_REDIRECTS {
            return Outcome::down(
                ErrorKind::TooManyRedirects,
                format!("more than {MAX_REDIRECTS} redirects"),
            )
            .with_timings(timings)
            .detail("redirects", redirects);
        }
        let next = match url.join(location) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            _ => {
                return Outcome::down(
                    ErrorKind::ProtocolError,
                    format!("cannot follow redirect to {location:?}"),
                )
                .with_timings(timings)
            }
        };
        // As browsers do: 303, and 301/302 after a POST, continue with a body-less GET.
        let code = hop.status.as_u16();
        if code == 303 || (matches!(code, 301 | 302) && method == Method::POST) {
            method = Method::GET;
            body = None;
        }
        url = next;
        redirects += 1;
    };

    let code = hop.status.as_u16();
    let total_ms = start.elapsed().as_millis() as u64;
    let mut outcome = if !spec.expects(code) {
        Outcome::down(ErrorKind::HttpStatus, format!("unexpected status {code}"))
    } else if let Some(rule) = spec
        .content_match
        .as_ref()
        .filter(|rule| !rule.matches(&String::from_utf8_lossy(&hop.body)))
    {
        Outcome::down(ErrorKind::ContentMismatch, rule.describe())
    } else if spec.degraded_threshold_ms > 0 && total_ms > spec.degraded_threshold_ms {
        Outcome::degraded(
            ErrorKind::SlowResponse,
            format!(
                "answered in {total_ms} ms (threshold {} ms)",
                spec.degraded_threshold_ms
            ),
        )
    } else {
        Outcome::up()
    };
    outcome.status_code = code;
    outcome = outcome
        .with_timings(timings)
        .detail("address", hop.address)
        .detail("bytes_read", hop.body.len())
        .detail("redirects", redirects);
    if redirects > 0 {
        outcome = outcome.detail("final_url", url.to_string());
    }
    if let Some((not_after, days)) = hop.cert {
        outcome = outcome
            .detail("cert_expires_at", not_after)
            .detail("cert_days_left", days);
    }
    outcome
}
