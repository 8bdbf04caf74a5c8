/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Verdict on Uk (bytes an endpoint sent): stream frames go to the ingress
 * of the client socket; stream-0 frames go to the agent, which is the
 * endpoint's peer for the connection.
 */
#include "lib/h2.h"
#include "lib/conn.h"

/* Every message this upstream hands the agent is counted, so the agent can
 * say how many it has handled when it asks to end a divert. */
static __always_inline int to_agent(struct __sk_buff *skb, struct parse_state *st, struct upstream *up,
				    __u32 conn_id, __u32 slot)
{
	/* the agent reads a batch as the frames it is made of */
	up->passed += st->kind == MSG_FRAME_BATCH ? st->batch.frames : 1;
	if ((st->kind == MSG_FRAME || st->kind == MSG_FRAME_BATCH) && st->stream != 0)
		up->last_diverted = up->passed;
	return pass_to_agent_from_upstream(skb, conn_id, slot, st->len);
}

static __always_inline int divert(struct __sk_buff *skb, struct parse_state *st, struct upstream *up,
				  __u32 conn_id, __u32 slot)
{
	/* Once one frame of this upstream waits in the agent, every later one
	 * follows it until the agent has sent them all on and says so. */
	up->diverted = 1;
	stat_inc(STAT_DIVERT);
	emit_event(conn_id, EV_DIVERTED, slot);
	return to_agent(skb, st, up, conn_id, slot);
}

/* The divert ends once the agent asked for it (through the injector, so
 * everything it sent before is queued on the client) and had by then
 * handled every stream frame this upstream handed it. */
static __always_inline int still_diverted(struct upstream *up)
{
	if (!up->diverted)
		return 0;
	if (up->release && (__s32)(up->consumed - up->last_diverted) >= 0) {
		up->release = 0;
		up->diverted = 0;
		return 0;
	}
	return 1;
}

/* Takes n bytes of the client's connection window for DATA going to it, or
 * nothing and returns 0 if the window cannot take them all. */
static __always_inline int take_client_window(struct conn *c, struct upstream *up, __u32 conn_id,
					      __u32 slot, __u64 n)
{
	__u64 recv = __sync_fetch_and_add(&c->client_recv, n) + n;

	if (recv > c->client_limit) {
		__sync_fetch_and_sub(&c->client_recv, n);
		return 0;
	}
	__u64 resp = __sync_fetch_and_add(&up->resp_data, n) + n;

	if (resp >= up->resp_notify) {
		up->resp_notify = ~0ULL;
		emit_event(conn_id, EV_RESP_DATA, slot);
	}
	return 1;
}

/* A stream frame on its way to the client: its endpoint's counts, and the
 * stream's end. `off` is where the frame starts in the skb. */
static __always_inline void carry_frame(struct __sk_buff *skb, struct conn *c, struct upstream *up,
					__u32 conn_id, struct frame_header *fh, __u32 off)
{
	struct stream_key key = { .conn_id = conn_id, .stream = fh->stream };
	struct stream *s = bpf_map_lookup_elem(&streams, &key);

	if (!s)
		return;
	__u32 endpoint = s->endpoint;

	endpoint_bytes(endpoint, 1, 9 + fh->len);
	/* the flag decides once, should the agent's path race us */
	if (fh->type == H2_HEADERS && !(s->flags & STREAM_ANSWERED) &&
	    !(__sync_fetch_and_or(&s->flags, STREAM_ANSWERED) & STREAM_ANSWERED))
		endpoint_answered(endpoint, s->opened_ns);
	if (fh->type == H2_RST_STREAM) {
		__u32 code = rst_stream_code(skb, off, fh->len);

		endpoint_reset(endpoint, RESET_SIDE_ENDPOINT, code);
		/* before the end frees the count and wakes waiting streams */
		if (code == H2_REFUSED_STREAM)
			up->refused = 1;
		stream_end(c, &key, s, STREAM_SERVER_END, 1);
	} else if ((fh->type == H2_DATA || fh->type == H2_HEADERS) &&
		   (fh->flags & H2_FLAG_END_STREAM)) {
		up->refused = 0;
		stream_end(c, &key, s, STREAM_SERVER_END, 0);
	}
}

struct carry_walk {
	struct __sk_buff *skb;
	struct conn *c;
	struct upstream *up;
	__u32 conn_id;
	__u32 off;
};

static long carry_step(__u32 i __attribute__((unused)), void *ctx)
{
	struct carry_walk *w = ctx;
	struct frame_header fh;

	if (load_frame_header(w->skb, w->off, &fh) < 0)
		return 1;
	carry_frame(w->skb, w->c, w->up, w->conn_id, &fh, w->off);
	w->off += 9 + fh.len;
	return 0;
}

/* The parser made the batch of whole stream frames and counted its DATA;
 * the client's window takes all of it or the agent gets the whole batch,
 * and each frame's accounting follows in order. A bpf_loop callback, not a
 * loop: unrolled, or as a bounded loop of 32, this program took the 6.18
 * verifier past its 1,000,000 instructions. */
static __always_inline int carry_batch(struct __sk_buff *skb, struct parse_state *st,
				       struct conn *c, struct upstream *up, __u32 conn_id, __u32 slot)
{
	if (st->batch.data && !take_client_window(c, up, conn_id, slot, st->batch.data))
		return divert(skb, st, up, conn_id, slot);
	struct carry_walk w = { .skb = skb, .c = c, .up = up, .conn_id = conn_id, .off = st->msg_off };

	bpf_loop(st->batch.frames, carry_step, &w, 0);
	stat_inc(STAT_BATCHES);
	stat_add(STAT_BATCHED_FRAMES, st->batch.frames);
	return redirect_to_client(skb, c, st->len);
}

SEC("sk_skb/stream_verdict")
int rotor_upstream_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct parse_state *st = take_message(skb);
	struct sock_ident *id = bpf_map_lookup_elem(&sock_idents, &cookie);

	if (!st || !id || id->role != ROLE_UPSTREAM)
		return SK_PASS;
	__u32 conn_id = id->conn_id;
	__u32 slot = id->slot & (ROTOR_MAX_UPSTREAMS - 1);
	struct conn *c = bpf_map_lookup_elem(&conns, &conn_id);

	if (!c)
		return pass_to_agent_from_upstream(skb, conn_id, slot, st->len);
	/* (conn_id, slot) in upstream_socks is the id's current upstream by
	 * now: an old socket's frames go nowhere. */
	if (!ident_current(id, c) || unknown_frame(st))
		return SK_DROP;
	struct upstream *up = &c->up[slot];
	__u32 inc = connection_window_increment(skb, st);

	if (inc)
		__sync_fetch_and_add(&up->req_limit, inc);
	/* An endpoint's GOAWAY stops new streams to it the moment it is
	 * parsed, as it would in a client connected to it directly. Waiting for
	 * the agent to read the frame widened the race by a wake-up: grpc-core,
	 * shutting down, answers a stream that arrives between its first GOAWAY
	 * (last id 2^31-1) and its final one with grpc-status CANCELLED, and
	 * under load the client verdict sent it streams for milliseconds after
	 * its first GOAWAY (failures::backend_graceful_shutdown_*). The agent
	 * still refuses the streams above the final GOAWAY's last id. */
	if (st->kind == MSG_FRAME && st->stream == 0 && st->type == H2_GOAWAY)
		__sync_val_compare_and_swap(&up->state, UP_ACTIVE, UP_DRAINING);
	if (st->kind == MSG_FRAME_BATCH && !still_diverted(up))
		return carry_batch(skb, st, c, up, conn_id, slot);
	if (st->kind != MSG_FRAME || st->stream == 0 || !carriable_stream_frame(st) ||
	    still_diverted(up))
		return to_agent(skb, st, up, conn_id, slot);
	if (st->type == H2_DATA && !take_client_window(c, up, conn_id, slot, st->len - 9))
		return divert(skb, st, up, conn_id, slot);
	struct frame_header fh = { .len = st->len - 9, .type = st->type, .flags = st->first_flags,
				   .stream = st->stream };

	carry_frame(skb, c, up, conn_id, &fh, st->msg_off);
	return redirect_to_client(skb, c, st->len);
}
