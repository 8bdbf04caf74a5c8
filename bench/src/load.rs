//! The benchmark load generator behind `rotor-bench-load`: `h2` client,
//! HdrHistogram latencies, whole-machine CPU from `/proc/stat`.
//!
//! * closed loop: `--connections N --streams M`, every stream worker sends its
//!   next request as soon as the previous one is answered, for `--duration`.
//! * open loop: `--rate R` requests per second over all connections, each sent
//!   at its intended time by a dispatcher thread, whatever is still in flight;
//!   latency is measured from the *intended* send time, so a stall is charged
//!   to every request that should have been sent during it (no coordinated
//!   omission).
//!
//! Only the measurement window `[warmup, warmup + duration)` counts: requests
//! completed in it (closed) or intended in it (open). The CPU figures are
//! `/proc/stat` deltas over that same window, so they cover every process and
//! the kernel (softirq included) of the whole machine.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use h2::client::SendRequest;
use hdrhistogram::Histogram;
use http::{Method, Request};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

/// Command line of `rotor-bench-load`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "rotor-bench-load",
    about = "HTTP/2 benchmark load generator (prints one JSON report)"
)]
pub struct Args {
    #[arg(long)]
    pub addr: SocketAddr,
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Concurrent streams per connection (closed loop).
    #[arg(long, default_value_t = 16)]
    pub streams: usize,
    /// Open loop at this many requests per second (over all connections).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of load before the measurement window.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    #[arg(long, default_value = "/100b")]
    pub path: String,
    /// Expected response body length (default: from the path: /100b, /64k).
    #[arg(long)]
    pub expect_len: Option<usize>,
    /// Network namespaces (names under /var/run/netns) of the bench: the CPU
    /// time of user processes outside them is reported apart (`other_ms`).
    #[arg(long, value_delimiter = ',')]
    pub bench_netns: Vec<String>,
}

/// Whole-machine CPU time over the window, from `/proc/stat` (milliseconds).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct CpuTimes {
    pub user_ms: f64,
    pub system_ms: f64,
    /// hardirq + softirq (network receive and the sk_skb redirect work run here).
    pub irq_ms: f64,
    pub idle_ms: f64,
    /// user + nice + system + irq + softirq + steal.
    pub busy_ms: f64,
    /// CPU time of user processes outside the bench's namespaces (other work on
    /// the machine; with `--bench-netns` only). Kernel threads count as the bench's.
    #[serde(default)]
    pub other_ms: f64,
}

impl CpuTimes {
    /// Reads the aggregate `cpu` line of /proc/stat.
    pub fn now() -> CpuTimes {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let line = text.lines().find(|l| l.starts_with("cpu ")).unwrap_or("");
        let v: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let g = |i: usize| v.get(i).copied().unwrap_or(0.0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let ms = |t: f64| t * 1000.0 / hz;
        let (user, nice, system, idle, iowait, irq, softirq, steal) =
            (g(0), g(1), g(2), g(3), g(4), g(5), g(6), g(7));
        CpuTimes {
            user_ms: ms(user + nice),
            system_ms: ms(system),
            irq_ms: ms(irq + softirq),
            idle_ms: ms(idle + iowait),
            busy_ms: ms(user + nice + system + irq + softirq + steal),
            other_ms: 0.0,
        }
    }

    /// Like [`CpuTimes::now`], with `other_ms` = total CPU time (own and reaped
    /// children's) of user processes whose network namespace is not in `ours`.
    /// Summing the children's time too keeps processes that exit during the
    /// window (a compiler run by cargo) counted: their time moves to the parent.
    pub fn now_excluding(ours: &[u64]) -> CpuTimes {
        let mut c = CpuTimes::now();
        if ours.is_empty() {
            return c;
        }
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let mut ticks = 0.0;
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Fields after the command (which may contain spaces) start after the last ')'.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            // rest[0] is field 3 (state): field n is f[n - 3].
            let num = |n: usize| {
                f.get(n - 3)
                    .and_then(|x| x.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            const PF_KTHREAD: u64 = 0x0020_0000;
            if (num(9) as u64) & PF_KTHREAD != 0 {
                continue;
            }
            let ns = std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
            if matches!(ns, Ok(ino) if ours.contains(&ino)) {
                continue;
            }
            ticks += num(14) + num(15) + num(16) + num(17);
        }
        c.other_ms = ticks * 1000.0 / hz;
        c
    }

    /// Inode numbers of the named network namespaces.
    pub fn netns_inodes(names: &[String]) -> Vec<u64> {
        names
            .iter()
            .filter_map(|n| std::fs::metadata(format!("/var/run/netns/{n}")).ok())
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .collect()
    }

    pub fn since(&self, before: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user_ms: self.user_ms - before.user_ms,
            system_ms: self.system_ms - before.system_ms,
            irq_ms: self.irq_ms - before.irq_ms,
            idle_ms: self.idle_ms - before.idle_ms,
            busy_ms: self.busy_ms - before.busy_ms,
            other_ms: self.other_ms - before.other_ms,
        }
    }
}

/// What `rotor-bench-load` prints (one JSON line).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BenchLoadReport {
    /// `closed` or `open`.
    pub mode: String,
    pub connections: usize,
    pub streams: usize,
    pub target_rate: Option<f64>,
    /// Successful requests counted in the window.
    pub ok: u64,
    /// Failed requests (any time) and requests of the window not answered by the end.
    pub failed: u64,
    pub window_s: f64,
    pub rps: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    pub cpu: CpuTimes,
    /// Whole-machine busy CPU time per successful request, microseconds, less
    /// the CPU time of processes outside the bench (see [`CpuTimes::other_ms`]).
    pub cpu_us_per_req: f64,
    /// Whole-machine busy CPU time per request, other work included.
    pub machine_cpu_us_per_req: f64,
    pub errors: Vec<String>,
}

fn expected_len(args: &Args) -> Option<usize> {
    args.expect_len.or(match args.path.as_str() {
        "/100b" => Some(100),
        "/64k" => Some(64 * 1024),
        _ => None,
    })
}

/// Counters and the latency histogram shared by every request task.
struct Shared {
    hist: Mutex<Histogram<u64>>,
    ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            // 1 µs .. 100 s, 3 significant digits.
            hist: Mutex::new(
                Histogram::new_with_bounds(1, 100_000_000, 3).expect("histogram bounds"),
            ),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
        }
    }

    fn error(&self, e: String) {
        let mut errs = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errs.len() < 10 && !errs.contains(&e) {
            errs.push(e);
        }
    }

    fn fail(&self, e: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.error(e);
    }

    fn record_many(&self, h: &Histogram<u64>, ok: u64) {
        self.ok.fetch_add(ok, Ordering::Relaxed);
        let _ = self.hist.lock().unwrap_or_else(|p| p.into_inner()).add(h);
    }

    fn record(&self, latency: Duration) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        let us = (latency.as_nanos() as u64 / 1000).max(1);
        let _ = self
            .hist
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(us.min(100_000_000));
    }
}

struct Plan {
    uri: String,
    start: Instant,
    expect_len: Option<usize>,
    warm_end: Instant,
    end: Instant,
}

/// One connection's thread, as the main thread sees it once it is up.
struct Conn {
    handle: tokio::runtime::Handle,
    send: SendRequest<Bytes>,
    go: tokio::sync::oneshot::Sender<Arc<Plan>>,
    done: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

type Ready = Result<
    (
        tokio::runtime::Handle,
        SendRequest<Bytes>,
        tokio::sync::oneshot::Sender<Arc<Plan>>,
        tokio::sync::oneshot::Sender<()>,
    ),
    String,
>;

/// Starts one connection on its own thread with a current-thread runtime (no
/// cross-thread wake-ups inside the client), and waits until it is usable.
fn start_conn(args: &Args, shared: &Arc<Shared>) -> Result<Conn, String> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Ready>();
    let (addr, shared, closed_streams) = (
        args.addr,
        shared.clone(),
        args.rate
            .filter(|r| *r > 0.0)
            .is_none()
            .then_some(args.streams.max(1)),
    );
    let thread = std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(format!("tokio runtime: {e}")));
                return;
            }
        };
        rt.block_on(async move {
            let send = match connect(addr, shared.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let (go_tx, go_rx) = tokio::sync::oneshot::channel();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            if ready_tx
                .send(Ok((
                    tokio::runtime::Handle::current(),
                    send.clone(),
                    go_tx,
                    done_tx,
                )))
                .is_err()
            {
                return;
            }
            let Ok(plan) = go_rx.await else { return };
            match closed_streams {
                Some(m) => closed_loop(send, &plan, &shared, m).await,
                None => {
                    // Open loop: the dispatcher spawns requests onto this runtime;
                    // keep driving it until told to stop.
                    drop(send);
                    let _ = done_rx.await;
                }
            }
        });
    });
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok((handle, send, go, done))) => Ok(Conn {
            handle,
            send,
            go,
            done,
            thread,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("connection to {} not ready within 10 s", args.addr)),
    }
}

/// Runs the load and returns the report (errors are inside it).
pub fn run(args: &Args) -> BenchLoadReport {
    if args.connections > 100 {
        // Each connection takes its socket and its runtime's fds.
        crate::conn_memory::client::raise_open_files(args.connections * 4);
    }
    let shared = Arc::new(Shared::new());
    // Connect first: the clock starts once every connection is up.
    let mut conns = Vec::new();
    for _ in 0..args.connections.max(1) {
        match start_conn(args, &shared) {
            Ok(c) => conns.push(c),
            Err(e) => {
                shared.fail(e);
                return report(args, &shared, 0.0, CpuTimes::default());
            }
        }
    }
    let start = Instant::now();
    let warm_end = start + Duration::from_secs_f64(args.warmup.max(0.0));
    let end = warm_end + Duration::from_secs_f64(args.duration.max(0.1));
    let plan = Arc::new(Plan {
        uri: format!("http://{}{}", args.addr, args.path),
        expect_len: expected_len(args),
        start,
        warm_end,
        end,
    });
    // CPU sampler: /proc/stat at both window edges.
    let ours = CpuTimes::netns_inodes(&args.bench_netns);
    let sampler = std::thread::spawn(move || {
        sleep_until(warm_end);
        let a = CpuTimes::now_excluding(&ours);
        sleep_until(end);
        CpuTimes::now_excluding(&ours).since(&a)
    });
    let mut handles = Vec::new();
    let mut rest = Vec::new();
    for c in conns {
        let _ = c.go.send(plan.clone());
        handles.push((c.handle, c.send));
        rest.push((c.done, c.thread));
    }
    if let Some(rate) = args.rate.filter(|r| *r > 0.0) {
        open_loop(&handles, &plan, &shared, rate);
    }
    drop(handles);
    for (done, thread) in rest {
        let _ = done.send(());
        let _ = thread.join();
    }
    let cpu = sampler.join().unwrap_or_default();
    report(args, &shared, (end - warm_end).as_secs_f64(), cpu)
}

fn report(args: &Args, shared: &Shared, window_s: f64, cpu: CpuTimes) -> BenchLoadReport {
    let h = shared.hist.lock().unwrap_or_else(|p| p.into_inner());
    let ok = shared.ok.load(Ordering::Relaxed);
    let q = |p: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(p) as f64
        }
    };
    BenchLoadReport {
        mode: if args.rate.is_some() {
            "open".into()
        } else {
            "closed".into()
        },
        connections: args.connections,
        streams: args.streams,
        target_rate: args.rate,
        ok,
        failed: shared.failed.load(Ordering::Relaxed),
        window_s,
        rps: if window_s > 0.0 {
            ok as f64 / window_s
        } else {
            0.0
        },
        p50_us: q(0.50),
        p90_us: q(0.90),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: if h.is_empty() { 0.0 } else { h.max() as f64 },
        mean_us: if h.is_empty() { 0.0 } else { h.mean() },
        cpu,
        cpu_us_per_req: if ok > 0 {
            (cpu.busy_ms - cpu.other_ms).max(0.0) * 1000.0 / ok as f64
        } else {
            0.0
        },
        machine_cpu_us_per_req: if ok > 0 {
            cpu.busy_ms * 1000.0 / ok as f64
        } else {
            0.0
        },
        errors: shared
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

async fn connect(addr: SocketAddr, shared: Arc<Shared>) -> Result<SendRequest<Bytes>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        .handshake::<_, Bytes>(tcp)
        .await
        .map_err(|e| format!("handshake with {addr}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            shared.error(format!("connection: {e}"));
        }
    });
    // Wait for the server's SETTINGS (the connection is usable after that).
    send.ready().await.map_err(|e| format!("ready: {e}"))
}

async fn closed_loop(
    send: SendRequest<Bytes>,
    plan: &Arc<Plan>,
    shared: &Arc<Shared>,
    streams: usize,
) {
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let (send, plan, shared) = (send.clone(), plan.clone(), shared.clone());
        workers.spawn(async move {
            let mut h =
                Histogram::<u64>::new_with_bounds(1, 100_000_000, 3).expect("histogram bounds");
            let mut ok = 0;
            loop {
                let t0 = Instant::now();
                if t0 >= plan.end {
                    break;
                }
                // A request still unanswered 5 s after the window is lost (a
                // stalled stream): counted as failed, and this worker stops.
                let give_up = tokio::time::Instant::from_std(plan.end + Duration::from_secs(5));
                let Ok(res) = tokio::time::timeout_at(give_up, request(send.clone(), &plan)).await
                else {
                    shared.fail("no response 5 s after the window (stalled stream)".into());
                    break;
                };
                let t1 = Instant::now();
                match res {
                    Ok(()) if t1 >= plan.warm_end && t1 < plan.end => {
                        ok += 1;
                        let us = ((t1 - t0).as_nanos() as u64 / 1000).clamp(1, 100_000_000);
                        let _ = h.record(us);
                    }
                    Ok(()) => {}
                    Err(e) => {
                        shared.fail(e);
                        // Do not spin on a broken connection.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            shared.record_many(&h, ok);
        });
    }
    while workers.join_next().await.is_some() {}
}

fn open_loop(
    handles: &[(tokio::runtime::Handle, SendRequest<Bytes>)],
    plan: &Arc<Plan>,
    shared: &Arc<Shared>,
    rate: f64,
) {
    // The dispatcher sleeps with 1 ns timer slack so intended times are met
    // within a few microseconds.
    // SAFETY: prctl on the calling thread, no pointers involved.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
    let start = plan.start;
    let total = ((plan.end - start).as_secs_f64() * rate).floor() as u64;
    let in_flight = Arc::new(AtomicU64::new(0));
    for i in 0..total {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        sleep_until(intended);
        let (plan, shared, in_flight) = (plan.clone(), shared.clone(), in_flight.clone());
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (handle, send) = &handles[(i as usize) % handles.len()];
        let send = send.clone();
        handle.spawn(async move {
            let res = request(send, &plan).await;
            let counted = intended >= plan.warm_end;
            match res {
                Ok(()) if counted => shared.record(intended.elapsed()),
                Ok(()) => {}
                Err(e) => shared.fail(e),
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    // Requests of the window still unanswered 5 s after it count as failed.
    let drain = plan.end + Duration::from_secs(5);
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < drain {
        std::thread::sleep(Duration::from_millis(5));
    }
    let left = in_flight.load(Ordering::Relaxed);
    if left > 0 {
        shared.failed.fetch_add(left, Ordering::Relaxed);
        shared.error(format!("{left} requests unanswered 5 s after the window"));
    }
}

async fn request(send: SendRequest<Bytes>, plan: &Plan) -> Result<(), String> {
    let mut send = send.ready().await.map_err(|e| format!("ready: {e}"))?;
    let req = Request::builder()
        .method(Method::GET)
        .uri(&plan.uri)
        .body(())
        .map_err(|e| format!("request: {e}"))?;
    let (resp, _) = send
        .send_request(req, true)
        .map_err(|e| format!("send_request: {e}"))?;
    let resp = resp.await.map_err(|e| format!("response: {e}"))?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut len = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| format!("body after {len} bytes: {e}"))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        len += chunk.len();
    }
    if status != 200 {
        return Err(format!("status {status}"));
    }
    if let Some(want) = plan.expect_len {
        if len != want {
            return Err(format!("body of {len} bytes, want {want}"));
        }
    }
    Ok(())
}
