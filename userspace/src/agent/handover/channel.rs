//! How the old agent finds the one replacing it. Beside the admin socket,
//! at `ADMIN.handover`, the running agent listens; an agent started while
//! it runs (a rollout) connects there at start and both say `Hello`. On
//! SIGTERM the old agent looks at what its successor said (`at_stop`) and
//! plans accordingly. The successor binds its own listener beside the path
//! and renames it onto the path once the old agent has gone, as the admin
//! socket does, so a third agent finds the second.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::wire::{self, WireError};
use super::{plan, Message, Plan, STATE_FORMAT};

/// How long either side waits for the other's hello, or for a write.
const HELLO_LIMIT: Duration = Duration::from_secs(2);
/// How often a successor looks whether the old agent's listener has gone.
const TAKE_OVER_POLL: Duration = Duration::from_millis(50);

/// The agent started beside this one, as it introduced itself.
struct Successor {
    stream: UnixStream,
    hello: Message,
}

/// This agent's end of the handover channel.
pub struct Channel {
    bound: Arc<Mutex<PathBuf>>,
    inode: u64,
    successor: Arc<Mutex<Option<Successor>>>,
}

/// What the old agent learnt when it was told to stop.
#[derive(Debug)]
pub struct AtStop {
    /// The successor's hello, if one connected.
    pub successor: Option<Message>,
    pub plan: Plan,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}

/// The channel's path for an admin socket path.
pub fn path_for(admin: &Path) -> PathBuf {
    let mut name = admin.as_os_str().to_owned();
    name.push(".handover");
    PathBuf::from(name)
}

/// Listens beside the admin socket; if an agent already listens there,
/// introduces this one to it first.
pub fn spawn(admin: &Path) -> std::io::Result<Channel> {
    let path = path_for(admin);
    let predecessor = UnixStream::connect(&path).ok();
    let bound = if predecessor.is_some() {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{}", std::process::id()));
        PathBuf::from(name)
    } else {
        path.clone()
    };
    let _ = std::fs::remove_file(&bound);
    let listener = UnixListener::bind(&bound)?;
    std::fs::set_permissions(&bound, std::fs::Permissions::from_mode(0o600))?;
    let channel = Channel {
        inode: inode(&bound).unwrap_or(0),
        bound: Arc::new(Mutex::new(bound.clone())),
        successor: Default::default(),
    };
    let successor = channel.successor.clone();
    std::thread::Builder::new()
        .name("handover-accept".into())
        .spawn(move || accept(listener, successor))?;
    if let Some(stream) = predecessor {
        let (bound, current) = (bound, channel.bound.clone());
        std::thread::Builder::new()
            .name("handover-predecessor".into())
            .spawn(move || {
                serve_predecessor(stream);
                take_over(&bound, &path, &current);
            })?;
    }
    Ok(channel)
}

fn accept(listener: UnixListener, successor: Arc<Mutex<Option<Successor>>>) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "handover channel: accept failed");
                std::thread::sleep(TAKE_OVER_POLL);
                continue;
            }
        };
        match greet(&stream) {
            Ok(hello) => {
                tracing::info!(
                    ?hello,
                    "an agent started beside this one: it answers on the handover channel"
                );
                *lock(&successor) = Some(Successor { stream, hello });
            }
            Err(e) => {
                tracing::warn!(error = %e, "handover channel: no hello from the agent that connected")
            }
        }
    }
}

/// Hellos both ways; the peer's.
fn greet(stream: &UnixStream) -> Result<Message, WireError> {
    stream.set_read_timeout(Some(HELLO_LIMIT))?;
    stream.set_write_timeout(Some(HELLO_LIMIT))?;
    wire::send(stream, &Message::hello(), &[])?;
    let (hello, _) = wire::recv(stream)?;
    Ok(hello)
}

/// The successor's side: hello, then whatever the old agent hands over
/// until it is done or gone. Adopting is not built: a connection offered
/// is refused, and the old agent drains it.
fn serve_predecessor(stream: UnixStream) {
    match greet(&stream) {
        Ok(hello) => tracing::info!(
            ?hello,
            "an agent runs before this one: handover channel open"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "handover channel: the agent before this one did not answer");
            return;
        }
    }
    let _ = stream.set_read_timeout(None);
    loop {
        match wire::recv(&stream) {
            Ok((Message::Conn { id, .. }, _fds)) => {
                let refused = Message::Refused {
                    id,
                    reason: "this agent does not adopt connections yet".into(),
                };
                if wire::send(&stream, &refused, &[]).is_err() {
                    return;
                }
            }
            Ok((Message::Done, _)) | Err(WireError::Closed) => return,
            Ok((other, _)) => tracing::debug!(?other, "handover channel: not taken"),
            Err(e) => {
                tracing::warn!(error = %e, "handover channel: the agent before this one");
                return;
            }
        }
    }
}

/// Renames this agent's listener onto the channel's path once nothing
/// answers there.
fn take_over(bound: &Path, path: &Path, current: &Mutex<PathBuf>) {
    while UnixStream::connect(path).is_ok() {
        std::thread::sleep(TAKE_OVER_POLL);
    }
    match std::fs::rename(bound, path) {
        Ok(()) => *lock(current) = path.to_path_buf(),
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "cannot take over the handover channel")
        }
    }
}

impl Channel {
    /// Whether an agent started beside this one has said hello.
    pub fn has_successor(&self) -> bool {
        lock(&self.successor).is_some()
    }

    /// Where this agent listens now.
    pub fn bound(&self) -> PathBuf {
        lock(&self.bound).clone()
    }

    /// The agent stops: the plan for its connections. Until adoption is
    /// built every plan drains; the successor is told it is done.
    pub fn at_stop(&self) -> AtStop {
        let Some(successor) = lock(&self.successor).take() else {
            return AtStop {
                successor: None,
                plan: Plan::Drain("no agent started beside this one".into()),
            };
        };
        let agreed = plan(STATE_FORMAT, Ok(&successor.hello));
        let _ = wire::send(&successor.stream, &Message::Done, &[]);
        let plan = match agreed {
            Plan::HandOver => Plan::Drain(format!(
                "the new agent speaks state format {STATE_FORMAT} too, but adopting connections is not built yet"
            )),
            drain => drain,
        };
        AtStop {
            successor: Some(successor.hello),
            plan,
        }
    }

    /// Unlinks the listener at exit unless a successor has taken the path.
    pub fn remove(&self) {
        let bound = self.bound();
        if inode(&bound) == Some(self.inode) {
            let _ = std::fs::remove_file(&bound);
        }
    }
}

#[cfg(test)]
mod tests;
