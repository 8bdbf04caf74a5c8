//! Liveness bounds that follow the machine's speed.
//!
//! A bound such as "the new endpoint gets a stream within 3 s" says that
//! something happens at all, not how fast: on a kernel booted under software
//! emulation (`cargo xtask kernels`, 10–30× slower than the host) a bound
//! tuned on the host fails although nothing is wrong. The kernel runner
//! measures the VM against the host (tests/kernels/smoke.sh, a calibration
//! run on both) and exports the ratio as `ROTOR_TIME_SCALE`; every wall-clock
//! bound in the tests goes through [`scaled`]. Unset (a normal `cargo xtask
//! test`), the scale is 1 and the bounds are the host's.
//!
//! Only bounds scale, never measurements: no test asserts speed.

use std::sync::OnceLock;
use std::time::Duration;

/// Largest scale honoured: beyond it a run is too slow to say anything.
const MAX_SCALE: f64 = 100.0;

/// `ROTOR_TIME_SCALE` (at least 1, at most 100), read once.
pub fn time_scale() -> f64 {
    static SCALE: OnceLock<f64> = OnceLock::new();
    *SCALE.get_or_init(|| parse_scale(std::env::var("ROTOR_TIME_SCALE").ok().as_deref()))
}

fn parse_scale(v: Option<&str>) -> f64 {
    v.and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite())
        .map_or(1.0, |s| s.clamp(1.0, MAX_SCALE))
}

/// `d` times the machine's time scale: a liveness bound for this machine.
pub fn scaled(d: Duration) -> Duration {
    d.mul_f64(time_scale())
}

/// How long after the start `done` first held, polling every 20 ms within
/// `limit` scaled to the machine; None if it never did.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let limit = scaled(limit);
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if done() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// [`scaled`] for bounds given in seconds as `f64` (load and tool timeouts).
pub fn scaled_secs(secs: f64) -> f64 {
    secs * time_scale()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_is_one_unless_set_and_sane() {
        assert_eq!(parse_scale(None), 1.0);
        assert_eq!(parse_scale(Some("")), 1.0);
        assert_eq!(parse_scale(Some("fast")), 1.0);
        assert_eq!(parse_scale(Some("0.3")), 1.0);
        assert_eq!(parse_scale(Some("12.5")), 12.5);
        assert_eq!(parse_scale(Some("inf")), 1.0);
        assert_eq!(parse_scale(Some("1e9")), MAX_SCALE);
    }
}
