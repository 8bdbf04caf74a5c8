use super::*;
use std::time::Instant;

/// A directory of its own per test, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("rotor-handover-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn admin(&self) -> PathBuf {
        self.0.join("admin.sock")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn within(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

#[test]
fn the_old_agent_hears_from_its_successor_which_then_takes_the_path_over() {
    let dir = Dir::new("lifecycle");
    let old = spawn(&dir.admin(), None).unwrap();
    let path = path_for(&dir.admin());
    assert_eq!(old.bound(), path);
    assert!(!old.has_successor());

    let new = spawn(&dir.admin(), None).unwrap();
    assert_ne!(new.bound(), path, "the successor listens beside the path");
    assert!(within(HELLO_LIMIT, || old.has_successor()));
    let stop = old.at_stop();
    assert!(
        matches!(stop.successor, Some(Message::Hello { format, .. }) if format == STATE_FORMAT),
        "{stop:?}"
    );
    assert_eq!(stop.plan, Plan::HandOver, "{stop:?}");
    let channel = stop.stream.expect("the channel to hand over on");
    // a connection offered to a successor that adopts nothing is refused
    let conn = Message::Conn {
        id: 3,
        slots: vec![],
        state: serde_json::Value::Null,
    };
    let (a, _b) = UnixStream::pair().unwrap();
    wire::send(&channel, &conn, &[std::os::fd::AsFd::as_fd(&a)]).unwrap();
    channel.set_read_timeout(Some(HELLO_LIMIT)).unwrap();
    let (answer, _) = wire::recv(&channel).unwrap();
    assert!(
        matches!(&answer, Message::Refused { id: 3, reason } if reason.contains("adopts nothing")),
        "{answer:?}"
    );

    // the old agent exits; the successor takes the path and hears the next
    drop(channel);
    old.remove();
    assert!(
        within(HELLO_LIMIT, || new.bound() == path),
        "{:?}",
        new.bound()
    );
    let next = spawn(&dir.admin(), None).unwrap();
    assert!(within(HELLO_LIMIT, || new.has_successor()));
    drop(next);
}

#[test]
fn a_successor_of_another_state_format_is_drained_to() {
    let dir = Dir::new("format");
    let old = spawn(&dir.admin(), None).unwrap();
    let peer = UnixStream::connect(path_for(&dir.admin())).unwrap();
    peer.set_read_timeout(Some(HELLO_LIMIT)).unwrap();
    let (theirs, _) = wire::recv(&peer).unwrap();
    assert_eq!(theirs, Message::hello());
    let newer = Message::Hello {
        format: STATE_FORMAT + 1,
        agent: "0.2.0".into(),
        adopts_shared: true,
    };
    wire::send(&peer, &newer, &[]).unwrap();
    assert!(within(HELLO_LIMIT, || old.has_successor()));
    let stop = old.at_stop();
    let Plan::Drain(why) = &stop.plan else {
        panic!("{stop:?}")
    };
    assert!(
        why.contains(&format!("speaks state format {}", STATE_FORMAT + 1)),
        "{why}"
    );
    let (done, _) = wire::recv(&peer).unwrap();
    assert_eq!(done, Message::Done);
    old.remove();
}

#[test]
fn without_a_successor_the_agent_drains() {
    let dir = Dir::new("alone");
    let old = spawn(&dir.admin(), None).unwrap();
    let stop = old.at_stop();
    assert!(stop.successor.is_none());
    assert_eq!(
        stop.plan,
        Plan::Drain("no agent started beside this one".into())
    );
    old.remove();
    assert!(!path_for(&dir.admin()).exists());
}
