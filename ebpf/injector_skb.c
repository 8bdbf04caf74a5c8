/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Verdict on J, the agent's injector socket. Every byte the agent sends to
 * a client or an upstream comes through here, so it joins the same per-
 * socket queue as the frames the kernel redirects: whole frames, in order,
 * never inside another frame (ebpf/README.md, R3).
 * A ROTOR_ROUTE frame names the target of the frames after it and may carry
 * an action, applied after every frame before it has been queued.
 */
#include "lib/h2.h"
#include "lib/conn.h"

static __always_inline void apply_action(struct route *r)
{
	__u32 conn_id = r->conn_id;
	struct conn *c = bpf_map_lookup_elem(&conns, &conn_id);

	if (!c || r->generation != c->generation)
		return;
	if (r->action == ROUTE_ACT_GATE) {
		c->consumed = r->arg;
		__sync_fetch_and_or(&c->flags, CONN_GATE_OPEN);
	} else if (r->action == ROUTE_ACT_RELEASE_UPSTREAM && r->target > 0) {
		struct upstream *up = &c->up[(r->target - 1) & (ROTOR_MAX_UPSTREAMS - 1)];

		up->consumed = r->arg;
		__sync_fetch_and_or(&up->release, 1);
	} else if (r->action == ROUTE_ACT_UNHOLD) {
		c->hold_consumed = r->arg;
		__sync_fetch_and_or(&c->flags, CONN_UNHOLD);
	} else if (r->action == ROUTE_ACT_RELEASE_STREAM) {
		struct stream_key key = { .conn_id = conn_id, .stream = r->stream };
		struct stream *s = bpf_map_lookup_elem(&streams, &key);

		if (s) {
			s->consumed = r->arg;
			__sync_fetch_and_or(&s->flags, STREAM_RELEASE);
		}
	}
}

SEC("sk_skb/stream_verdict")
int rotor_injector_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct parse_state *st = take_message(skb);

	if (!st || st->kind != MSG_FRAME)
		return SK_DROP;
	if (st->type == ROTOR_ROUTE) {
		struct route r;

		if (st->len != 9 + sizeof(r) ||
		    bpf_skb_load_bytes(skb, st->msg_off + 9, &r, sizeof(r)) < 0)
			return SK_DROP;
		map_update(&routes, &cookie, &r, BPF_ANY);
		apply_action(&r);
		return SK_DROP;
	}
	struct route *r = bpf_map_lookup_elem(&routes, &cookie);

	if (!r)
		return SK_DROP;
	__u32 conn_id = r->conn_id;
	struct conn *c = bpf_map_lookup_elem(&conns, &conn_id);

	/* queued for a connection that ended before it got here */
	if (!c || r->generation != c->generation)
		return SK_DROP;
	if (r->target == ROUTE_CLIENT)
		return redirect_to_client(skb, c, st->len);
	return redirect_to_upstream(skb, conn_id, (r->target - 1) & (ROTOR_MAX_UPSTREAMS - 1), st->len);
}
