//! Memory-mapped BPF arrays: `conns`, where the agent reads and writes
//! single fields while the programs update counters in the same entries,
//! and `endpoint_latency`, the peak-EWMA estimates both sides keep.

use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;

use super::abi::{ConnShared, LatencyShared};

#[derive(Debug, thiserror::Error)]
pub enum ConnTableError {
    #[error("mmap of a BPF array map (conns, endpoint_latency) failed (needs BPF_F_MMAPABLE arrays, Linux 5.5+)")]
    Mmap(#[source] std::io::Error),
}

/// An array of atomic views (abi.rs `atomic_view!`), shared with the programs.
pub struct MappedArray<T> {
    base: NonNull<T>,
    len: usize,
    bytes: usize,
}

// SAFETY: the mapping is shared memory accessed only through atomics.
unsafe impl<T: Sync> Send for MappedArray<T> {}
unsafe impl<T: Sync> Sync for MappedArray<T> {}

pub type ConnTable = MappedArray<ConnShared>;
pub type LatencyTable = MappedArray<LatencyShared>;

impl<T> MappedArray<T> {
    pub fn map(fd: &impl AsFd, entries: u32) -> Result<Self, ConnTableError> {
        let len = entries as usize;
        let page = 4096usize;
        let bytes = (len * std::mem::size_of::<T>()).div_ceil(page) * page;
        // SAFETY: mapping a BPF array map of `entries` values of
        // size_of::<T>() (a multiple of 8, as the kernel lays them out; T
        // is an atomic view of the map's value, checked by atomic_view!).
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
        let base = NonNull::new(ptr.cast::<T>())
            .ok_or_else(|| ConnTableError::Mmap(std::io::Error::other("mmap returned null")))?;
        Ok(MappedArray { base, len, bytes })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, id: u32) -> Option<&T> {
        let i = id as usize;
        // SAFETY: in bounds of the mapping, which lives as long as self; all
        // fields are atomics, so shared access from both sides is sound.
        (i < self.len).then(|| unsafe { &*self.base.as_ptr().add(i) })
    }
}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what map() mapped.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.bytes);
        }
    }
}
