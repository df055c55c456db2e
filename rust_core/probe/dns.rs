//! The `dns` probe: one query to a chosen server (or the system's first nameserver) over
//! UDP, retried over TCP when the answer is truncated, compared with the expectation.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::config::DnsSpec;
use super::{elapsed_us, remaining, ErrorKind, Outcome, Timings};

/// The first `nameserver` of /etc/resolv.conf, else the local resolver.
fn system_server() -> SocketAddr {
    std::fs::read_to_string("/etc/resolv.conf")
        .ok()
        .and_then(|conf| {
            conf.lines().find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some("nameserver"))
                    .then(|| words.next()?.parse::<IpAddr>().ok())
                    .flatten()
            })
        })
        .map_or_else(|| ([127, 0, 0, 1], 53).into(), |ip| SocketAddr::new(ip, 53))
}

/// The RFC mnemonic (`NXDOMAIN`, `SERVFAIL`…): stable and what operators search for.
fn rcode_name(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NoError => "NOERROR".to_owned(),
        ResponseCode::FormErr => "FORMERR".to_owned(),
        ResponseCode::ServFail => "SERVFAIL".to_owned(),
        ResponseCode::NXDomain => "NXDOMAIN".to_owned(),
        ResponseCode::NotImp => "NOTIMP".to_owned(),
        ResponseCode::Refused => "REFUSED".to_owned(),
        other => format!("RCODE{}", u16::from(other)),
    }
}

fn normalise(s: &str) -> String {
    s.trim().trim_end_matches('.').to_lowercase()
}

/// An answer as text: addresses plainly, names without the root dot, TXT as its text.
fn answer_text(data: &RData) -> String {
    match data {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::CNAME(n) => n.0.to_utf8().trim_end_matches('.').to_owned(),
        RData::NS(n) => n.0.to_utf8().trim_end_matches('.').to_owned(),
        RData::TXT(t) => t
            .txt_data()
            .iter()
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect(),
        other => other.to_string(),
    }
}

async fn exchange(
    server: SocketAddr,
    query: &[u8],
    deadline: Instant,
) -> std::io::Result<(Vec<u8>, bool)> {
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(remaining(deadline), socket.recv(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
    buf.truncate(n);
    let truncated = Message::from_vec(&buf).is_ok_and(|m| m.truncated());
    if !truncated {
        return Ok((buf, false));
    }
    // Truncated over UDP: ask again over TCP (RFC 7766), length-prefixed.
    let mut tcp = TcpStream::connect(server).await?;
    let len = u16::try_from(query.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    tcp.write_all(&len.to_be_bytes()).await?;
    tcp.write_all(query).await?;
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len).await?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    tcp.read_exact(&mut answer).await?;
    Ok((answer, true))
}

pub async fn probe(spec: &DnsSpec, deadline: Instant) -> Outcome {
    let server = spec.server.unwrap_or_else(system_server);
    let name = match Name::from_utf8(&spec.name) {
        Ok(mut n) => {
            n.set_fqdn(true);
            n
        }
        Err(e) => {
            return Outcome::down(
                ErrorKind::DnsError,
                format!("bad name {:?}: {e}", spec.name),
            )
        }
    };
    let id =
        (std::process::id() as u16) ^ (Instant::now().elapsed().subsec_nanos() as u16) ^ 0x5a5a;
    let mut query = Message::new();
    query
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name, spec.record_type));
    let bytes = match query.to_vec() {
        Ok(b) => b,
        Err(e) => {
            return Outcome::down(ErrorKind::DnsError, format!("cannot encode the query: {e}"))
        }
    };
    let start = Instant::now();
    let (raw, over_tcp) = match exchange(server, &bytes, deadline).await {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            return Outcome::down(ErrorKind::Timeout, format!("no answer from {server}"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Outcome::down(
                ErrorKind::ConnectRefused,
                format!("{server} refused the query"),
            )
        }
        Err(e) => return Outcome::down(ErrorKind::DnsError, format!("querying {server}: {e}")),
    };
    let timings = Timings {
        dns_us: Some(elapsed_us(start)),
        ..Timings::default()
    };
    let answer = match Message::from_vec(&raw) {
        Ok(m) if m.id() == id => m,
        Ok(_) => {
            return Outcome::down(ErrorKind::ProtocolError, "answer for another query")
                .with_timings(timings)
        }
        Err(e) => {
            return Outcome::down(ErrorKind::ProtocolError, format!("malformed answer: {e}"))
                .with_timings(timings)
        }
    };
    let rcode = answer.response_code();
    let answers: Vec<String> = answer
        .answers()
        .iter()
        .filter(|r| r.record_type() == spec.record_type)
        .map(|r| answer_text(r.data()))
        .collect();
    let base = |o: Outcome| {
        o.with_timings(timings)
            .detail("server", server.to_string())
            .detail("rcode", rcode_name(rcode))
            .detail("answers", answers.clone())
            .detail("tcp_fallback", over_tcp)
    };
    if rcode != ResponseCode::NoError {
        return base(Outcome::down(
            ErrorKind::DnsError,
            format!("{} {}: {}", spec.record_type, spec.name, rcode_name(rcode)),
        ));
    }
    if answers.is_empty() {
        return base(Outcome::down(
            ErrorKind::DnsError,
            format!("no {} record for {}", spec.record_type, spec.name),
        ));
    }
    let missing: Vec<String> = spec
        .expected_ips
        .iter()
        .filter(|ip| {
            !answers
                .iter()
                .any(|a| a.parse::<IpAddr>().ok() == Some(**ip))
        })
        .map(ToString::to_string)
        .collect();
    if !missing.is_empty() {
        return base(Outcome::down(
            ErrorKind::ContentMismatch,
            format!(
                "expected addresses missing from the answer: {}",
                missing.join(", ")
            ),
        ));
    }
    if let Some(expected) = &spec.expected_value {
        let want = normalise(expected);
        let found = answers.iter().any(|a| {
            let a = normalise(a);
            a == want || (spec.record_type == RecordType::TXT && a.contains(&want))
        });
        if !found {
            return base(Outcome::down(
                ErrorKind::ContentMismatch,
                format!("no answer matches {expected:?}"),
            ));
        }
    }
    base(Outcome::up())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_compared_without_case_or_root_dot() {
        assert_eq!(normalise(" Mail.Example.TEST. "), "mail.example.test");
    }

    #[test]
    fn answers_read_as_text() {
        use hickory_proto::rr::rdata::{A, MX, TXT};
        assert_eq!(answer_text(&RData::A(A::new(10, 0, 0, 1))), "10.0.0.1");
        assert_eq!(
            answer_text(&RData::TXT(TXT::new(vec!["v=spf1".into(), " -all".into()]))),
            "v=spf1 -all"
        );
        let mx = MX::new(10, Name::from_ascii("mail.example.test.").unwrap());
        assert_eq!(answer_text(&RData::MX(mx)), "10 mail.example.test.");
    }
}
