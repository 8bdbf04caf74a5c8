/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * cgroup/connect4 and connect6: a connect() to a balanced VIP:port goes to
 * the agent. Services are IPv4; connect6 sees only IPv4 addresses mapped
 * into an IPv6 socket (::ffff:a.b.c.d), which is how dual-stack clients
 * (grpcio, Java, Node) dial an IPv4 Service.
 */
#include "lib/common.h"

/* Records where the socket was going and tells the caller where to send
 * it instead (the agent), or returns 0 to leave it alone. */
static __always_inline struct agent_config *divert_to_agent(void *ctx, __u32 protocol, __u32 ip,
							     __u32 port_be)
{
	__u32 zero = 0;
	struct agent_config *cfg = bpf_map_lookup_elem(&agent_config, &zero);

	if (!cfg || !cfg->listen_port || protocol != IPPROTO_TCP)
		return 0;
	__u64 cookie = bpf_get_socket_cookie(ctx);

	if (bpf_map_lookup_elem(&own_socks, &cookie))
		return 0;

	struct service_key key = { .ip = ip, .port = bpf_ntohs((__u16)port_be) };
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

	struct origin o = { .ip = key.ip, .port = key.port, .service_id = svc->id };

	if (bpf_map_update_elem(&pending_origins, &cookie, &o, BPF_ANY) < 0) {
		stat_inc(STAT_FAIL_OPEN_CONNECT);
		return 0; /* no room: let kube-proxy have it */
	}
	stat_inc(STAT_CONNECT_REWRITE);
	return cfg;
}

SEC("cgroup/connect4")
int rotor_connect4(struct bpf_sock_addr *ctx)
{
	struct agent_config *cfg = divert_to_agent(ctx, ctx->protocol, ctx->user_ip4, ctx->user_port);

	if (cfg) {
		ctx->user_ip4 = cfg->listen_ip;
		ctx->user_port = bpf_htons((__u16)cfg->listen_port);
	}
	return 1;
}

/* ::ffff:0:0/96, the IPv4-mapped prefix (RFC 4291 §2.5.5.2). */
static __always_inline int v4_mapped(struct bpf_sock_addr *ctx)
{
	return ctx->user_ip6[0] == 0 && ctx->user_ip6[1] == 0 &&
	       ctx->user_ip6[2] == bpf_htonl(0xffff);
}

SEC("cgroup/connect6")
int rotor_connect6(struct bpf_sock_addr *ctx)
{
	if (!v4_mapped(ctx))
		return 1;
	struct agent_config *cfg = divert_to_agent(ctx, ctx->protocol, ctx->user_ip6[3], ctx->user_port);

	if (cfg) {
		ctx->user_ip6[3] = cfg->listen_ip;
		ctx->user_port = bpf_htons((__u16)cfg->listen_port);
	}
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

	if (o) {
		ctx->user_ip4 = o->ip;
		ctx->user_port = bpf_htons((__u16)o->port);
	}
	return 1;
}

SEC("cgroup/getpeername6")
int rotor_getpeername6(struct bpf_sock_addr *ctx)
{
	struct origin *o = dialled(ctx);

	if (o) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		ctx->user_ip6[3] = o->ip;
		ctx->user_port = bpf_htons((__u16)o->port);
	}
	return 1;
}
