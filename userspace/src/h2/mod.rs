//! The agent's HTTP/2: frame codec, the kernel's message boundaries, and
//! HPACK decoding for the header blocks a client sends before it
//! acknowledged HEADER_TABLE_SIZE=0 (after that, HPACK stays between
//! client and endpoint).

pub mod frame;
pub mod header_block;
pub mod hpack;
pub mod message;
