//! `DelayLine`: a fixed packet delay without `sch_netem` (kernels built
//! without it, such as the test VMs'). Two TUN devices in one namespace and
//! a thread between them: packets routed into `dlyin` are read by the thread,
//! held for the delay (in order) and written to `dlyout`, whose packets the
//! kernel then routes (and forwards) as if they had just arrived.
//!
//! The thread enters the namespace (`setns` changes only its own namespace)
//! before it creates the devices; dropping the line stops the thread and
//! closes the devices' file descriptors, which deletes them.

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::process::NETNS_RUN_DIR;

/// The device packets go in by (routes point here).
pub const DEV_IN: &str = "dlyin";
/// The device they come out of, delayed.
pub const DEV_OUT: &str = "dlyout";

/// The running delay thread and its devices. Dropping it stops both.
#[derive(Debug)]
pub struct DelayLine {
    delay_us: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Packets carried so far (for tests and messages).
    packets: Arc<AtomicU64>,
}

impl DelayLine {
    /// Creates `dlyin` and `dlyout` in namespace `netns` (down; the caller
    /// configures addresses and routes) and starts delaying by `delay`.
    pub fn start(netns: &str, delay: Duration) -> Result<DelayLine> {
        let delay_us = Arc::new(AtomicU64::new(delay.as_micros() as u64));
        let stop = Arc::new(AtomicBool::new(false));
        let packets = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = mpsc::channel::<std::result::Result<(), String>>();
        let ns_path = format!("{NETNS_RUN_DIR}/{netns}");
        let (d, s, p) = (delay_us.clone(), stop.clone(), packets.clone());
        let thread = std::thread::Builder::new()
            .name(format!("delay-{netns}"))
            .spawn(move || {
                let devs = enter(&ns_path).and_then(|()| Ok((tun(DEV_IN)?, tun(DEV_OUT)?)));
                match devs {
                    Ok((din, dout)) => {
                        let _ = ready_tx.send(Ok(()));
                        carry(&din, &dout, &d, &s, &p);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                    }
                }
            })
            .context("spawning the delay thread")?;
        let line = DelayLine {
            delay_us,
            stop,
            thread: Some(thread),
            packets,
        };
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(line),
            Ok(Err(e)) => bail!("delay line in {netns}: {e}"),
            Err(_) => bail!("delay line in {netns}: its thread did not start"),
        }
    }

    /// Changes the delay of packets read from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_us
            .store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }

    /// Packets carried so far.
    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn enter(ns_path: &str) -> Result<()> {
    let f = File::open(ns_path).with_context(|| format!("opening {ns_path}"))?;
    // SAFETY: setns on a valid namespace fd; it changes only this thread's namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setns {ns_path}"));
    }
    Ok(())
}

/// A non-blocking TUN device `name` (IFF_TUN | IFF_NO_PI: raw IP packets).
fn tun(name: &str) -> Result<OwnedFd> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    // SAFETY: open with a valid NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("opening /dev/net/tun");
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // struct ifreq: 16 bytes of name, then a short of flags, padded to 40 bytes.
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as u16;
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which ifr is sized for.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, ifr.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("TUNSETIFF {name}"));
    }
    Ok(fd)
}

/// The delay loop: read every packet `din` has, queue it with its due time,
/// write the due ones to `dout` in order, and sleep until the next is due or
/// a packet arrives.
fn carry(
    din: &OwnedFd,
    dout: &OwnedFd,
    delay_us: &AtomicU64,
    stop: &AtomicBool,
    packets: &AtomicU64,
) {
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        loop {
            // SAFETY: reading into a buffer of buf.len() bytes from our own fd.
            let n = unsafe { libc::read(din.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break; // EAGAIN: nothing more now
            }
            let due = Instant::now() + Duration::from_micros(delay_us.load(Ordering::Relaxed));
            queue.push_back((due, buf[..n as usize].to_vec()));
        }
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _)| *due <= now) {
            let Some((_, pkt)) = queue.pop_front() else {
                break;
            };
            // SAFETY: writing a whole packet from a live buffer to our own fd.
            // A packet the kernel does not take (a full queue) is lost, as on a wire.
            let _ = unsafe { libc::write(dout.as_raw_fd(), pkt.as_ptr().cast(), pkt.len()) };
            packets.fetch_add(1, Ordering::Relaxed);
        }
        let wait = queue
            .front()
            .map_or(Duration::from_millis(50), |(due, _)| {
                due.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_millis(50));
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        let mut pfd = libc::pollfd {
            fd: din.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a valid timespec, no signal mask.
        unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    }
}
