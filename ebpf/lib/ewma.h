/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Peak EWMA of time to first byte, as Finagle and Linkerd keep it: an
 * answer slower than the estimate becomes the estimate at once; a faster
 * one pulls it down with a weight that grows with the time since the
 * last answer (10 s time constant), so a spike lasts seconds whatever the
 * request rate. Read, the estimate decays toward 0 with the same time
 * constant, so an endpoint passed over because it was slow is probed
 * again later. Integers only (rotor.h ROTOR_EWMA_*); the agent's mirror,
 * unit-tested, is userspace/src/model/peak_ewma.rs.
 */
#ifndef ROTOR_EWMA_H
#define ROTOR_EWMA_H

#include "common.h"

/* ROTOR_EWMA_ONE * 2^(-dt / half-life) (rotor.h). r < half-life < 2^33,
 * so r << 24 < 2^57; p < 2^49; (ONE >> q) * (p >> 24) <= 2^48. */
static __always_inline __u64 ewma_weight(__u64 dt)
{
	__u64 q = dt / ROTOR_EWMA_HALF_LIFE_NS;

	if (q > 24)
		return 0;
	__u64 r = dt - q * ROTOR_EWMA_HALF_LIFE_NS;
	__u64 x = (r << 24) / ROTOR_EWMA_HALF_LIFE_NS;
	__u64 p = (1ULL << 48) - ROTOR_EWMA_LN2 * x + ROTOR_EWMA_SQ * ((x * x) >> 24);

	return ((ROTOR_EWMA_ONE >> q) * (p >> 24)) >> 24;
}

/* The estimate after an answer that took rtt, dt after the last one. */
static __always_inline __u64 ewma_observe(__u64 ewma, __u64 dt, __u64 rtt)
{
	if (rtt > ROTOR_EWMA_MAX_NS)
		rtt = ROTOR_EWMA_MAX_NS;
	if (rtt >= ewma)
		return rtt;
	__u64 w = ewma_weight(dt);

	/* at least the least weight: answers closer together than the
	 * weight's resolution must still pull a peak down */
	if (w >= ROTOR_EWMA_ONE)
		w = ROTOR_EWMA_ONE - 1;
	return (ewma * w + rtt * (ROTOR_EWMA_ONE - w)) / ROTOR_EWMA_ONE;
}

/* The estimate as read at `now`: decayed since it was set. */
static __always_inline __u64 ewma_read(__u64 ewma, __u64 at, __u64 now)
{
	return ewma * ewma_weight(now > at ? now - at : 0) / ROTOR_EWMA_ONE;
}

/* What a new stream costs on an endpoint with `open` streams open. */
static __always_inline __u64 ewma_cost(__u64 estimate, __u32 open)
{
	__u64 n = open < ROTOR_EWMA_MAX_OPEN ? open : ROTOR_EWMA_MAX_OPEN;

	if (!estimate)
		return n ? ROTOR_EWMA_UNPROBED + n : 0;
	return estimate * (n + 1);
}

static __always_inline void endpoint_latency_observe(__u32 endpoint, __u64 now, __u64 rtt)
{
	struct endpoint_latency *l = bpf_map_lookup_elem(&endpoint_latency, &endpoint);

	if (!l)
		return;
	__u64 at = l->at_ns;

	l->ewma_ns = ewma_observe(l->ewma_ns, now > at ? now - at : 0, rtt);
	l->at_ns = now;
}

static __always_inline __u64 endpoint_cost(__u32 endpoint, __u32 open, __u64 now)
{
	struct endpoint_latency *l = bpf_map_lookup_elem(&endpoint_latency, &endpoint);

	if (!l)
		return ewma_cost(0, open);
	return ewma_cost(ewma_read(l->ewma_ns, l->at_ns, now), open);
}

#endif
