/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* cgroup/connect4: a connect() to a balanced VIP:port goes to the agent. */
#include "lib/common.h"

SEC("cgroup/connect4")
int rotor_connect4(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct agent_config *cfg = bpf_map_lookup_elem(&agent_config, &zero);

	if (!cfg || !cfg->listen_port || ctx->protocol != IPPROTO_TCP)
		return 1;
	if ((bpf_get_current_pid_tgid() >> 32) == cfg->agent_tgid)
		return 1;

	struct service_key key = {
		.ip = ctx->user_ip4,
		.port = bpf_ntohs((__u16)ctx->user_port),
	};
	struct service *svc = bpf_map_lookup_elem(&services, &key);

	if (!svc)
		return 1;

	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct origin o = { .ip = key.ip, .port = key.port, .service_id = svc->id };

	if (bpf_map_update_elem(&pending_origins, &cookie, &o, BPF_ANY) < 0)
		return 1; /* no room: let kube-proxy have it */
	ctx->user_ip4 = cfg->listen_ip;
	ctx->user_port = bpf_htons((__u16)cfg->listen_port);
	stat_inc(STAT_CONNECT_REWRITE);
	return 1;
}

/* getpeername() on a balanced client socket answers with the Service
 * address the application dialled, not the agent's. */
SEC("cgroup/getpeername4")
int rotor_getpeername4(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return 1;
	struct origin *o = bpf_sk_storage_get(&client_sock_origins, sk, 0, 0);

	if (o) {
		ctx->user_ip4 = o->ip;
		ctx->user_port = bpf_htons((__u16)o->port);
	}
	return 1;
}
