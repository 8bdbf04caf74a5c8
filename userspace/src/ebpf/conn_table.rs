//! The `conns` array, memory-mapped: the agent reads and writes single
//! fields while the programs update counters in the same entries.

use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;

use super::abi::ConnShared;

#[derive(Debug, thiserror::Error)]
pub enum ConnTableError {
    #[error("mmap of the conns map failed (needs BPF_F_MMAPABLE arrays, Linux 5.5+)")]
    Mmap(#[source] std::io::Error),
}

pub struct ConnTable {
    base: NonNull<ConnShared>,
    len: usize,
    bytes: usize,
}

// SAFETY: the mapping is shared memory accessed only through atomics.
unsafe impl Send for ConnTable {}
unsafe impl Sync for ConnTable {}

impl ConnTable {
    pub fn map(fd: &impl AsFd, entries: u32) -> Result<Self, ConnTableError> {
        let len = entries as usize;
        let page = 4096usize;
        let bytes = (len * std::mem::size_of::<ConnShared>()).div_ceil(page) * page;
        // SAFETY: mapping a BPF array map of `entries` values of
        // size_of::<ConnShared>() (a multiple of 8, as the kernel lays them out).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(ConnTableError::Mmap(std::io::Error::last_os_error()));
        }
        let base = NonNull::new(ptr.cast::<ConnShared>())
            .ok_or_else(|| ConnTableError::Mmap(std::io::Error::other("mmap returned null")))?;
        Ok(ConnTable { base, len, bytes })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, id: u32) -> Option<&ConnShared> {
        let i = id as usize;
        // SAFETY: in bounds of the mapping, which lives as long as self; all
        // fields are atomics, so shared access from both sides is sound.
        (i < self.len).then(|| unsafe { &*self.base.as_ptr().add(i) })
    }
}

impl Drop for ConnTable {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what map() mapped.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.bytes);
        }
    }
}
