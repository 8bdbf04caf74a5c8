//! Not HTTP/2 (no client preface): the connection goes whole to one
//! endpoint, so a balanced Service never breaks HTTP/1.1 or raw TCP clients.

use bytes::Bytes;
use tokio::net::TcpStream;

use std::net::SocketAddr;

/// What a client that is not HTTP/2 speaks, from its first bytes, for
/// `rotor conns` and `rotor explain`: a guess, not a parse.
pub fn what_it_speaks(first: &[u8]) -> &'static str {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"HEAD ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
    ];
    match first {
        [] => "nothing within 1 s (a protocol whose server speaks first?)",
        // a TLS record of type handshake, version 3.x
        [0x16, 0x03, ..] => "TLS",
        f if METHODS.iter().any(|m| f.starts_with(m)) => "HTTP/1.x",
        _ => "not HTTP/2 (no client preface)",
    }
}

/// Carries `client` to `endpoint` both ways; `first` is what the client
/// sent before the agent knew it was not HTTP/2, read from `input`. The client's socket is in
/// agent_socks, where a plain read can return one message and then wait
/// for an epoll edge that never comes (sockmap_io.rs), so it is read as
/// fail_open.rs reads it: one relay for both.
pub async fn run(
    dp: &crate::ebpf::Datapath,
    endpoint: SocketAddr,
    client: TcpStream,
    first: Bytes,
    input: super::tap::SourceInput,
) -> anyhow::Result<()> {
    tracing::debug!(%endpoint, "not HTTP/2: spliced to one endpoint");
    super::fail_open::splice(dp, client, endpoint, &first, input).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn first_bytes_name_the_protocol() {
        use super::what_it_speaks as w;
        assert_eq!(w(b"GET / HTTP/1.1\r\n"), "HTTP/1.x");
        assert_eq!(w(&[0x16, 0x03, 0x01, 0x02, 0x00]), "TLS");
        assert!(w(b"").starts_with("nothing"));
        assert!(w(b"SSH-2.0").starts_with("not HTTP/2"));
        // a preface cut short is not HTTP/1.x
        assert!(w(b"PRI * HTTP/2.0").starts_with("not HTTP/2"));
    }
}
