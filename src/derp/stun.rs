//! A minimal STUN server (RFC 5389): answers Binding Requests with a Binding
//! Success Response carrying the sender's address as XOR-MAPPED-ADDRESS, so
//! clients can learn their public address. Everything else is ignored.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tracing::debug;

/// The fixed magic cookie of RFC 5389 messages.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the STUN message header.
pub const HEADER_LEN: usize = 20;
/// Message type of a Binding Request.
pub const BINDING_REQUEST: u16 = 0x0001;
/// Message type of a Binding Success Response.
pub const BINDING_SUCCESS: u16 = 0x0101;
/// Attribute type of XOR-MAPPED-ADDRESS.
pub const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// Attribute type of FINGERPRINT.
pub const ATTR_FINGERPRINT: u16 = 0x8028;
/// Value XORed into the CRC-32 of a FINGERPRINT attribute.
const FINGERPRINT_XOR: u32 = 0x5354_554E;
/// Largest datagram read; bigger ones are truncated and then rejected.
const MAX_DATAGRAM: usize = 2048;

/// A STUN transaction id.
pub type TransactionId = [u8; 12];

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// If `packet` is a well-formed STUN Binding Request, return its transaction
/// id.
///
/// Checks the header (type, length, cookie), that the attributes fit the
/// message exactly, and, when a FINGERPRINT attribute is present, that it is
/// last and correct.
pub fn parse_binding_request(packet: &[u8]) -> Option<TransactionId> {
    if packet.len() < HEADER_LEN {
        return None;
    }
    let msg_type = u16::from_be_bytes([packet[0], packet[1]]);
    if msg_type != BINDING_REQUEST {
        return None;
    }
    let msg_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if msg_len % 4 != 0 || HEADER_LEN + msg_len != packet.len() {
        return None;
    }
    if u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]) != MAGIC_COOKIE {
        return None;
    }
    let mut offset = HEADER_LEN;
    while offset < packet.len() {
        if packet.len() - offset < 4 {
            return None;
        }
        let attr_type = u16::from_be_bytes([packet[offset], packet[offset + 1]]);
        let attr_len = usize::from(u16::from_be_bytes([packet[offset + 2], packet[offset + 3]]));
        let value_start = offset + 4;
        let padded = attr_len.checked_add(3)? & !3;
        let next = value_start.checked_add(padded)?;
        if next > packet.len() {
            return None;
        }
        if attr_type == ATTR_FINGERPRINT {
            if attr_len != 4 || next != packet.len() {
                return None;
            }
            let got = u32::from_be_bytes([
                packet[value_start],
                packet[value_start + 1],
                packet[value_start + 2],
                packet[value_start + 3],
            ]);
            if got != crc32(&packet[..offset]) ^ FINGERPRINT_XOR {
                return None;
            }
        }
        offset = next;
    }
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&packet[8..HEADER_LEN]);
    Some(txid)
}

/// The address to report: IPv4-mapped IPv6 addresses (seen on dual-stack
/// sockets) are reported as IPv4.
fn reported_addr(addr: SocketAddr) -> (IpAddr, u16) {
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    (ip, addr.port())
}

/// Encode a Binding Success Response for `txid` whose XOR-MAPPED-ADDRESS is
/// `addr`.
pub fn binding_response(txid: &TransactionId, addr: SocketAddr) -> Vec<u8> {
    let (ip, port) = reported_addr(addr);
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let (family, xaddr): (u8, Vec<u8>) = match ip {
        IpAddr::V4(v4) => (0x01, v4.octets().iter().zip(cookie.iter()).map(|(a, c)| a ^ c).collect()),
        IpAddr::V6(v6) => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&cookie);
            key[4..].copy_from_slice(txid);
            (0x02, v6.octets().iter().zip(key.iter()).map(|(a, k)| a ^ k).collect())
        }
    };
    let value_len = 4 + xaddr.len();
    let mut out = Vec::with_capacity(HEADER_LEN + 4 + value_len);
    out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    out.extend_from_slice(&((4 + value_len) as u16).to_be_bytes());
    out.extend_from_slice(&cookie);
    out.extend_from_slice(txid);
    out.extend_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
    out.extend_from_slice(&(value_len as u16).to_be_bytes());
    out.push(0);
    out.push(family);
    out.extend_from_slice(&(port ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes());
    out.extend_from_slice(&xaddr);
    out
}

/// Decode a Binding Success Response: its transaction id and the
/// XOR-MAPPED-ADDRESS it carries. The inverse of [`binding_response`].
pub fn parse_binding_response(packet: &[u8]) -> Option<(TransactionId, SocketAddr)> {
    if packet.len() < HEADER_LEN
        || u16::from_be_bytes([packet[0], packet[1]]) != BINDING_SUCCESS
        || u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]) != MAGIC_COOKIE
    {
        return None;
    }
    let msg_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if HEADER_LEN + msg_len != packet.len() {
        return None;
    }
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&packet[8..HEADER_LEN]);
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut offset = HEADER_LEN;
    while packet.len().saturating_sub(offset) >= 4 {
        let attr_type = u16::from_be_bytes([packet[offset], packet[offset + 1]]);
        let attr_len = usize::from(u16::from_be_bytes([packet[offset + 2], packet[offset + 3]]));
        let value = packet.get(offset + 4..offset + 4 + attr_len)?;
        if attr_type == ATTR_XOR_MAPPED_ADDRESS && value.len() >= 4 {
            let port = u16::from_be_bytes([value[2], value[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
            let ip = match (value[1], value.len()) {
                (0x01, 8) => {
                    let mut o = [0u8; 4];
                    for i in 0..4 {
                        o[i] = value[4 + i] ^ cookie[i];
                    }
                    IpAddr::from(o)
                }
                (0x02, 20) => {
                    let mut key = [0u8; 16];
                    key[..4].copy_from_slice(&cookie);
                    key[4..].copy_from_slice(&txid);
                    let mut o = [0u8; 16];
                    for i in 0..16 {
                        o[i] = value[4 + i] ^ key[i];
                    }
                    IpAddr::from(o)
                }
                _ => return None,
            };
            return Some((txid, SocketAddr::new(ip, port)));
        }
        offset += 4 + ((attr_len + 3) & !3);
    }
    None
}

/// Answer STUN Binding Requests on `socket` until `shutdown` completes.
///
/// Anything that is not a valid Binding Request is silently ignored; receive
/// and send errors are logged at debug level and do not stop the loop.
pub async fn serve_stun<F>(socket: UdpSocket, shutdown: F)
where
    F: Future,
{
    tokio::pin!(shutdown);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            _ = &mut shutdown => break,
            r = socket.recv_from(&mut buf) => r,
        };
        let (n, from) = match received {
            Ok(x) => x,
            Err(e) => {
                // e.g. ICMP port unreachable reported on some platforms.
                debug!(error = %e, "STUN receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(txid) = parse_binding_request(&buf[..n]) else {
            continue;
        };
        let resp = binding_response(&txid, from);
        if let Err(e) = socket.send_to(&resp, from).await {
            debug!(error = %e, %from, "STUN send failed");
        }
    }
    debug!("STUN server stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const TXID: TransactionId = [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae];

    /// A Binding Request with a SOFTWARE attribute and a FINGERPRINT, like
    /// Tailscale clients send.
    fn request(txid: &TransactionId) -> Vec<u8> {
        let software = b"tailnode";
        let mut p = Vec::new();
        p.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
        p.extend_from_slice(&0u16.to_be_bytes()); // patched below
        p.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        p.extend_from_slice(txid);
        p.extend_from_slice(&0x8022u16.to_be_bytes());
        p.extend_from_slice(&(software.len() as u16).to_be_bytes());
        p.extend_from_slice(software);
        let len_with_fp = (p.len() - HEADER_LEN + 8) as u16;
        p[2..4].copy_from_slice(&len_with_fp.to_be_bytes());
        let fp = crc32(&p) ^ FINGERPRINT_XOR;
        p.extend_from_slice(&ATTR_FINGERPRINT.to_be_bytes());
        p.extend_from_slice(&4u16.to_be_bytes());
        p.extend_from_slice(&fp.to_be_bytes());
        p
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn parses_requests() {
        assert_eq!(parse_binding_request(&request(&TXID)), Some(TXID));

        // Bare header, no attributes.
        let mut bare = Vec::new();
        bare.extend_from_slice(&[0x00, 0x01, 0x00, 0x00]);
        bare.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        bare.extend_from_slice(&TXID);
        assert_eq!(parse_binding_request(&bare), Some(TXID));

        // Corrupted fingerprint.
        let mut bad = request(&TXID);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(parse_binding_request(&bad), None);

        // Corrupted body under a valid-looking fingerprint.
        let mut bad = request(&TXID);
        bad[HEADER_LEN + 5] ^= 0x20;
        assert_eq!(parse_binding_request(&bad), None);

        // Wrong cookie, wrong type, wrong length.
        let mut bad = bare.clone();
        bad[4] = 0;
        assert_eq!(parse_binding_request(&bad), None);
        let mut bad = bare.clone();
        bad[1] = 0x11;
        assert_eq!(parse_binding_request(&bad), None);
        let mut bad = bare.clone();
        bad[3] = 4;
        assert_eq!(parse_binding_request(&bad), None);
        let mut bad = bare.clone();
        bad.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(parse_binding_request(&bad), None);
        // A response is not a request.
        assert_eq!(parse_binding_request(&binding_response(&TXID, "1.2.3.4:5".parse().unwrap())), None);
        // Attribute running past the end.
        let mut bad = bare.clone();
        bad[3] = 4;
        bad.extend_from_slice(&[0x80, 0x22, 0x00, 0x10]);
        assert_eq!(parse_binding_request(&bad), None);
    }

    #[test]
    fn garbage_never_panics() {
        assert_eq!(parse_binding_request(&[]), None);
        assert_eq!(parse_binding_request(&[0u8; 19]), None);
        assert_eq!(parse_binding_request(b"GET / HTTP/1.1\r\n\r\n"), None);
        let mut state = 0x1234_5678u32;
        for len in 0..200usize {
            for _ in 0..50 {
                let mut p = Vec::with_capacity(len);
                for _ in 0..len {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    p.push((state >> 24) as u8);
                }
                if p.len() >= 8 {
                    p[0] = 0;
                    p[1] = 1;
                    p[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                }
                if p.len() >= 4 {
                    let l = (p.len().saturating_sub(HEADER_LEN)) as u16;
                    p[2..4].copy_from_slice(&l.to_be_bytes());
                }
                let _ = parse_binding_request(&p);
                let _ = parse_binding_response(&p);
            }
        }
    }

    #[test]
    fn xor_mapped_address_v4() {
        // Address, port and expected attribute bytes from the RFC 5769 sample.
        let addr: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let resp = binding_response(&TXID, addr);
        assert_eq!(&resp[0..2], &[0x01, 0x01]);
        assert_eq!(&resp[2..4], &12u16.to_be_bytes());
        assert_eq!(&resp[4..8], &[0x21, 0x12, 0xa4, 0x42]);
        assert_eq!(&resp[8..20], &TXID);
        assert_eq!(&resp[20..], &[0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]);
        assert_eq!(parse_binding_response(&resp), Some((TXID, addr)));
    }

    #[test]
    fn xor_mapped_address_v6() {
        let addr: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse().unwrap();
        let resp = binding_response(&TXID, addr);
        assert_eq!(&resp[2..4], &24u16.to_be_bytes());
        assert_eq!(
            &resp[20..],
            &[
                0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc,
                0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9
            ]
        );
        assert_eq!(parse_binding_response(&resp), Some((TXID, addr)));
    }

    #[test]
    fn v4_mapped_v6_is_reported_as_v4() {
        let mapped = SocketAddr::new(IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped()), 4242);
        let resp = binding_response(&TXID, mapped);
        assert_eq!(
            parse_binding_response(&resp),
            Some((TXID, SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), 4242)))
        );
    }

    async fn exchange(server_bind: &str, client_bind: &str) -> Option<()> {
        let server = UdpSocket::bind(server_bind).await.ok()?;
        let server_addr = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_stun(server, async move {
            let _ = stopped.await;
        }));
        let client = UdpSocket::bind(client_bind).await.ok()?;
        let client_addr = client.local_addr().unwrap();
        let mut buf = [0u8; 1500];

        // Garbage first: no answer.
        client.send_to(b"definitely not stun", server_addr).await.unwrap();
        client.send_to(&[0u8; 20], server_addr).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), client.recv_from(&mut buf)).await.is_err(),
            "garbage got an answer"
        );

        // Then a real request is answered with our own address.
        client.send_to(&request(&TXID), server_addr).await.unwrap();
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("no STUN answer")
            .unwrap();
        assert_eq!(from, server_addr);
        assert_eq!(parse_binding_response(&buf[..n]), Some((TXID, client_addr)));

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
        Some(())
    }

    #[tokio::test]
    async fn serves_v4() {
        exchange("127.0.0.1:0", "127.0.0.1:0").await.expect("IPv4 loopback");
    }

    #[tokio::test]
    async fn serves_v6_when_available() {
        // Skipped silently where the host has no IPv6 loopback.
        if exchange("[::1]:0", "[::1]:0").await.is_none() {
            eprintln!("no IPv6 loopback; skipping");
        }
    }
}
