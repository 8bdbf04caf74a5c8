//! The peak-EWMA policy's arithmetic, as ebpf/lib/ewma.h does it in the
//! kernel, step for step in the same integers: the agent's own picks
//! (agent/client/pick.rs) and the answers it carries use these, and the
//! unit tests here are the tests of the kernel's arithmetic too.

use crate::ebpf::abi::{
    ROTOR_EWMA_HALF_LIFE_NS, ROTOR_EWMA_LN2, ROTOR_EWMA_MAX_NS, ROTOR_EWMA_MAX_OPEN,
    ROTOR_EWMA_ONE, ROTOR_EWMA_SQ, ROTOR_EWMA_UNPROBED,
};

const HALF_LIFE: u64 = ROTOR_EWMA_HALF_LIFE_NS;
const ONE: u64 = ROTOR_EWMA_ONE as u64;

/// `ONE * 2^(-dt / half-life)`: halvings by shift, and between them
/// `1 - ln2 f + (ln2 - 1/2) f^2` in 2^-24ths (rotor.h).
pub fn weight(dt: u64) -> u64 {
    let q = dt / HALF_LIFE;
    if q > 24 {
        return 0;
    }
    let r = dt - q * HALF_LIFE;
    let x = (r << 24) / HALF_LIFE;
    let p = (1u64 << 48) - ROTOR_EWMA_LN2 as u64 * x + ROTOR_EWMA_SQ as u64 * ((x * x) >> 24);
    ((ONE >> q) * (p >> 24)) >> 24
}

/// The estimate after an answer that took `rtt`, `dt` after the last one.
pub fn observe(ewma: u64, dt: u64, rtt: u64) -> u64 {
    let rtt = rtt.min(ROTOR_EWMA_MAX_NS);
    if rtt >= ewma {
        return rtt;
    }
    let w = weight(dt).min(ONE - 1);
    (ewma * w + rtt * (ONE - w)) / ONE
}

/// The estimate as read at `now`, decayed since it was set at `at`.
pub fn read(ewma: u64, at: u64, now: u64) -> u64 {
    ewma * weight(now.saturating_sub(at)) / ONE
}

/// What a new stream costs on an endpoint with `open` streams open.
pub fn cost(estimate: u64, open: u32) -> u64 {
    let n = u64::from(open).min(ROTOR_EWMA_MAX_OPEN as u64);
    if estimate == 0 {
        return if n > 0 { ROTOR_EWMA_UNPROBED + n } else { 0 };
    }
    estimate * (n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    #[test]
    fn the_weight_halves_every_half_life_and_stays_near_the_curve() {
        assert_eq!(weight(0), ONE);
        assert_eq!(weight(HALF_LIFE), ONE / 2);
        assert_eq!(weight(2 * HALF_LIFE), ONE / 4);
        assert_eq!(weight(24 * HALF_LIFE), 1);
        assert_eq!(weight(25 * HALF_LIFE), 0);
        assert_eq!(weight(u64::MAX), 0);
        // against exp(-dt / 10 s), in steps of 100 ms over a minute
        for i in 0..600u64 {
            let dt = i * 100 * MS;
            let exact = (-(dt as f64) / 10e9).exp();
            let got = weight(dt) as f64 / ONE as f64;
            assert!((got - exact).abs() < 0.007, "dt {dt}: {got} vs {exact}");
        }
        // never grows with time
        let mut last = ONE;
        for i in 0..2000u64 {
            let w = weight(i * 73 * MS);
            assert!(w <= last);
            last = w;
        }
    }

    #[test]
    fn a_slower_answer_is_the_estimate_at_once() {
        assert_eq!(observe(0, 0, 5 * MS), 5 * MS, "the first answer");
        assert_eq!(observe(MS, 1, 50 * MS), 50 * MS, "a peak");
        assert_eq!(observe(MS, 0, u64::MAX), ROTOR_EWMA_MAX_NS, "capped");
    }

    #[test]
    fn a_faster_answer_pulls_by_the_time_since_the_last() {
        // one time constant later, about 1/e of the old estimate is left
        let e = observe(50 * MS, 10 * S, MS);
        let left = (e - MS) as f64 / (49 * MS) as f64;
        assert!((0.36..0.375).contains(&left), "{left}");
        // a minute later the old estimate is almost gone
        assert!(observe(50 * MS, 60 * S, MS) < 2 * MS);
    }

    #[test]
    fn a_peak_decays_with_time_whatever_the_answer_rate() {
        // 50 ms peak, then 1 ms answers every 100 us or every 10 ms for 10 s
        for gap in [100_000u64, 10 * MS] {
            let mut e = 50 * MS;
            let mut t = 0;
            while t < 10 * S {
                e = observe(e, gap, MS);
                t += gap;
            }
            assert!((15 * MS..25 * MS).contains(&e), "gap {gap}: {e}");
        }
        // answers closer than the weight's resolution still pull it down
        let e = (0..1000).fold(50 * MS, |e, _| observe(e, 1, MS));
        assert!(e < 50 * MS);
    }

    #[test]
    fn read_decays_an_estimate_left_alone() {
        assert_eq!(read(50 * MS, 7, 7), 50 * MS);
        assert_eq!(read(50 * MS, 0, HALF_LIFE), 25 * MS);
        assert_eq!(read(50 * MS, 10, 5), 50 * MS, "a clock read before `at`");
        assert_eq!(read(50 * MS, 0, 200 * S), 0);
    }

    #[test]
    fn cost_is_the_estimate_times_open_plus_one() {
        assert_eq!(cost(2 * MS, 0), 2 * MS);
        assert_eq!(cost(2 * MS, 3), 8 * MS);
        // a slow endpoint with nothing open costs more than a fast one with
        // 40 open: it is passed over until the fast one has 50
        assert!(cost(50 * MS, 0) > cost(MS, 40));
        assert!(cost(50 * MS, 0) < cost(MS, 50));
        // no estimate: free with nothing open (probed), then one at a time
        assert_eq!(cost(0, 0), 0);
        assert!(cost(0, 1) > cost(ROTOR_EWMA_MAX_NS, 1000));
        assert!(cost(0, 2) > cost(0, 1));
        // the largest cost does not wrap
        let top = cost(ROTOR_EWMA_MAX_NS, u32::MAX);
        assert!(top > cost(ROTOR_EWMA_MAX_NS, 1000));
        assert!(cost(0, u32::MAX) > top);
    }
}
