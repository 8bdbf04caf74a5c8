/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* Spare taps: an accepted socket's tap from its first byte (maps.h). */
#ifndef ROTOR_SPARE_H
#define ROTOR_SPARE_H

#include "common.h"

static __always_inline __u64 *spare_owner_of(__u32 spare)
{
	__u32 index = spare - 1;

	if (!spare)
		return 0;
	return bpf_map_lookup_elem(&spare_owner, &index);
}

/* sockops, at A's ESTABLISHED: index + 1 of a ready tap, now A's; 0 when
 * none is ready (the agent is behind, or this generation keeps none). */
static __always_inline __u32 spare_tap_take(__u64 cookie)
{
	__u32 index;

	if (map_pop(&spare_ready, &index) < 0) {
		stat_inc(STAT_SPARE_TAP_NONE);
		return 0;
	}
	__u64 *owner = spare_owner_of(index + 1);

	/* the agent pushes only indexes it sized the maps for */
	if (!owner)
		return 0;
	*owner = cookie;
	return index + 1;
}

/* A could not be taken (parse_states or agent_socks full): no frame went
 * to the tap, which is as fresh as when the agent made it. */
static __always_inline void spare_tap_unused(__u32 spare)
{
	__u64 *owner = spare_owner_of(spare);
	__u32 index = spare - 1;

	if (!owner)
		return;
	*owner = 0;
	map_push(&spare_ready, &index, 0);
}

/* A closed. If it still owns its tap the agent never took it (or never
 * will: it read A out and let go at a handover, which swaps first), and
 * the tap may hold A's frames: the agent replaces it. */
static __always_inline void spare_tap_closed(__u64 cookie, __u32 spare)
{
	__u64 *owner = spare_owner_of(spare);
	__u32 index = spare - 1;

	if (owner && __sync_val_compare_and_swap(owner, cookie, 0) == cookie)
		map_push(&spare_dropped, &index, 0);
}

/* The verdict: SK_PASS once the frame is on its way to A's spare tap, as
 * long as A owns it. */
static __always_inline int spare_tap_redirect(struct __sk_buff *skb, __u64 cookie, __u32 spare)
{
	__u64 *owner = spare_owner_of(spare);

	if (!owner || *owner != cookie)
		return SK_DROP;
	return bpf_sk_redirect_map(skb, &spare_taps, spare - 1, BPF_F_INGRESS);
}

#endif
