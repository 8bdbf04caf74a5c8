//! HPACK (RFC 7541), decoding only: the agent decodes the header blocks a
//! client sends before it acknowledged our HEADER_TABLE_SIZE=0 and
//! re-encodes them with literals (`header_block.rs`). In-tree because the
//! `hpack` 0.3 crate it replaced is unmaintained, panics on some input
//! and has no header-list limit (an HPACK bomb took the agent to 978 MiB).

mod decoder;
mod huffman;
mod table;
#[cfg(test)]
pub(crate) mod tests;

pub use decoder::{DecodeError, Decoded, Decoder, HeaderList, DEFAULT_TABLE_SIZE};
pub use huffman::HuffmanError;
pub use table::ENTRY_OVERHEAD;
