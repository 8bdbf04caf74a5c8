/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Per-endpoint counters (`endpoint_stats`): the verdicts count where they
 * see a stream open, answer, end or reset, and the bytes they carry; the
 * agent adds what it carries itself (agent/metrics_counts.rs) and sums both.
 */
#ifndef ROTOR_ENDPOINT_H
#define ROTOR_ENDPOINT_H

#include "common.h"
#include "ewma.h"

/* log2 bucket of a time to first byte (rotor.h, ROTOR_TTFB_BUCKETS), by
 * halving without a loop: bit length of ns >> 10. */
static __always_inline __u32 ttfb_bucket(__u64 ns)
{
	__u64 v = ns >> 10;
	__u32 b = 0;

	if (v >> 32) {
		b += 32;
		v >>= 32;
	}
	if (v >> 16) {
		b += 16;
		v >>= 16;
	}
	if (v >> 8) {
		b += 8;
		v >>= 8;
	}
	if (v >> 4) {
		b += 4;
		v >>= 4;
	}
	if (v >> 2) {
		b += 2;
		v >>= 2;
	}
	if (v >> 1) {
		b += 1;
		v >>= 1;
	}
	b += v;
	return b < ROTOR_TTFB_BUCKETS ? b : ROTOR_TTFB_BUCKETS - 1;
}

static __always_inline void endpoint_opened(__u32 endpoint)
{
	struct endpoint_stats *e = endpoint_stats_of(endpoint);

	if (e)
		__sync_fetch_and_add(&e->opened, 1);
}

static __always_inline void endpoint_ended(__u32 endpoint)
{
	struct endpoint_stats *e = endpoint_stats_of(endpoint);

	if (e)
		__sync_fetch_and_add(&e->ended, 1);
}

static __always_inline void endpoint_bytes(__u32 endpoint, int response, __u32 len)
{
	struct endpoint_stats *e = endpoint_stats_of(endpoint);

	if (!e)
		return;
	if (response)
		__sync_fetch_and_add(&e->resp_bytes, len);
	else
		__sync_fetch_and_add(&e->req_bytes, len);
}

/* The stream's first response HEADERS: answered, and timed if the stream
 * was stamped when it opened. */
static __always_inline void endpoint_answered(__u32 endpoint, __u64 opened_ns)
{
	struct endpoint_stats *e = endpoint_stats_of(endpoint);

	if (!e)
		return;
	__sync_fetch_and_add(&e->answered, 1);
	if (!opened_ns)
		return;
	__u64 now = bpf_ktime_get_ns();
	__u64 ns = now > opened_ns ? now - opened_ns : 0;

	__u32 b = ttfb_bucket(ns);

	/* Kept opaque, so the mask stays: clang drops it as redundant after
	 * the bound, and 6.1's verifier, which lost the bound across the
	 * select, refused the index ("unbounded min value"). */
	asm volatile("" : "+r"(b));
	__sync_fetch_and_add(&e->ttfb[b & (ROTOR_TTFB_BUCKETS - 1)], 1);
	__sync_fetch_and_add(&e->ttfb_sum_ns, ns);
	endpoint_latency_observe(endpoint, now, ns);
}

static __always_inline void endpoint_reset(__u32 endpoint, __u32 side, __u32 code)
{
	struct endpoint_stats *e = endpoint_stats_of(endpoint);
	__u32 i = code < ROTOR_RESET_CODES - 1 ? code : ROTOR_RESET_CODES - 1;

	if (!e)
		return;
	/* as in endpoint_answered: the masks must reach the verifier */
	asm volatile("" : "+r"(i), "+r"(side));
	__sync_fetch_and_add(&e->resets[side & 1][i & (ROTOR_RESET_CODES - 1)], 1);
}

#endif
