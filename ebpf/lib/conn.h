/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* Connection, stream and upstream state shared by the verdict programs. */
#ifndef ROTOR_CONN_H
#define ROTOR_CONN_H

#include "common.h"
#include "endpoint.h"
#include "spare.h"

static __always_inline struct sock_ident *ident_of(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);

	return bpf_map_lookup_elem(&sock_idents, &cookie);
}

/* Ids are reused (not at once: registry.rs), and a socket of a connection
 * that ended can still be parsed a moment after the agent let the id go:
 * its identity must name this generation of the id, or its frames would
 * reach the next connection's client and endpoints. */
static __always_inline int ident_current(struct sock_ident *id, struct conn *c)
{
	return id->generation == c->generation;
}

static __always_inline __u64 upstream_sock_key(__u32 conn_id, __u32 slot)
{
	return ((__u64)conn_id << 32) | slot;
}

static __always_inline struct upstream *upstream_of(struct conn *c, __u32 slot)
{
	if (slot >= ROTOR_MAX_UPSTREAMS)
		return 0;
	return &c->up[slot];
}

/* Whether a new stream may go to this upstream now (the agent's
 * pick_slot asks the same). */
static __always_inline int up_takes_stream(struct upstream *up)
{
	__u32 open = up->streams;

	return up->state == UP_ACTIVE && open < up->max_streams && !(up->refused && open > 0);
}

/* Next upstream taking new streams, round robin from the connection's cursor. */
static __always_inline int pick_round_robin(struct conn *c)
{
	__u32 start = c->next;

	for (__u32 i = 0; i < ROTOR_MAX_UPSTREAMS; i++) {
		__u32 slot = (start + i) % ROTOR_MAX_UPSTREAMS;

		struct upstream *up = &c->up[slot];

		if (up_takes_stream(up)) {
			c->next = slot + 1;
			return slot;
		}
	}
	return -1;
}

/* The n-th upstream taking new streams other than `except`. */
static __always_inline int nth_taking(struct conn *c, __u32 n, __u32 except)
{
	for (__u32 slot = 0; slot < ROTOR_MAX_UPSTREAMS; slot++) {
		if (slot == except || !up_takes_stream(&c->up[slot]))
			continue;
		if (n == 0)
			return slot;
		n--;
	}
	return -1;
}

/* The second of power of two choices: another upstream taking streams,
 * drawn at random beside `rr`, the round-robin choice; -1 if none. */
static __always_inline int p2c_other(struct conn *c, int rr)
{
	__u32 taking = 0;

	for (__u32 slot = 0; slot < ROTOR_MAX_UPSTREAMS; slot++)
		taking += up_takes_stream(&c->up[slot]) ? 1 : 0;
	if (taking < 2)
		return -1;
	return nth_taking(c, bpf_get_prandom_u32() % (taking - 1), rr);
}

/*
 * Least request, as power of two choices: the round-robin choice, unless
 * another upstream drawn at random has fewer open streams. An endpoint that
 * answers in 50 ms while the others answer in 1 ms holds its streams open
 * 50 times longer, so under concurrent calls it is passed over while it has
 * more open than another; with all counts equal (one call at a time) this
 * is round robin, and the spread stays even. The agent's pick_slot asks the
 * same (client/from_client.rs).
 */
static __always_inline int pick_least_request(struct conn *c)
{
	int rr = pick_round_robin(c);

	if (rr < 0)
		return rr;
	int other = p2c_other(c, rr);

	if (other < 0)
		return rr;
	if (c->up[other & (ROTOR_MAX_UPSTREAMS - 1)].streams <
	    c->up[rr & (ROTOR_MAX_UPSTREAMS - 1)].streams)
		return other;
	return rr;
}

/*
 * Peak EWMA, as power of two choices over cost: the round-robin choice,
 * unless another upstream drawn at random costs less, a cost being the
 * endpoint's latency estimate (ewma.h, shared by every connection to it)
 * times this connection's open streams there plus one. The agent's
 * pick_slot asks the same (client/pick.rs).
 */
static __always_inline int pick_peak_ewma(struct conn *c)
{
	int rr = pick_round_robin(c);

	if (rr < 0)
		return rr;
	int other = p2c_other(c, rr);

	if (other < 0)
		return rr;
	struct upstream *o = &c->up[other & (ROTOR_MAX_UPSTREAMS - 1)];
	struct upstream *r = &c->up[rr & (ROTOR_MAX_UPSTREAMS - 1)];
	__u64 now = bpf_ktime_get_ns();

	if (endpoint_cost(o->endpoint, o->streams, now) < endpoint_cost(r->endpoint, r->streams, now))
		return other;
	return rr;
}

static __always_inline int pick_upstream(struct conn *c)
{
	if (c->policy == POLICY_LEAST_REQUEST)
		return pick_least_request(c);
	if (c->policy == POLICY_PEAK_EWMA)
		return pick_peak_ewma(c);
	return pick_round_robin(c);
}

/* Both ends have finished, or one reset it: forget the stream. The delete
 * succeeds once, so the count drops once even if both directions race. */
static __always_inline void stream_end(struct conn *c, struct stream_key *key,
				       struct stream *s, __u32 end_flag, int reset)
{
	__u32 both = STREAM_CLIENT_END | STREAM_SERVER_END;
	__u32 before = __sync_fetch_and_or(&s->flags, end_flag);
	__u32 slot = s->slot;
	__u32 endpoint = s->endpoint;

	if (!reset && ((before | end_flag) & both) != both)
		return;
	if (map_delete(&streams, key) == 0 && slot < ROTOR_MAX_UPSTREAMS) {
		endpoint_ended(endpoint);
		__sync_fetch_and_sub(&c->up[slot].streams, 1);
		if (c->flags & CONN_HOLD)
			emit_event(key->conn_id, EV_STREAM_CLOSED, slot);
	}
}

/* Frames for the client leave through A, the agent's end of the client's
 * connection, and reach C over TCP like any server's bytes. C itself never
 * joins a socket map: a socket in one reads through tcp_bpf_recvmsg, which
 * returns EAGAIN to a *blocking* read that a writer on the same socket
 * woke (its wait queue is shared), and a client whose reader thread
 * blocks while another thread writes got "Resource temporarily
 * unavailable" (split_writes.rs: 4 of 12 requests on a fresh machine). */
static __always_inline int redirect_to_client(struct __sk_buff *skb, struct conn *c, __u32 len)
{
	struct client_key key = c->client;

	stat_inc(STAT_REDIRECT_CLIENT);
	stat_add(STAT_REDIRECT_BYTES, len);
	return bpf_sk_redirect_hash(skb, &agent_socks, &key, 0);
}

static __always_inline int redirect_to_upstream(struct __sk_buff *skb, __u32 conn_id, __u32 slot,
						__u32 len)
{
	__u64 key = upstream_sock_key(conn_id, slot);

	stat_inc(STAT_REDIRECT_UP);
	stat_add(STAT_REDIRECT_BYTES, len);
	return bpf_sk_redirect_hash(skb, &upstream_socks, &key, 0);
}

/*
 * Frames for the agent go into the ingress of the source socket's tap
 * (agent_taps), a unix socket the agent reads in place of the source, and
 * into the source's own ingress only while it has none (an accepted A
 * that found no spare tap ready, until the agent made it one; a
 * generation without taps).
 *
 * The own ingress was the only way before, but it depends on the kernel.
 * On 6.18 a redirect there queues on the psock and is read as such; a
 * plain SK_PASS left the bytes counted in the TCP receive queue and the
 * socket stopped parsing (ebpf/README.md point 2). 7.3 turns that same
 * redirect into SK_PASS, whose copied_seq bookkeeping counts bytes passed
 * earlier and still unread twice: past rcv_nxt the parser is never called
 * again, and an A whose client waits for answers went deaf for good
 * (hostile_headers' HPACK bomb; ebpf/README.md, "What differs by kernel").
 * A redirect into another socket's ingress takes the same queue on every
 * kernel and leaves the source's copied_seq alone.
 *
 * `self_before` (A's only; an upstream gets its tap before it joins its
 * hash, so none of its frames goes to its own ingress): what went to the
 * own ingress before this message. The first that goes to the tap records
 * it in tap_starts, where the agent learns when to stop reading the source.
 * `tap`: 0 keeps the frame in the own ingress even if the source has a tap.
 * `spare`: A's spare tap (parse_state.spare), tried first: an A that has
 * one never needs agent_taps, and one whose agent let it go (a handover)
 * owns it no more.
 */
static __always_inline int pass_to_agent(struct __sk_buff *skb, void *map, void *key, __u32 len,
					 const struct tap_start *self_before, int tap, __u32 spare)
{
	__u64 cookie = bpf_get_socket_cookie(skb);

	stat_inc(STAT_PASS_AGENT);
	stat_add(STAT_AGENT_BYTES, len);
	if (tap && ((spare && spare_tap_redirect(skb, cookie, spare) == SK_PASS) ||
		    bpf_sk_redirect_hash(skb, &agent_taps, &cookie, BPF_F_INGRESS) == SK_PASS)) {
		if (self_before)
			map_update(&tap_starts, &cookie, self_before, BPF_NOEXIST);
		return SK_PASS;
	}
	stat_inc(STAT_OWN_INGRESS);
	bpf_sk_redirect_hash(skb, map, key, BPF_F_INGRESS);
	return SK_PASS; /* not in the map (yet): plain pass */
}

/* `st`: A's parse state, none if it has none; `counted`: this message is
 * counted in st->passed (already). */
static __always_inline int pass_to_agent_from_client(struct __sk_buff *skb, __u32 len,
						     struct parse_state *st, int counted)
{
	struct tap_start before = {};

	if (st) {
		before.messages = st->passed - (counted ? 1 : 0);
		/* the verdict has moved next_seq past this message already */
		before.bytes = st->next_seq - st->first_seq - st->len;
	}
	struct client_key key = {
		.client_port = bpf_ntohl(skb->remote_port),
		.agent_port = skb->local_port,
	};

	/* A is the agent's accepted socket: IPv4 from its IPv4 listener (a
	 * dual-stack client's ::ffff:VIP lands there too), IPv6 only from its
	 * IPV6_V6ONLY listener; keyed as sockops keyed it (rotor.h). */
	if (skb->family == AF_INET6) {
		key.client_ip[0] = CTX_WORD(skb->remote_ip6[0]);
		key.client_ip[1] = CTX_WORD(skb->remote_ip6[1]);
		key.client_ip[2] = CTX_WORD(skb->remote_ip6[2]);
		key.client_ip[3] = CTX_WORD(skb->remote_ip6[3]);
		key.agent_ip[0] = CTX_WORD(skb->local_ip6[0]);
		key.agent_ip[1] = CTX_WORD(skb->local_ip6[1]);
		key.agent_ip[2] = CTX_WORD(skb->local_ip6[2]);
		key.agent_ip[3] = CTX_WORD(skb->local_ip6[3]);
	} else {
		ip_mapped(key.client_ip, skb->remote_ip4);
		ip_mapped(key.agent_ip, skb->local_ip4);
	}

	/* Without a parse state (parse_states was full) nothing counts what
	 * went where, so the agent could not tell when A's own ingress is read
	 * out: such an A keeps its own ingress, tap or not. */
	return pass_to_agent(skb, &agent_socks, &key, len, &before, st != NULL, st ? st->spare : 0);
}

static __always_inline int pass_to_agent_from_upstream(struct __sk_buff *skb, __u32 conn_id, __u32 slot,
						       __u32 len)
{
	__u64 key = upstream_sock_key(conn_id, slot);

	return pass_to_agent(skb, &upstream_socks, &key, len, NULL, 1, 0);
}

#endif
