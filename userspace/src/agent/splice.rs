//! Not HTTP/2 (no client preface): the connection goes whole to one
//! endpoint, so a balanced Service never breaks HTTP/1.1 or raw TCP clients.

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use std::net::SocketAddrV4;

/// Carries `client` to `endpoint` both ways; `first` is what the client
/// sent before the agent knew it was not HTTP/2.
pub async fn run(
    endpoint: SocketAddrV4,
    mut client: TcpStream,
    first: Bytes,
) -> anyhow::Result<()> {
    let mut upstream = crate::ebpf::own_socks::connect(endpoint).await?;
    upstream.write_all(&first).await?;
    tracing::debug!(%endpoint, "not HTTP/2: spliced to one endpoint");
    let mut from_client = vec![0u8; 65536];
    let mut from_upstream = vec![0u8; 65536];
    loop {
        tokio::select! {
            r = client.read(&mut from_client) => {
                let n = r?;
                if n == 0 { upstream.shutdown().await?; break; }
                upstream.write_all(&from_client[..n]).await?;
            }
            r = upstream.read(&mut from_upstream) => {
                let n = r?;
                if n == 0 { client.shutdown().await?; break; }
                client.write_all(&from_upstream[..n]).await?;
            }
        }
    }
    // half-closed: finish the other direction
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    Ok(())
}
