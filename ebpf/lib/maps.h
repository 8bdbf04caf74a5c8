/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* Every map rotor uses, declared once. The agent finds them by these names. */
#ifndef ROTOR_MAPS_H
#define ROTOR_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "rotor.h"

/* Defaults; the agent sizes the maps at load (--max-conns and the hidden
 * --max-sockets / --max-streams, which let a test fill them). */
#define MAX_CONNS 65536
#define MAX_STREAMS 262144

/* Balanced Service addresses (VIP:port) → service id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct service_key);
	__type(value, struct service);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct agent_config);
} agent_config SEC(".maps");

/* Socket cookies of the agent's own sockets while they connect: connect4
 * leaves them alone. A PID cannot say it: the agent's getpid() in a pod
 * without hostPID is from its own PID namespace, never the kernel's tgid,
 * and a cgroup can hold clients too (a test's agent shares its cgroup). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u32);
} own_socks SEC(".maps");

/* connect4 → sockops, keyed by socket cookie. LRU: a connect that never
 * completes must not leak an entry. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_CONNS);
	__type(key, __u64);
	__type(value, struct origin);
} pending_origins SEC(".maps");

/* Client sockets connect4 sent to the agent that are not closed yet
 * (sockops counts them at connect and at close). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} client_count SEC(".maps");

/* The original destination of a balanced client socket, for getpeername. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct origin);
} client_sock_origins SEC(".maps");

/* sockops → agent's accept, keyed by the client's address. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_CONNS);
	__type(key, struct peer_key);
	__type(value, struct origin);
} client_origins SEC(".maps");

/* A: the agent's accepted sockets; frame parser + client verdict; their
 * egress carries every frame for the client (C joins no map). */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, MAX_CONNS);
	__type(key, struct client_key);
	__type(value, __u32);
} agent_socks SEC(".maps");

/* Uk: upstream sockets, key (conn_id << 32 | slot); frame parser + upstream verdict. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, MAX_CONNS * 4);
	__type(key, __u64);
	__type(value, __u32);
} upstream_socks SEC(".maps");

/* T: each A's and Uk's tap, key the source socket's cookie: a unix socket
 * the agent reads in place of the source, into whose ingress the verdicts
 * hand the agent its frames (conn.h, pass_to_agent). No programs. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, MAX_CONNS * 5);
	__type(key, __u64);
	__type(value, __u32);
} agent_taps SEC(".maps");

/* A tap being read out at a handover, key the source's cookie. Leaving
 * agent_taps drops a tap's psock when no other map holds it, and with it
 * the frames a verdict had handed it that its work item had not delivered
 * yet, and those delivered but unread (sk_psock_drop stops the psock, its
 * destroy zaps both queues): an upstream's stream-0 frames at a handover
 * under load, which the old agent then waited for in vain (upgrade.rs on
 * 7.3). The agent puts the tap here first, so its psock lives on through
 * the read-out; closing the tap takes it out. No programs. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, MAX_CONNS * 5);
	__type(key, __u64);
	__type(value, __u32);
} tap_held SEC(".maps");

/* A's cookie → what went into A's own ingress before the first message
 * went into its tap (written once, by the verdict): the agent reads A up
 * to there, then the tap. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CONNS);
	/* an entry per connection that has one, not max_entries at load */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct tap_start);
} tap_starts SEC(".maps");

/*
 * Spare taps (agent/spare_taps.rs): taps the agent makes before any socket
 * needs one, so that an accepted socket (A) has one from its first byte.
 * A joins agent_socks at ESTABLISHED, while it waits in the accept queue:
 * curl sends its preface, SETTINGS, a request and 64 KiB of its body at
 * once, and without a tap all of it went into A's own ingress, which 7.3
 * turns into SK_PASS and an A read late into a deaf one (ebpf/README.md,
 * "What differs by kernel"). sockops pops an index from spare_ready and
 * writes A's cookie at that index of spare_owner; the verdict hands A's
 * frames to spare_taps[index] while spare_owner still names A. The agent
 * takes the tap at accept and keeps the index for A's life; whoever ends
 * the ownership (sockops at A's close, the agent at a handover) swaps the
 * cookie for 0, once. An index whose A closed before the agent took its
 * tap goes to spare_dropped: the agent makes it a fresh tap, as the old
 * one may hold that A's frames. The agent sizes all four at load.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, MAX_CONNS);
	__type(key, __u32);
	__type(value, __u32);
} spare_taps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, MAX_CONNS);
	__type(value, __u32);
} spare_ready SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, MAX_CONNS);
	__type(value, __u32);
} spare_dropped SEC(".maps");

/* Memory-mapped by the agent, which swaps an owner for 0 with the same
 * compare-and-swap sockops uses. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, MAX_CONNS);
	__type(key, __u32);
	__type(value, __u64);
} spare_owner SEC(".maps");

/* J: the agent's injector sockets; frame parser + injector verdict. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} injector_socks SEC(".maps");

/* Socket cookie → which connection and role a socket has (agent-written). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CONNS * 4);
	__type(key, __u64);
	__type(value, struct sock_ident);
} sock_idents SEC(".maps");

/* Socket cookie → frame parser state (program-written, agent-deleted). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CONNS * 4);
	__type(key, __u64);
	__type(value, struct parse_state);
} parse_states SEC(".maps");

/* Socket cookie of an injector → the current route. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u64);
	__type(value, struct route);
} routes SEC(".maps");

/* Indexed by conn_id. Memory-mapped by the agent, which writes single
 * fields in place: a map update would copy the whole value back and undo the
 * counters the programs changed meanwhile. The agent resizes it at load. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct conn);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_STREAMS);
	__type(key, struct stream_key);
	__type(value, struct stream);
} streams SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Shared, not per-CPU: atomic adds cost a contended cache line per frame
 * of a busy endpoint, but the map stays 2.6 MB whatever the CPU count
 * (per-CPU, a 64-CPU node would hold 170 MB of counters). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ROTOR_MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, struct endpoint_stats);
} endpoint_stats SEC(".maps");

/* Written by the verdicts and the agent without a lock: two answers timed
 * at once on two CPUs may lose one sample, which an estimate can afford. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, ROTOR_MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, struct endpoint_latency);
} endpoint_latency SEC(".maps");

/* 0 with the agent's hidden --no-endpoint-stats: no per-endpoint counts
 * and no stream timestamps. Only the benchmark turns it off, to measure
 * what they cost per request (bench/src/endpoint_stats.rs); without the
 * timestamps peak-ewma has no estimates either. The verifier drops the
 * dead branches at load, as the value is read-only. */
const volatile __u32 endpoint_stats_on = 1;

static __always_inline struct endpoint_stats *endpoint_stats_of(__u32 endpoint)
{
	if (!endpoint_stats_on)
		return NULL;
	return bpf_map_lookup_elem(&endpoint_stats, &endpoint);
}

static __always_inline void stat_add(__u32 which, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &which);

	if (v)
		*v += n;
}

static __always_inline void stat_inc(__u32 which)
{
	stat_add(which, 1);
}

/* 0 when the ring is full (the agent is behind): the event is lost. */
static __always_inline int emit_stream_event(__u32 conn_id, __u32 kind, __u32 slot, __u32 stream)
{
	struct event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);

	if (!ev) {
		stat_inc(STAT_EVENT_LOST);
		return 0;
	}
	ev->conn_id = conn_id;
	ev->kind = kind;
	ev->slot = slot;
	ev->stream = stream;
	bpf_ringbuf_submit(ev, 0);
	return 1;
}

static __always_inline void emit_event(__u32 conn_id, __u32 kind, __u32 slot)
{
	emit_stream_event(conn_id, kind, slot, 0);
}

#endif
