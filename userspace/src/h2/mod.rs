//! The agent's HTTP/2: frame codec and the kernel's message boundaries.
//! The agent never decodes header blocks: HPACK stays between client and endpoint.

pub mod frame;
pub mod header_block;
pub mod message;
