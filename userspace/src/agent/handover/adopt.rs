//! The successor's side of a live handover: the old agent's kernel
//! generation is run beside this agent's own (a second `Shared`, whose
//! Datapath is built from the maps' descriptors: ebpf/datapath/adopt.rs),
//! and each connection offered is checked and run there
//! (agent/client/handover.rs). Called from the channel's thread, which
//! answers the old agent once the connection's task is spawned.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::net::TcpStream;

use super::state::ConnState;
use crate::agent::{Injector, Registry, Shared};
use crate::ebpf::Datapath;

/// The adopted generation's injector socket in its `injector_socks`: the
/// old agent's (0) still carries that agent's frames until it exits.
const ADOPTED_INJECTOR: u32 = 1;

pub struct Adopter {
    handle: tokio::runtime::Handle,
    main: Arc<Shared>,
    cgroup: PathBuf,
    generation: Mutex<Option<Arc<Shared>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Adopter {
    /// Must be called inside the agent's runtime.
    pub fn new(main: Arc<Shared>, cgroup: PathBuf) -> Arc<Adopter> {
        Arc::new(Adopter {
            handle: tokio::runtime::Handle::current(),
            main,
            cgroup,
            generation: Mutex::new(None),
        })
    }

    /// The old agent's maps (`Message::Generation`).
    pub fn generation(&self, maps: &[String], fds: Vec<OwnedFd>) -> Result<(), String> {
        if lock(&self.generation).is_some() {
            return Err("a generation was adopted already".into());
        }
        let _rt = self.handle.enter();
        let dp = Datapath::adopt(maps, fds, self.cgroup.clone()).map_err(|e| e.to_string())?;
        let dp = Arc::new(dp);
        let injector =
            Injector::start_keyed(&dp, ADOPTED_INJECTOR).map_err(|e| format!("{e:#}"))?;
        let shared = Arc::new(Shared {
            dp: dp.clone(),
            injector,
            registry: Arc::new(Registry::new()),
            budget: self.main.budget.clone(),
            files: self.main.files.clone(),
            stopping: tokio::sync::watch::channel(*self.main.stopping.borrow()).0,
            source: self.main.source.clone(),
            handover: tokio::sync::watch::channel(None).0,
            adopted: Mutex::new(Vec::new()),
            model: Mutex::new(Default::default()),
            connect_timeout: self.main.connect_timeout,
            // an adopted generation's accepted sockets came with their
            // connections: it accepts none, and has no spare taps
            spares: Arc::new(crate::agent::spare_taps::SparePool::new(&dp)),
            // one count of upstreams per endpoint for the node
            pools: self.main.pools.clone(),
        });
        crate::agent::adopt_generation(&self.main, shared.clone());
        *lock(&self.generation) = Some(shared);
        tracing::info!("handover: the generation of the agent before this one is adopted");
        Ok(())
    }

    /// One connection (`Message::Conn`): checked, then its task spawned.
    pub fn conn(&self, id: u32, state: serde_json::Value, fds: Vec<OwnedFd>) -> Result<(), String> {
        let shared = lock(&self.generation)
            .clone()
            .ok_or("no generation was adopted")?;
        let st: ConnState = serde_json::from_value(state).map_err(|e| e.to_string())?;
        st.validate(id, shared.dp.conns.len(), fds.len())
            .map_err(|e| e.to_string())?;
        if shared.registry.conns().iter().any(|c| c.id == id) {
            return Err(format!("connection {id} was adopted already"));
        }
        let service = (shared.registry.services().into_iter())
            .find(|s| s.name == st.service && s.vip == st.vip)
            .ok_or_else(|| format!("no Service {} at {} here", st.service, st.vip))?;
        let _rt = self.handle.enter();
        let mut socks = fds
            .into_iter()
            .map(tcp)
            .collect::<Result<Vec<TcpStream>, String>>()?;
        // Each socket is the one the state names: its kernel entries are
        // keyed by its cookie.
        let cookies = std::iter::once(st.cookie).chain(st.slots.iter().map(|s| s.cookie));
        for (sock, want) in socks.iter().zip(cookies) {
            let got = crate::sys::socket_cookie(sock).map_err(|e| e.to_string())?;
            if got != want {
                return Err(format!("a socket's cookie is {got}, the state says {want}"));
            }
        }
        let a = socks.remove(0);
        tracing::debug!(conn = id, client = %st.client, "handover: connection adopted");
        // it exists: charged whether it fits or not (agent/files.rs)
        let sharing = shared.pools.limits().shared > 0;
        let endpoints = service.endpoints.borrow().len().max(socks.len());
        let files =
            (shared.files).charge(crate::agent::files::cost_of_connection(endpoints, sharing));
        let serve = crate::agent::client::serve_adopted(shared, id, service, st, a, socks);
        self.handle.spawn(async move {
            let _files = files;
            serve.await
        });
        Ok(())
    }

    /// The old agent has gone: the adopted generation's ring buffer is
    /// this agent's alone to read now (two readers of one ring would race
    /// on its consumer position).
    pub fn predecessor_gone(&self) {
        let Some(shared) = lock(&self.generation).clone() else {
            return;
        };
        let _rt = self.handle.enter();
        if let Some(ring) = shared.dp.take_events() {
            if let Err(e) = crate::agent::events::spawn(ring, shared.registry.clone()) {
                tracing::warn!(error = %e, "handover: the adopted generation's events are not read");
            }
        }
    }
}

fn tcp(fd: OwnedFd) -> Result<TcpStream, String> {
    let s = std::net::TcpStream::from(fd);
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    TcpStream::from_std(s).map_err(|e| e.to_string())
}
