/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * cgroup/connect4 and connect6: a connect() to a balanced VIP:port goes to
 * the agent. connect6 sees two kinds of address: IPv4 mapped into an IPv6
 * socket (::ffff:a.b.c.d), which is how dual-stack clients (grpcio, Java,
 * Node) dial an IPv4 Service, and native IPv6 ([fd00::10]:80, an IPv6 or
 * dual-stack Service's IPv6 ClusterIP). A connect keeps its family: the
 * first goes to the agent's IPv4 listener as ::ffff:listen, the second to
 * its IPv6 listener, or, with none (no --listen6), its original path.
 */
#include "lib/common.h"

/* Records where the socket was going and tells the caller where to send
 * it instead (the agent), or returns 0 to leave it alone. `ip`: the
 * destination, IPv4 mapped; `native6`: an IPv6 destination, which only the
 * agent's IPv6 listener can take. */
static __always_inline struct agent_config *divert_to_agent(void *ctx, __u32 protocol,
							     const __u32 ip[ROTOR_IP_WORDS],
							     __u32 port_be, int native6)
{
	__u32 zero = 0;
	struct agent_config *cfg = bpf_map_lookup_elem(&agent_config, &zero);

	if (!cfg || !cfg->listen_port || protocol != IPPROTO_TCP)
		return 0;
	if (native6 && !cfg->listen_port6)
		return 0;
	__u64 cookie = bpf_get_socket_cookie(ctx);

	if (bpf_map_lookup_elem(&own_socks, &cookie))
		return 0;

	struct service_key key = { .port = bpf_ntohs((__u16)port_be) };

	ip_copy(key.ip, ip);
	struct service *svc = bpf_map_lookup_elem(&services, &key);

	if (!svc)
		return 0;
	/* The agent's table is full: kube-proxy carries this one. A refusal
	 * or a connection the agent must close would be rotor's failure. */
	__u64 *live = bpf_map_lookup_elem(&client_count, &zero);

	if (cfg->max_clients && live && *live >= cfg->max_clients) {
		stat_inc(STAT_FAIL_OPEN_CONNECT);
		return 0;
	}

	struct origin o = { .port = key.port, .service_id = svc->id };

	ip_copy(o.ip, key.ip);
	if (map_update(&pending_origins, &cookie, &o, BPF_ANY) < 0) {
		stat_inc(STAT_FAIL_OPEN_CONNECT);
		return 0; /* no room: let kube-proxy have it */
	}
	stat_inc(STAT_CONNECT_REWRITE);
	return cfg;
}

SEC("cgroup/connect4")
int rotor_connect4(struct bpf_sock_addr *ctx)
{
	__u32 ip[ROTOR_IP_WORDS];

	ip_mapped(ip, ctx->user_ip4);
	struct agent_config *cfg = divert_to_agent(ctx, ctx->protocol, ip, ctx->user_port, 0);

	if (cfg) {
		ctx->user_ip4 = cfg->listen_ip;
		ctx->user_port = bpf_htons((__u16)cfg->listen_port);
	}
	return 1;
}

SEC("cgroup/connect6")
int rotor_connect6(struct bpf_sock_addr *ctx)
{
	/* user_ip6 is read and written a word at a time (CTX_WORD). */
	__u32 ip[ROTOR_IP_WORDS] = {
		CTX_WORD(ctx->user_ip6[0]),
		CTX_WORD(ctx->user_ip6[1]),
		CTX_WORD(ctx->user_ip6[2]),
		CTX_WORD(ctx->user_ip6[3]),
	};
	int native6 = !ip_is_mapped(ip);
	struct agent_config *cfg = divert_to_agent(ctx, ctx->protocol, ip, ctx->user_port, native6);

	if (!cfg)
		return 1;
	if (!native6) {
		CTX_WORD(ctx->user_ip6[3]) = cfg->listen_ip;
		ctx->user_port = bpf_htons((__u16)cfg->listen_port);
		return 1;
	}
	CTX_WORD(ctx->user_ip6[0]) = cfg->listen_ip6[0];
	CTX_WORD(ctx->user_ip6[1]) = cfg->listen_ip6[1];
	CTX_WORD(ctx->user_ip6[2]) = cfg->listen_ip6[2];
	CTX_WORD(ctx->user_ip6[3]) = cfg->listen_ip6[3];
	ctx->user_port = bpf_htons((__u16)cfg->listen_port6);
	return 1;
}

/* getpeername() on a balanced client socket answers with the Service
 * address the application dialled, not the agent's. */
static __always_inline struct origin *dialled(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;

	return sk ? bpf_sk_storage_get(&client_sock_origins, sk, 0, 0) : 0;
}

SEC("cgroup/getpeername4")
int rotor_getpeername4(struct bpf_sock_addr *ctx)
{
	struct origin *o = dialled(ctx);

	/* An IPv4 socket dialled an IPv4 Service: its origin is mapped. */
	if (o) {
		ctx->user_ip4 = o->ip[3];
		ctx->user_port = bpf_htons((__u16)o->port);
	}
	return 1;
}

/* The origin is already in the form an IPv6 socket names its peer:
 * ::ffff:VIP for a dual-stack client of an IPv4 Service, [VIP6] for a
 * native one. */
SEC("cgroup/getpeername6")
int rotor_getpeername6(struct bpf_sock_addr *ctx)
{
	struct origin *o = dialled(ctx);

	if (o) {
		CTX_WORD(ctx->user_ip6[0]) = o->ip[0];
		CTX_WORD(ctx->user_ip6[1]) = o->ip[1];
		CTX_WORD(ctx->user_ip6[2]) = o->ip[2];
		CTX_WORD(ctx->user_ip6[3]) = o->ip[3];
		ctx->user_port = bpf_htons((__u16)o->port);
	}
	return 1;
}
