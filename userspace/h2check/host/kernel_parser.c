/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The kernel's frame parser (ebpf/lib/h2.h, unchanged) compiled for the
 * host: the helpers it calls serve one emulated socket, so a Rust test or
 * fuzz target can play strparser and compare the messages with the agent's
 * MessageReader (src/kernel.rs). Helpers behave as the kernel's do where
 * the parser can tell: bpf_skb_load_bytes fails (-EFAULT, zeroed buffer)
 * outside the skb, a lookup of a missing map entry returns NULL. An
 * upstream socket's connection has a client window with `room` bytes left,
 * which the parser's batches of DATA must keep within.
 */
#include <stdlib.h>
#include <string.h>

#include "h2.h"

struct host_socket {
	struct parse_state st;
	int have_state;
	/* sock_ident.role as the agent would have named the socket; 0: not
	 * named yet (a client socket before the agent's accept) */
	__u32 role;
	struct sock_ident ident;
	struct conn conn;
	__u64 stats[STAT_MAX];
};

/* What the verdict sees of the message the parser found. */
struct host_message {
	__u32 kind;
	__u32 len;
	__u32 type;
	__u32 stream;
	__u32 first_flags; /* MSG_FRAME_BATCH: batch.data */
	__u32 flags;       /* MSG_FRAME_BATCH: batch.frames */
};

struct host_skb {
	struct __sk_buff skb; /* first: the parser's pointer is this struct's */
	const __u8 *data;
};

/* The socket whose program runs: tests run on several threads. */
static _Thread_local struct host_socket *current;

void *bpf_map_lookup_elem(void *map, const void *key)
{
	if (map == &parse_states)
		return current->have_state ? &current->st : NULL;
	if (map == &sock_idents) {
		if (!current->role)
			return NULL;
		current->ident.role = current->role;
		return &current->ident;
	}
	if (map == &conns)
		return current->role == ROLE_UPSTREAM ? &current->conn : NULL;
	if (map == &stats) {
		__u32 i = *(const __u32 *)key;

		return i < STAT_MAX ? &current->stats[i] : NULL;
	}
	abort(); /* h2.h touched a map this stand-in does not serve */
}

long bpf_map_update_elem(void *map, const void *key, const void *value, __u64 flags)
{
	(void)key;
	if (map != &parse_states)
		abort();
	if (flags == BPF_NOEXIST && current->have_state)
		return -17; /* -EEXIST */
	memcpy(&current->st, value, sizeof(current->st));
	current->have_state = 1;
	return 0;
}

long bpf_skb_load_bytes(const void *skb, __u32 offset, void *to, __u32 len)
{
	const struct host_skb *h = skb;

	if (offset > h->skb.len || len > h->skb.len - offset) {
		memset(to, 0, len);
		return -14; /* -EFAULT */
	}
	memcpy(to, h->data + offset, len);
	return 0;
}

__u64 bpf_get_socket_cookie(void *ctx)
{
	(void)ctx;
	return 1;
}

void *bpf_ringbuf_reserve(void *ringbuf, __u64 size, __u64 flags)
{
	(void)ringbuf, (void)size, (void)flags;
	abort();
}

void bpf_ringbuf_submit(void *data, __u64 flags)
{
	(void)data, (void)flags;
	abort();
}

long bpf_loop(__u32 nr_loops, void *callback_fn, void *callback_ctx, __u64 flags)
{
	long (*step)(__u32, void *) = (long (*)(__u32, void *))callback_fn;
	__u32 i;

	(void)flags;
	for (i = 0; i < nr_loops; i++)
		if (step(i, callback_ctx))
			return i + 1;
	return i;
}

struct host_socket *rotor_host_socket_new(__u32 role, __u64 room)
{
	struct host_socket *s = calloc(1, sizeof(*s));

	if (s) {
		s->role = role;
		s->conn.client_limit = room;
	}
	return s;
}

void rotor_host_socket_free(struct host_socket *s)
{
	free(s);
}

/* The stream parser on an skb of `len` bytes whose first byte has TCP
 * sequence number `seq` (cb[0]). */
int rotor_host_parse(struct host_socket *s, const __u8 *data, __u32 len, __u32 seq)
{
	struct host_skb h = { .data = data };

	h.skb.len = len;
	h.skb.cb[0] = seq;
	current = s;
	int ret = parse_frames(&h.skb);

	current = NULL;
	return ret;
}

/* What every verdict does first (take_message), and what it then sees.
 * Returns 0 if the socket has no parser state. */
int rotor_host_verdict(struct host_socket *s, struct host_message *out)
{
	struct host_skb h = { .data = NULL };

	current = s;
	struct parse_state *st = take_message(&h.skb);

	current = NULL;
	if (!st)
		return 0;
	out->kind = st->kind;
	out->len = st->len;
	out->type = st->type;
	out->stream = st->stream;
	if (st->kind == MSG_FRAME_BATCH) {
		out->first_flags = st->batch.data;
		out->flags = st->batch.frames;
	} else {
		out->first_flags = st->first_flags;
		out->flags = st->flags;
	}
	return 1;
}
