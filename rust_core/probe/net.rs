//! Name resolution and TCP connects shared by the probes (timed and classified), and
//! the `tcp` and `udp` probes.

use std::io::ErrorKind as IoKind;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::config::{TcpSpec, UdpSpec};
use super::{elapsed_us, remaining, ErrorKind, Outcome, Timings};

const READ_CAP: usize = 64 * 1024;

pub type Failure = (ErrorKind, String);

/// Resolve `host` (skipped for IP literals), recording the DNS time.
pub async fn resolve(
    host: &str,
    port: u16,
    deadline: Instant,
    timings: &mut Timings,
) -> Result<SocketAddr, Failure> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let start = Instant::now();
    let found = tokio::time::timeout(remaining(deadline), tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| (ErrorKind::DnsError, format!("resolving {host} timed out")))?;
    timings.dns_us = Some(elapsed_us(start));
    let mut addrs =
        found.map_err(|e| (ErrorKind::DnsError, format!("cannot resolve {host}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| (ErrorKind::DnsError, format!("{host} has no address")))
}

/// Resolve and open a new TCP connection, recording DNS and connect times.
pub async fn connect(
    host: &str,
    port: u16,
    deadline: Instant,
    timings: &mut Timings,
) -> Result<(TcpStream, SocketAddr), Failure> {
    let addr = resolve(host, port, deadline, timings).await?;
    let start = Instant::now();
    let stream = match tokio::time::timeout(remaining(deadline), TcpStream::connect(addr)).await {
        Err(_) => {
            return Err((
                ErrorKind::ConnectTimeout,
                format!("connecting to {addr} timed out"),
            ))
        }
        Ok(Err(e)) if e.kind() == IoKind::ConnectionRefused => {
            return Err((
                ErrorKind::ConnectRefused,
                format!("connection to {addr} refused"),
            ))
        }
        Ok(Err(e)) => {
            return Err((
                ErrorKind::ConnectError,
                format!("cannot connect to {addr}: {e}"),
            ))
        }
        Ok(Ok(s)) => s,
    };
    timings.connect_us = Some(elapsed_us(start));
    let _ = stream.set_nodelay(true);
    Ok((stream, addr))
}

fn lossy_contains(haystack: &[u8], needle: &str) -> bool {
    String::from_utf8_lossy(haystack).contains(needle)
}

pub async fn tcp_probe(spec: &TcpSpec, deadline: Instant) -> Outcome {
    let mut timings = Timings::default();
    let (mut stream, addr) = match connect(&spec.host, spec.port, deadline, &mut timings).await {
        Ok(ok) => ok,
        Err((kind, msg)) => return Outcome::down(kind, msg).with_timings(timings),
    };
    let start = Instant::now();
    if let Some(payload) = &spec.payload {
        if let Err(e) = stream.write_all(payload).await {
            return Outcome::down(ErrorKind::ProtocolError, format!("sending failed: {e}"))
                .with_timings(timings);
        }
    }
    let mut read = 0usize;
    if let Some(expect) = &spec.expect {
        let mut buf = Vec::with_capacity(4096);
        loop {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(remaining(deadline), stream.read(&mut chunk)).await {
                Err(_) if buf.is_empty() => {
                    return Outcome::down(ErrorKind::Timeout, "no data received in time")
                        .with_timings(timings)
                        .detail("bytes_read", 0)
                }
                Ok(Err(e)) => {
                    return Outcome::down(ErrorKind::ProtocolError, format!("reading failed: {e}"))
                        .with_timings(timings)
                }
                // Out of time with some data, or the peer closed: judge what arrived.
                Err(_) | Ok(Ok(0)) => break,
                Ok(Ok(n)) => {
                    if buf.is_empty() {
                        timings.first_byte_us = Some(elapsed_us(start));
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if lossy_contains(&buf, expect) || buf.len() >= READ_CAP {
                        break;
                    }
                }
            }
        }
        read = buf.len();
        if !lossy_contains(&buf, expect) {
            return Outcome::down(
                ErrorKind::ContentMismatch,
                format!("the response does not contain {expect:?}"),
            )
            .with_timings(timings)
            .detail("bytes_read", read);
        }
    }
    Outcome::up()
        .with_timings(timings)
        .detail("address", addr.to_string())
        .detail("bytes_read", read)
}

pub async fn udp_probe(spec: &UdpSpec, deadline: Instant) -> Outcome {
    let mut timings = Timings::default();
    let addr = match super::net::resolve(&spec.host, spec.port, deadline, &mut timings).await {
        Ok(a) => a,
        Err((kind, msg)) => return Outcome::down(kind, msg).with_timings(timings),
    };
    let local: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let result = async {
        let socket = UdpSocket::bind(local).await?;
        socket.connect(addr).await?;
        socket.send(&spec.payload).await?;
        let mut buf = vec![0u8; READ_CAP];
        let n = socket.recv(&mut buf).await?;
        buf.truncate(n);
        Ok::<_, std::io::Error>(buf)
    };
    let start = Instant::now();
    let reply = match tokio::time::timeout(remaining(deadline), result).await {
        Err(_) => {
            return Outcome::down(ErrorKind::Timeout, format!("no reply from {addr}"))
                .with_timings(timings)
        }
        Ok(Err(e)) if e.kind() == IoKind::ConnectionRefused => {
            return Outcome::down(
                ErrorKind::ConnectRefused,
                format!("{addr} answered port unreachable"),
            )
            .with_timings(timings)
        }
        Ok(Err(e)) => {
            return Outcome::down(ErrorKind::ConnectError, format!("UDP to {addr}: {e}"))
                .with_timings(timings)
        }
        Ok(Ok(reply)) => reply,
    };
    timings.first_byte_us = Some(elapsed_us(start));
    if let Some(expect) = &spec.expect {
        if !lossy_contains(&reply, expect) {
            return Outcome::down(
                ErrorKind::ContentMismatch,
                format!("the reply does not contain {expect:?}"),
            )
            .with_timings(timings)
            .detail("bytes_read", reply.len());
        }
    }
    Outcome::up()
        .with_timings(timings)
        .detail("address", addr.to_string())
        .detail("bytes_read", reply.len())
}
