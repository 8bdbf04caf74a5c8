//! Addresses as the kernel keys them (ebpf/include/rotor.h): 16 bytes in
//! network byte order, an IPv4 address IPv4-mapped (::ffff:a.b.c.d), so
//! that both families share the services map, client_origins and
//! agent_socks.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::abi::ROTOR_IP_WORDS;

/// `ROTOR_IP_WORDS` u32 words, each in network byte order as the programs
/// compare them (`bpf_htonl(0xffff)` is the third word of a mapped address).
pub type IpWords = [u32; ROTOR_IP_WORDS as usize];

/// The kernel's words for `ip`.
pub fn ip_words(ip: IpAddr) -> IpWords {
    let v6 = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let o = v6.octets();
    std::array::from_fn(|i| {
        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

/// The address the kernel's words name: IPv4 when they are mapped.
pub fn ip_of_words(words: IpWords) -> IpAddr {
    let mut o = [0u8; 16];
    for (i, w) in words.iter().enumerate() {
        o[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
    }
    Ipv6Addr::from(o).to_canonical()
}

/// `ip:port` from the kernel's words and a host-order port.
pub fn socket_addr(words: IpWords, port: u32) -> SocketAddr {
    SocketAddr::new(ip_of_words(words), port as u16)
}

/// One name for one peer: an IPv4 peer seen through an IPv6 socket
/// (::ffff:a.b.c.d) is the IPv4 peer, as the kernel keys it.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_is_mapped_and_both_families_round_trip() {
        let v4: IpAddr = "10.96.0.1".parse().unwrap();
        let w = ip_words(v4);
        assert_eq!(w[0], 0);
        assert_eq!(w[1], 0);
        assert_eq!(w[2], 0xffffu32.to_be());
        assert_eq!(w[3], u32::from_ne_bytes([10, 96, 0, 1]));
        assert_eq!(ip_of_words(w), v4);
        let v6: IpAddr = "fd00::10".parse().unwrap();
        let w6 = ip_words(v6);
        assert_eq!(w6[0], u32::from_ne_bytes([0xfd, 0, 0, 0]));
        assert_eq!(w6[3], u32::from_ne_bytes([0, 0, 0, 0x10]));
        assert_eq!(ip_of_words(w6), v6);
        assert_eq!(
            socket_addr(w6, 8080),
            "[fd00::10]:8080".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn a_mapped_peer_is_its_ipv4_address() {
        let mapped: SocketAddr = "[::ffff:10.0.0.2]:4000".parse().unwrap();
        assert_eq!(
            canonical(mapped),
            "10.0.0.2:4000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(ip_words(mapped.ip()), ip_words("10.0.0.2".parse().unwrap()));
    }
}
