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

use super::adopt::Adopter;
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
    /// The channel to the successor, to hand over on (Plan::HandOver).
    pub stream: Option<UnixStream>,
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
/// introduces this one to it first, and adopts what it hands over.
/// Without an adopter (unit tests) every connection offered is refused.
pub fn spawn(admin: &Path, adopter: Option<Arc<Adopter>>) -> std::io::Result<Channel> {
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
                serve_predecessor(stream, adopter.as_deref());
                if let Some(a) = &adopter {
                    a.predecessor_gone();
                }
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
/// until it is done or gone: its generation, then its connections, each
/// answered `Adopted` once its task runs here, or `Refused` (the old agent
/// drains it).
fn serve_predecessor(stream: UnixStream, adopter: Option<&Adopter>) {
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
    let mut adopted = 0u64;
    loop {
        let answer = match wire::recv(&stream) {
            Ok((Message::Generation { maps, links }, mut fds)) => {
                // Links are not adopted (the old agent sends none): their
                // descriptors, if any came, are closed here.
                fds.truncate(maps.len());
                let adopted = match adopter {
                    Some(a) => a.generation(&maps, fds),
                    None => Err("this agent adopts nothing".into()),
                };
                if let Err(e) = adopted {
                    tracing::warn!(error = %e, links, "handover: the generation cannot be adopted; its connections will be refused");
                }
                continue;
            }
            Ok((Message::Conn { id, state, .. }, fds)) => match adopter
                .ok_or_else(|| "this agent adopts nothing".to_string())
                .and_then(|a| a.conn(id, state, fds))
            {
                Ok(()) => {
                    adopted += 1;
                    Message::Adopted { id }
                }
                Err(reason) => {
                    tracing::warn!(conn = id, reason, "handover: connection refused");
                    Message::Refused { id, reason }
                }
            },
            Ok((Message::Done, _)) | Err(WireError::Closed) => break,
            Ok((other, _)) => {
                tracing::debug!(?other, "handover channel: not taken");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "handover channel: the agent before this one");
                break;
            }
        };
        if let Err(e) = wire::send(&stream, &answer, &[]) {
            tracing::warn!(error = %e, "handover channel: answering the agent before this one");
            break;
        }
    }
    tracing::info!(
        adopted,
        "handover channel: the agent before this one is done"
    );
    // Wait for it to exit (its end closes), so that its last frames are out
    // of its injector before this agent reads the generation's events.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    while wire::recv(&stream).is_ok() {}
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

    /// The agent stops: the plan for its connections, and the channel to
    /// the successor when the plan is to hand them over. A successor of
    /// another state format is told it is done at once. ROTOR_HANDOVER=off
    /// drains instead (how the tests show what the handover changes).
    pub fn at_stop(&self) -> AtStop {
        let Some(successor) = lock(&self.successor).take() else {
            return AtStop {
                successor: None,
                plan: Plan::Drain("no agent started beside this one".into()),
                stream: None,
            };
        };
        let mut plan = plan(STATE_FORMAT, Ok(&successor.hello));
        if plan == Plan::HandOver && std::env::var("ROTOR_HANDOVER").is_ok_and(|v| v == "off") {
            plan = Plan::Drain("the handover is turned off (ROTOR_HANDOVER=off)".into());
        }
        let stream = match plan {
            Plan::HandOver => Some(successor.stream),
            Plan::Drain(_) => {
                let _ = wire::send(&successor.stream, &Message::Done, &[]);
                None
            }
        };
        AtStop {
            successor: Some(successor.hello),
            plan,
            stream,
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
