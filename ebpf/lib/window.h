/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * A client's connection WINDOW_UPDATE, handed to an endpoint by the kernel.
 *
 * Each endpoint has a connection window of its own, which the agent grants
 * as the client's window allows (client/grants.rs). Through the agent alone,
 * every connection WINDOW_UPDATE of the client was a wake-up of the agent
 * and a WINDOW_UPDATE through the injector before any endpoint could send
 * more. A client on HTTP/2's default 64 KiB windows (h2load -w 16 -W 16,
 * 64 KiB responses) sends one per 32 KiB it reads, so most of its
 * responses waited for the agent: 0.28x the direct path's req/s (README,
 * Benchmark). Here the frame itself goes to one endpoint with streams
 * open, as the 13 bytes the client wrote; the increment is the client's
 * new window, so the endpoints' windows together follow the client's.
 */
#ifndef ROTOR_WINDOW_H
#define ROTOR_WINDOW_H

#include "conn.h"

/* Larger windows go through the agent, which answers one past 2^31-1
 * with FLOW_CONTROL_ERROR (RFC 9113 6.9.1); below it no endpoint's window
 * can pass that bound either, since credit_room never exceeds 1 MiB. */
#define ROTOR_KERNEL_CREDIT_WINDOW (1U << 30)

/*
 * The upstream to take `inc`: the one with streams open and the most
 * credit_room, which the agent sets to what the endpoint may still be
 * granted (1 MiB less what it has not used) and the kernel lowers as it
 * hands on increments. -1 leaves the frame to the agent:
 *  - an endpoint's frames wait in the agent for this very window (a
 *    divert, upstream_skb.c): the agent must wake to send them;
 *  - no endpoint has streams open, or none has room for the increment
 *    (the first WINDOW_UPDATE of a client that opens a 1 GiB window is
 *    the agent's to share out, as before).
 */
static __always_inline int window_credit_target(struct conn *c, __u32 inc)
{
	int best = -1;
	__u32 most = 0;

	for (__u32 slot = 0; slot < ROTOR_MAX_UPSTREAMS; slot++) {
		struct upstream *up = &c->up[slot];
		__u32 room = up->credit_room;

		if (up->diverted)
			return -1;
		if (up->state == UP_EMPTY || !up->streams || room < inc || room <= most)
			continue;
		best = slot;
		most = room;
	}
	return best;
}

/* Takes `inc` from the target's room, or -1 if the agent changed it since
 * it was read (the agent swaps it to 0 before it counts what was taken). */
static __always_inline int take_credit_room(struct upstream *up, __u32 inc)
{
	__u32 room = up->credit_room;

	if (room < inc)
		return -1;
	if (__sync_val_compare_and_swap(&up->credit_room, room, room - inc) != room)
		return -1;
	return 0;
}

/* The slot whose endpoint gets the client's connection WINDOW_UPDATE of
 * `inc` (already added to client_limit), or -1 for the agent. */
static __always_inline int window_credit(struct conn *c, __u32 inc)
{
	__u64 recv = c->client_recv, limit = c->client_limit;

	if (!inc || limit < recv || limit - recv > ROTOR_KERNEL_CREDIT_WINDOW)
		return -1;
	int slot = window_credit_target(c, inc);

	if (slot < 0 || take_credit_room(&c->up[slot & (ROTOR_MAX_UPSTREAMS - 1)], inc) < 0)
		return -1;
	stat_inc(STAT_WINDOW_CREDITS);
	return slot;
}

#endif
