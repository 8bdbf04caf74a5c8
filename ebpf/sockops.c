/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * sockops: a client socket (C) that connect4/6 sent to the agent has its
 * Service address recorded for the agent and for getpeername; the agent's
 * accepted sockets (A) join agent_socks at ESTABLISHED, before any payload
 * is queued (ebpf/README.md R1: bytes queued before insertion are not parsed),
 * with a spare tap for what the verdict hands the agent (maps.h).
 * C joins no socket map: rotor changes nothing of how the client reads.
 */
#include "lib/common.h"
#include "lib/spare.h"

static __always_inline __u64 *live_clients(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&client_count, &zero);
}

/* A client socket connect4 sent to the agent counts against the agent's
 * table (connect4's max_clients) from its SYN until it closes, whichever
 * way it closes (a refused SYN, a reset, TIME_WAIT): the close is seen by
 * the state callback armed here. */
static __always_inline void client_connecting(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct origin *o = bpf_map_lookup_elem(&pending_origins, &cookie);
	__u64 *live = live_clients();

	if (!o || !live || !skops->sk)
		return;
	struct origin *kept = bpf_sk_storage_get(&client_sock_origins, skops->sk, 0,
						 BPF_SK_STORAGE_GET_F_CREATE);

	if (!kept || kept->counted)
		return;
	if (bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG) < 0)
		return;
	*kept = *o;
	kept->counted = 1;
	__sync_fetch_and_add(live, 1);
}

static __always_inline void client_closed(struct bpf_sock_ops *skops)
{
	__u64 *live = live_clients();

	if (!live || !skops->sk)
		return;
	struct origin *kept = bpf_sk_storage_get(&client_sock_origins, skops->sk, 0, 0);

	if (kept && __sync_fetch_and_and(&kept->counted, 0))
		__sync_fetch_and_sub(live, 1);
}

/* An accepted socket (A) whose state sockops made closes: nothing parses
 * it any more, whether or not the agent ever got to it. */
static __always_inline void agent_closed(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct parse_state *st = bpf_map_lookup_elem(&parse_states, &cookie);

	if (st && st->accepted) {
		spare_tap_closed(cookie, st->spare);
		map_delete(&parse_states, &cookie);
	}
}

/* A socket's addresses as rotor.h keys them: 16 bytes, IPv4 mapped. An
 * IPv6 socket carrying IPv4 (a dual-stack client dialled ::ffff:VIP) has
 * its IPv4 addresses in local_ip4/remote_ip4 like an IPv4 socket, and is
 * read there, as an IPv4 socket of the agent is: both name the same key.
 * Returns 0 for a family rotor does not carry. */
static __always_inline int sock_addrs(struct bpf_sock_ops *skops, __u32 local[ROTOR_IP_WORDS],
				      __u32 remote[ROTOR_IP_WORDS])
{
	__u32 family = skops->family;

	if (family == AF_INET6) {
		remote[0] = CTX_WORD(skops->remote_ip6[0]);
		remote[1] = CTX_WORD(skops->remote_ip6[1]);
		remote[2] = CTX_WORD(skops->remote_ip6[2]);
		remote[3] = CTX_WORD(skops->remote_ip6[3]);
		if (!ip_is_mapped(remote)) {
			local[0] = CTX_WORD(skops->local_ip6[0]);
			local[1] = CTX_WORD(skops->local_ip6[1]);
			local[2] = CTX_WORD(skops->local_ip6[2]);
			local[3] = CTX_WORD(skops->local_ip6[3]);
			return 1;
		}
	} else if (family != AF_INET) {
		return 0;
	}
	ip_mapped(local, skops->local_ip4);
	ip_mapped(remote, skops->remote_ip4);
	return 1;
}

static __always_inline void client_established(struct bpf_sock_ops *skops,
					       const __u32 local[ROTOR_IP_WORDS])
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct origin *o = bpf_map_lookup_elem(&pending_origins, &cookie);

	if (!o)
		return;
	struct origin copy = *o;
	struct peer_key peer = { .port = skops->local_port };

	ip_copy(peer.ip, local);
	map_delete(&pending_origins, &cookie);
	map_update(&client_origins, &peer, &copy, BPF_ANY);
	if (skops->sk) {
		struct origin *kept = bpf_sk_storage_get(&client_sock_origins, skops->sk, 0,
							 BPF_SK_STORAGE_GET_F_CREATE);
		if (kept) {
			ip_copy(kept->ip, copy.ip);
			kept->port = copy.port;
			kept->service_id = copy.service_id;
		}
	}
}

/* The agent's own listener, IPv4 (mapped) or IPv6. */
static __always_inline int on_listener(struct agent_config *cfg, const __u32 local[ROTOR_IP_WORDS],
				       __u32 port)
{
	if (ip_is_mapped(local))
		return cfg->listen_port && port == cfg->listen_port && local[3] == cfg->listen_ip;
	return cfg->listen_port6 && port == cfg->listen_port6 && ip_equal(local, cfg->listen_ip6);
}

static __always_inline void agent_established(struct bpf_sock_ops *skops,
					      const __u32 local[ROTOR_IP_WORDS],
					      const __u32 remote[ROTOR_IP_WORDS])
{
	__u32 zero = 0;
	struct agent_config *cfg = bpf_map_lookup_elem(&agent_config, &zero);

	if (!cfg || !on_listener(cfg, local, skops->local_port))
		return;
	struct client_key key = {
		.client_port = bpf_ntohl(skops->remote_port),
		.agent_port = skops->local_port,
	};

	ip_copy(key.client_ip, remote);
	ip_copy(key.agent_ip, local);
	/* strparser refuses messages larger than sk_rcvbuf; header blocks
	 * can reach ROTOR_MAX_BLOCK. */
	int rcvbuf = 4 * ROTOR_MAX_BLOCK;

	bpf_setsockopt(skops, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	/* Responses leave through A's send queue, a frame per skb: with the
	 * default buffer (tens of KiB of truesize) a burst of small frames
	 * filled it, and the psock retried a jiffy later (4 ms a request). */
	int sndbuf = ROTOR_AGENT_SNDBUF;

	bpf_setsockopt(skops, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	/* The parser state exists before the first byte, so the agent can
	 * tell an accepted socket the kernel parses from one it could not take
	 * (parse_states or agent_socks full): that one it hands back to its
	 * original path instead of carrying it half in the kernel. */
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct parse_state init = { .preface = 1 };

	/* A waits in the accept queue until the agent runs: seconds on a node
	 * short of CPU, longer than a stopped agent's sweep period. Its state
	 * is this program's to delete, at close (agent_closed). Without the
	 * close callback the sweep keeps it in hand (accepted stays 0). */
	init.accepted = bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
							 BPF_SOCK_OPS_STATE_CB_FLAG) == 0;
	/* A tap from the first byte (maps.h, spare_taps), only for an A whose
	 * close this program sees: the close gives the index back. */
	if (init.accepted)
		init.spare = spare_tap_take(cookie);
	if (map_update(&parse_states, &cookie, &init, BPF_NOEXIST) < 0) {
		spare_tap_unused(init.spare);
		stat_inc(STAT_FAIL_OPEN_ACCEPT);
		return;
	}
	if (bpf_sock_hash_update(skops, &agent_socks, &key, BPF_ANY) < 0) {
		map_delete(&parse_states, &cookie);
		spare_tap_unused(init.spare);
		stat_inc(STAT_FAIL_OPEN_ACCEPT);
	}
}

SEC("sockops")
int rotor_sockops(struct bpf_sock_ops *skops)
{
	__u32 local[ROTOR_IP_WORDS], remote[ROTOR_IP_WORDS];

	if (!sock_addrs(skops, local, remote))
		return 1;
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		client_connecting(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != BPF_TCP_CLOSE)
			break;
		client_closed(skops);
		agent_closed(skops);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		client_established(skops, local);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		agent_established(skops, local, remote);
		break;
	}
	return 1;
}
