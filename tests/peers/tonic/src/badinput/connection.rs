//! Running one case on its own connection and recording what came back.

use super::*;

#[derive(Debug, Default, Clone, Serialize)]
pub struct Outcome {
    pub name: String,
    pub class: String,
    pub mode: String,
    pub connect_error: Option<String>,
    /// The server's SETTINGS arrived (Settled mode).
    pub handshake: bool,
    pub goaway: Option<String>,
    pub goaway_last_stream: Option<u32>,
    /// RST_STREAMs as "stream:CODE".
    pub rst: Vec<String>,
    /// Response HEADERS by stream, as ":status" (or "?" if not decodable).
    pub responses: BTreeMap<u32, String>,
    /// Streams whose response ended (END_STREAM).
    pub completed: Vec<u32>,
    /// DATA bytes received, by stream.
    pub data: BTreeMap<u32, u64>,
    pub ping_ack: bool,
    /// How the server ended the connection before our FIN: "eof", "reset", or none.
    pub closed: Option<String>,
    /// After our FIN: "eof", "reset", or "open" (the server kept it open).
    pub after_fin: Option<String>,
    /// Bytes from the server that are not HTTP/2 frames we accept.
    pub garbage: Option<String>,
    /// `ss -tnmi` of our socket when the server kept it open after our FIN.
    pub socket: Option<String>,
    pub ms: u64,
    pub ok: bool,
    pub why: String,
    pub summary: String,
}

pub(super) struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    hpack: hpack::Decoder<'static>,
    out: Outcome,
    got_settings: bool,
    got_settings_ack: bool,
    eof: bool,
}

impl Conn {
    fn write(&mut self, b: &[u8]) -> bool {
        match self.s.write_all(b) {
            Ok(()) => true,
            Err(e) => {
                self.note_closed(&e);
                false
            }
        }
    }

    fn note_closed(&mut self, e: &std::io::Error) {
        if self.out.closed.is_none() {
            self.out.closed = Some(match e.kind() {
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => "reset".to_string(),
                _ => format!("error: {e}"),
            });
        }
        self.eof = true;
    }

    /// Reads what is there until `until` (or EOF); handles every whole frame.
    /// Returns whether it read something.
    fn read_some(&mut self, until: Instant) -> bool {
        let mut tmp = vec![0u8; 65536];
        loop {
            let now = Instant::now();
            if self.eof || now >= until {
                return false;
            }
            let _ = self
                .s
                .set_read_timeout(Some((until - now).max(Duration::from_millis(1))));
            match self.s.read(&mut tmp) {
                Ok(0) => {
                    if self.out.closed.is_none() {
                        self.out.closed = Some("eof".into());
                    }
                    self.eof = true;
                    if !self.buf.is_empty() && self.out.garbage.is_none() {
                        self.out.garbage = Some(format!(
                            "{} bytes of a partial frame before EOF",
                            self.buf.len()
                        ));
                    }
                    return false;
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    self.handle_frames();
                    return true;
                }
                // A socket in a sockmap (rotor puts the client's there) can
                // return EAGAIN from a blocking read before its timeout, when
                // a wake-up brought no data: wait on until the deadline.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => {
                    self.note_closed(&e);
                    return false;
                }
            }
        }
    }

    fn handle_frames(&mut self) {
        while self.buf.len() >= 9 && self.out.garbage.is_none() {
            let len = (usize::from(self.buf[0]) << 16)
                | (usize::from(self.buf[1]) << 8)
                | usize::from(self.buf[2]);
            let (t, flags) = (self.buf[3], self.buf[4]);
            let stream = u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]])
                & 0x7fff_ffff;
            if len > MAX_FRAME {
                self.out.garbage = Some(format!("frame of {len} bytes (type 0x{t:x}, stream {stream}): beyond our MAX_FRAME_SIZE"));
                return;
            }
            if self.buf.len() < 9 + len {
                return;
            }
            let payload: Vec<u8> = self.buf[9..9 + len].to_vec();
            self.buf.drain(..9 + len);
            self.on_frame(t, flags, stream, &payload);
        }
    }

    fn on_frame(&mut self, t: u8, flags: u8, stream: u32, p: &[u8]) {
        match t {
            kind::SETTINGS if stream == 0 => {
                if flags & ACK != 0 {
                    self.got_settings_ack = true;
                } else {
                    self.got_settings = true;
                    if self.out.handshake || self.out.mode != "Settled" {
                        // Later SETTINGS: acknowledge as a good peer would.
                        let _ = self.s.write_all(&frame(kind::SETTINGS, ACK, 0, &[]));
                    }
                }
            }
            kind::PING if stream == 0 => {
                if flags & ACK != 0 {
                    if p == b"rotorfzz" {
                        self.out.ping_ack = true;
                    }
                } else {
                    let _ = self.s.write_all(&frame(kind::PING, ACK, 0, p));
                }
            }
            kind::GOAWAY if p.len() >= 8 => {
                let last = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
                let c = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
                self.out.goaway = Some(code_name(c));
                self.out.goaway_last_stream = Some(last);
            }
            kind::RST_STREAM if p.len() == 4 => {
                let c = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                self.out.rst.push(format!("{stream}:{}", code_name(c)));
            }
            kind::HEADERS => {
                // Responses (and trailers); rotor's endpoints use no dynamic table.
                let mut block = p;
                if flags & PADDED != 0 && !block.is_empty() {
                    let pad = block[0] as usize;
                    block = &block[1..block.len().saturating_sub(pad).max(1)];
                }
                if flags & PRIORITY_FLAG != 0 && block.len() >= 5 {
                    block = &block[5..];
                }
                let status = match self.hpack.decode(block) {
                    Ok(fields) => fields
                        .iter()
                        .find(|(n, _)| n == b":status")
                        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_else(|| "trailers".into()),
                    Err(_) => "?".into(),
                };
                if status != "trailers" || !self.out.responses.contains_key(&stream) {
                    self.out.responses.insert(stream, status);
                }
                if flags & END_STREAM != 0 {
                    self.out.completed.push(stream);
                }
            }
            kind::DATA => {
                *self.out.data.entry(stream).or_default() += p.len() as u64;
                if flags & END_STREAM != 0 {
                    self.out.completed.push(stream);
                }
                // Keep the windows open: we read everything we are sent.
                if !p.is_empty() {
                    let inc = u32be(p.len() as u32);
                    let _ = self.s.write_all(
                        &[
                            frame(kind::WINDOW_UPDATE, 0, 0, &inc),
                            frame(kind::WINDOW_UPDATE, 0, stream, &inc),
                        ]
                        .concat(),
                    );
                }
            }
            _ => {}
        }
    }

    fn reacted(&self) -> bool {
        self.out.goaway.is_some() || self.eof
    }
}

pub fn run_case(addr: SocketAddr, case: &Case, a: &Args) -> Outcome {
    let start = Instant::now();
    let mut out = Outcome {
        name: case.name.clone(),
        class: case.class.to_string(),
        mode: format!("{:?}", case.mode),
        ..Default::default()
    };
    let s = match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        Ok(s) => s,
        Err(e) => {
            out.connect_error = Some(e.to_string());
            return finish(out, case, start);
        }
    };
    let _ = s.set_nodelay(true);
    let mut c = Conn {
        s,
        buf: Vec::new(),
        hpack: hpack::Decoder::new(),
        out,
        got_settings: false,
        got_settings_ack: false,
        eof: false,
    };
    let hello = [PREFACE, &settings(&[])[..]].concat();
    let mut pending: Vec<u8> = Vec::new();
    match case.mode {
        Mode::Raw => pending.extend_from_slice(&case.bytes),
        Mode::Early => {
            pending.extend_from_slice(&hello);
            pending.extend_from_slice(&case.bytes);
        }
        Mode::Settled => {
            if c.write(&hello) {
                let until = Instant::now() + Duration::from_secs(3);
                while !(c.got_settings && c.got_settings_ack) && c.read_some(until) {}
                if c.got_settings {
                    c.out.handshake = true;
                    c.write(&frame(kind::SETTINGS, ACK, 0, &[]));
                    // Let the server act on our ACK (rotor: open its fast path).
                    std::thread::sleep(Duration::from_millis(30));
                    let until = Instant::now() + Duration::from_millis(5);
                    while c.read_some(until) {}
                }
            }
            pending.extend_from_slice(&case.bytes);
        }
    }
    // The case's bytes (maybe split), the probe.
    if !c.eof {
        if case.chunks.is_empty() || case.mode != Mode::Settled {
            c.write(&pending);
        } else {
            let mut at = 0;
            for n in &case.chunks {
                if !c.write(&pending[at..at + n]) {
                    break;
                }
                at += n;
                std::thread::sleep(Duration::from_micros(300));
            }
        }
    }
    if case.stop_reading {
        // Hold everything unread, then read it all.
        std::thread::sleep(Duration::from_millis(a.hold_ms));
        let until = Instant::now() + Duration::from_secs(30);
        let want = match &case.expect {
            Expect::Responses(s) => s.len(),
            _ => 0,
        };
        while c.out.completed.len() < want && !c.reacted() && c.read_some(until) {}
    }
    if case.probe && !c.eof {
        c.write(&frame(kind::PING, 0, 0, b"rotorfzz"));
    }
    let want_responses: Vec<u32> = match &case.expect {
        Expect::Responses(s) => s.clone(),
        _ => Vec::new(),
    };
    let until = Instant::now() + Duration::from_millis(a.probe_ms);
    let mut grace: Option<Instant> = None;
    loop {
        if c.reacted() {
            break;
        }
        let done_responses = want_responses.iter().all(|s| c.out.completed.contains(s));
        if c.out.ping_ack && done_responses {
            let g = *grace.get_or_insert_with(|| Instant::now() + Duration::from_millis(30));
            if Instant::now() >= g {
                break;
            }
            c.read_some(g);
            continue;
        }
        if !c.read_some(until) && Instant::now() >= until {
            break;
        }
    }
    // Our FIN; the server must close.
    if !c.eof {
        let _ = c.s.shutdown(Shutdown::Write);
        let until = Instant::now() + Duration::from_millis(a.close_ms);
        let before = c.out.closed.clone();
        while c.read_some(until) {}
        let after = if c.eof {
            c.out.closed.clone().unwrap_or_else(|| "eof".into())
        } else {
            "open".into()
        };
        c.out.closed = before;
        if after == "open" {
            c.out.socket = our_socket(&c.s);
        }
        c.out.after_fin = Some(after);
    }
    finish(c.out, case, start)
}

/// `ss -tnmi` lines of this socket (state, queues, counters): whether the
/// server's FIN arrived (CLOSE-WAIT) or not (FIN-WAIT-2), bytes unread.
pub(super) fn our_socket(s: &TcpStream) -> Option<String> {
    let port = s.local_addr().ok()?.port();
    let out = std::process::Command::new("ss")
        .args(["-tanmi", "sport", "=", &format!(":{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().skip(1).map(str::trim).collect();
    Some(lines.join(" | ").chars().take(600).collect())
}
