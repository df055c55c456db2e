//! The `icmp` probe: `ping_count` echo requests; loss and min/avg/max round trip.
//! Uses an unprivileged ICMP socket where the kernel allows it (`ping_group_range`), a raw
//! socket otherwise (root or `CAP_NET_RAW`), and says which permission is missing when
//! neither is available.

use std::io::ErrorKind as IoKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::config::IcmpSpec;
use super::net::resolve;
use super::{remaining, ErrorKind, Outcome, Timings};

const PER_PING: Duration = Duration::from_secs(1);
const PAYLOAD: &[u8] = b"tocsin-ping-0123456789abcdef";

static NEXT_ID: AtomicU16 = AtomicU16::new(0x7c00);

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut packet = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(PAYLOAD);
    if !v6 {
        // ICMPv6 checksums cover a pseudo-header and are filled in by the kernel.
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

/// `(socket, raw)`: an unprivileged ping socket if allowed, else a raw one.
fn open(v6: bool) -> Result<(Socket, bool), (ErrorKind, String)> {
    let (domain, proto) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    let unprivileged = Socket::new(domain, Type::DGRAM, Some(proto));
    let (socket, raw) = match unprivileged {
        Ok(s) => (s, false),
        Err(_) => match Socket::new(domain, Type::RAW, Some(proto)) {
            Ok(s) => (s, true),
            Err(e)
                if matches!(e.kind(), IoKind::PermissionDenied)
                    || e.raw_os_error() == Some(libc::EPERM) =>
            {
                return Err((
                    ErrorKind::PermissionDenied,
                    "ICMP needs an unprivileged ping socket (add this process's group to the \
                     sysctl net.ipv4.ping_group_range) or a raw socket (run as root or grant \
                     CAP_NET_RAW)"
                        .to_owned(),
                ))
            }
            Err(e) => {
                return Err((
                    ErrorKind::ConnectError,
                    format!("cannot open an ICMP socket: {e}"),
                ))
            }
        },
    };
    socket
        .set_nonblocking(true)
        .map_err(|e| (ErrorKind::ConnectError, e.to_string()))?;
    Ok((socket, raw))
}

/// The echo reply's sequence number if `packet` is a reply to us.
fn reply_seq(packet: &[u8], v6: bool, raw: bool, id: u16) -> Option<u16> {
    let icmp = if raw && !v6 {
        let ihl = usize::from(packet.first()? & 0x0f) * 4;
        packet.get(ihl..)?
    } else {
        packet
    };
    let reply_type = if v6 { 129 } else { 0 };
    if icmp.len() < 8 || icmp[0] != reply_type {
        return None;
    }
    // Unprivileged sockets get their identifier rewritten by the kernel, which also
    // delivers only this socket's replies; raw sockets see every reply on the host.
    if raw && u16::from_be_bytes([icmp[4], icmp[5]]) != id {
        return None;
    }
    Some(u16::from_be_bytes([icmp[6], icmp[7]]))
}

pub async fn probe(spec: &IcmpSpec, deadline: Instant) -> Outcome {
    let mut timings = Timings::default();
    let addr = match resolve(&spec.host, 0, deadline, &mut timings).await {
        Ok(a) => a,
        Err((kind, msg)) => return Outcome::down(kind, msg).with_timings(timings),
    };
    let v6 = matches!(addr.ip(), IpAddr::V6(_));
    let (socket, raw) = match open(v6) {
        Ok(s) => s,
        Err((kind, msg)) => return Outcome::down(kind, msg).with_timings(timings),
    };
    let socket = match UdpSocket::from_std(std::net::UdpSocket::from(socket)) {
        Ok(s) => s,
        Err(e) => return Outcome::down(ErrorKind::ConnectError, e.to_string()),
    };
    let target = SocketAddr::new(addr.ip(), 0);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut rtts: Vec<f64> = Vec::with_capacity(usize::from(spec.count));
    let mut buf = vec![0u8; 2048];
    for seq in 0..spec.count {
        if remaining(deadline).is_zero() {
            break;
        }
        let sent = Instant::now();
        if let Err(e) = socket.send_to(&echo_request(v6, id, seq), target).await {
            return Outcome::down(ErrorKind::ConnectError, format!("sending to {addr}: {e}"))
                .with_timings(timings);
        }
        let wait_until = (sent + PER_PING).min(deadline);
        loop {
            let left = wait_until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, socket.recv_from(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    return Outcome::down(ErrorKind::ConnectError, format!("receiving: {e}"))
                        .with_timings(timings)
                }
                Ok(Ok((n, _))) => {
                    if reply_seq(&buf[..n], v6, raw, id) == Some(seq) {
                        rtts.push(sent.elapsed().as_secs_f64() * 1e3);
                        break;
                    }
                }
            }
        }
    }
    let sent = usize::from(spec.count);
    let lost = sent - rtts.len();
    let loss_pct = lost as f64 * 100.0 / sent as f64;
    let mut outcome = if rtts.is_empty() {
        Outcome::down(
            ErrorKind::Timeout,
            format!("no echo reply from {} ({sent} sent)", addr.ip()),
        )
    } else if lost > 0 {
        Outcome::degraded(
            ErrorKind::PacketLoss,
            format!("{lost} of {sent} echo requests lost"),
        )
    } else {
        Outcome::up()
    };
    outcome = outcome
        .with_timings(timings)
        .detail("address", addr.ip().to_string())
        .detail("sent", sent)
        .detail("received", rtts.len())
        .detail("loss_pct", loss_pct)
        .detail("socket", if raw { "raw" } else { "unprivileged" });
    if !rtts.is_empty() {
        let min = rtts.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rtts.iter().copied().fold(0.0, f64::max);
        let avg = rtts.iter().sum::<f64>() / rtts.len() as f64;
        outcome.latency_us = Some((avg * 1e3) as u64);
        outcome = outcome
            .detail("rtt_min_ms", min)
            .detail("rtt_avg_ms", avg)
            .detail("rtt_max_ms", max);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_echo_request() {
        // type 8, code 0, id 1, seq 1, no payload: checksum is 0xf7fd.
        let packet = [8u8, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(checksum(&packet), 0xf7fd);
        let full = echo_request(false, 1, 1);
        assert_eq!(
            checksum(&full),
            0,
            "a packet with its checksum sums to zero"
        );
    }

    #[test]
    fn replies_are_matched_by_id_on_raw_sockets_only() {
        let mut reply = vec![0u8, 0, 0, 0, 0x12, 0x34, 0, 7];
        assert_eq!(reply_seq(&reply, false, false, 0x9999), Some(7));
        assert_eq!(reply_seq(&reply, false, true, 0x9999), None);
        let mut ip = vec![0x45u8; 1];
        ip.extend_from_slice(&[0; 19]);
        ip.append(&mut reply);
        assert_eq!(reply_seq(&ip, false, true, 0x1234), Some(7));
        assert_eq!(reply_seq(&[8, 0, 0, 0, 0, 0, 0, 1], false, false, 0), None);
    }
}
