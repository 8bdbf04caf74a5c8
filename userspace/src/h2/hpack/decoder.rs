//! The HPACK decoder (RFC 7541 §3, §5, §6) with the bounds a proxy needs.
//!
//! A header block of 16 KB can name a 4 KB table entry 16,000 times:
//! 64 MB of header list from one frame (the agent reached 978 MiB with 40
//! of them). The decoder therefore counts each field's RFC 9113 §6.5.2
//! size and materialises fields only while the list is within the limit
//! it is given; past it, it keeps decoding, because the block's inserts
//! still change the dynamic table the client's later blocks refer to
//! (RFC 9113 §4.3), but it keeps nothing. Its memory is the limit, the
//! table (at most what the peer may use) and one string of the block.

use thiserror::Error;

use super::huffman::{self, HuffmanError};
use super::table::{DynamicTable, ENTRY_OVERHEAD, STATIC};

/// Every decoding error is a connection error COMPRESSION_ERROR (RFC 9113 §4.3).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("header block ends inside a representation")]
    Truncated,
    #[error("integer beyond 2^28 or with too many continuation bytes")]
    IntegerOverflow,
    #[error("index 0")]
    ZeroIndex,
    #[error("index {0} is in neither table")]
    BadIndex(usize),
    #[error(transparent)]
    Huffman(#[from] HuffmanError),
    #[error("dynamic table size update after a header field")]
    LateSizeUpdate,
    #[error("dynamic table size update to {size} above the allowed {max}")]
    SizeUpdateTooLarge { size: usize, max: usize },
    #[error("the table's maximum size shrank but the block does not start with an update to {max} or less")]
    SizeUpdateMissing { max: usize },
}

/// A decoded header list: the fields in order, their names and values
/// packed in one buffer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderList {
    bytes: Vec<u8>,
    /// (name length, value length) of each field, in order.
    lens: Vec<(usize, usize)>,
    size: usize,
}

impl HeaderList {
    fn push(&mut self, name: &[u8], value: &[u8]) {
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(value);
        self.lens.push((name.len(), value.len()));
    }

    pub fn len(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// The RFC 9113 §6.5.2 size: names, values and 32 per field.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut at = 0;
        self.lens.iter().map(move |&(n, v)| {
            let name = &self.bytes[at..at + n];
            let value = &self.bytes[at + n..at + n + v];
            at += n + v;
            (name, value)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Fields(HeaderList),
    /// The list is larger than the limit: `size` is its full §6.5.2 size.
    /// The block was decoded to its end and the table is in step.
    OverLimit {
        size: u64,
    },
}

pub struct Decoder {
    table: DynamicTable,
    /// The largest table the peer may use: our SETTINGS_HEADER_TABLE_SIZE
    /// once acknowledged, 4,096 before.
    max_allowed: usize,
    /// The allowed maximum shrank below the table's: the next block must
    /// start with an update to this or less (RFC 7541 §4.2).
    update_due: Option<usize>,
    name: Vec<u8>,
    value: Vec<u8>,
}

/// RFC 7541 §4.2 / RFC 9113 §6.5.2: the initial SETTINGS_HEADER_TABLE_SIZE.
pub const DEFAULT_TABLE_SIZE: usize = 4096;

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_TABLE_SIZE)
    }
}

impl Decoder {
    pub fn new(max_allowed: usize) -> Self {
        Decoder {
            table: DynamicTable::new(max_allowed),
            max_allowed,
            update_due: None,
            name: Vec::new(),
            value: Vec::new(),
        }
    }

    /// A new SETTINGS_HEADER_TABLE_SIZE took effect (the peer acknowledged it).
    pub fn set_max_allowed(&mut self, max: usize) {
        self.max_allowed = max;
        if max < self.table.max_size() {
            // Entries beyond the new maximum are gone for the peer too,
            // whether or not it signals the update it owes.
            self.table.set_max_size(max);
            self.update_due = Some(self.update_due.map_or(max, |m| m.min(max)));
        }
    }

    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    /// Decodes one whole header block. Fields are kept while the list's
    /// size stays within `limit`.
    pub fn decode(&mut self, block: &[u8], limit: usize) -> Result<Decoded, DecodeError> {
        let mut r = Reader { buf: block, pos: 0 };
        let mut list = HeaderList::default();
        let mut size: u64 = 0;
        let mut over = false;
        let mut fields_started = false;
        let due = self.update_due.take();
        let mut due_met = due.is_none();
        while let Some(first) = r.peek() {
            if first & 0xe0 == 0x20 {
                // §6.3: dynamic table size update, only before the first field
                if fields_started {
                    return Err(DecodeError::LateSizeUpdate);
                }
                let size = r.int(5)?;
                if size > self.max_allowed {
                    return Err(DecodeError::SizeUpdateTooLarge {
                        size,
                        max: self.max_allowed,
                    });
                }
                due_met |= due.is_some_and(|d| size <= d);
                self.table.set_max_size(size);
                continue;
            }
            if !due_met {
                return Err(DecodeError::SizeUpdateMissing {
                    max: due.unwrap_or(0),
                });
            }
            fields_started = true;
            let (name, value): (&[u8], &[u8]) = if first & 0x80 != 0 {
                // §6.1 indexed
                let index = r.int(7)?;
                lookup(&self.table, index)?
            } else {
                // §6.2: with incremental indexing (01), without (0000), never (0001)
                let (prefix, insert) = if first & 0x40 != 0 {
                    (6, true)
                } else {
                    (4, false)
                };
                let index = r.int(prefix)?;
                if index == 0 {
                    r.string(&mut self.name)?;
                } else {
                    // copied: the insertion below may evict the entry it names (§4.4)
                    let (n, _) = lookup(&self.table, index)?;
                    self.name.clear();
                    self.name.extend_from_slice(n);
                }
                r.string(&mut self.value)?;
                if insert {
                    self.table.insert(&self.name, &self.value);
                }
                (&self.name, &self.value)
            };
            size = size.saturating_add((name.len() + value.len() + ENTRY_OVERHEAD) as u64);
            if over {
                continue;
            }
            if size > limit as u64 {
                over = true;
                list = HeaderList::default();
                continue;
            }
            list.push(name, value);
        }
        if !due_met {
            // an empty block still owes the update
            return Err(DecodeError::SizeUpdateMissing {
                max: due.unwrap_or(0),
            });
        }
        if over {
            return Ok(Decoded::OverLimit { size });
        }
        list.size = size as usize;
        Ok(Decoded::Fields(list))
    }
}

fn lookup(table: &DynamicTable, index: usize) -> Result<(&[u8], &[u8]), DecodeError> {
    match index {
        0 => Err(DecodeError::ZeroIndex),
        1..=61 => Ok(STATIC[index - 1]),
        _ => table
            .get(index - STATIC.len())
            .ok_or(DecodeError::BadIndex(index)),
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = self.peek().ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// §5.1: an integer with an N-bit prefix. Values are capped at 2^28
    /// (four continuation bytes): nothing in a 64 KiB block needs more,
    /// and zero-valued continuation bytes cannot pad it out.
    fn int(&mut self, prefix: u8) -> Result<usize, DecodeError> {
        let max = (1usize << prefix) - 1;
        let mut value = (self.byte()? as usize) & max;
        if value < max {
            return Ok(value);
        }
        for shift in [0, 7, 14, 21] {
            let b = self.byte()?;
            value += ((b & 0x7f) as usize) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::IntegerOverflow)
    }

    /// §5.2: a string literal, decoded into `out`. Its length is checked
    /// against what is left of the block before anything is allocated.
    fn string(&mut self, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let huffman = self.peek().ok_or(DecodeError::Truncated)? & 0x80 != 0;
        let len = self.int(7)?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError::Truncated)?;
        let raw = &self.buf[self.pos..end];
        self.pos = end;
        out.clear();
        if huffman {
            huffman::decode(raw, out)?;
        } else {
            out.extend_from_slice(raw);
        }
        Ok(())
    }
}
