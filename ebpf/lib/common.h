/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
#ifndef ROTOR_COMMON_H
#define ROTOR_COMMON_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "rotor.h"
#include "maps.h"
#include "map_ops.h"

#define AF_INET 2
#define AF_INET6 10
#define SOL_SOCKET 1
#define SO_RCVBUF 8
#define SO_SNDBUF 7
/* A's send buffer: every frame for the client queues there (sockops.c). */
#define ROTOR_AGENT_SNDBUF (4 << 20)

/* One word of a context's address field, read or written as 4 bytes: the
 * verifier allows only 4-byte accesses to sock_ops' and __sk_buff's
 * local_ip6/remote_ip6, and clang may merge two adjacent 4-byte copies
 * into one 8-byte load or store; a volatile access it keeps as written.
 * (A precaution: no merged access was seen, the copies are volatile from
 * the start.) */
#define CTX_WORD(field) (*(volatile __u32 *)&(field))

/* rotor.h: IPv4 addresses travel IPv4-mapped in 16 bytes. */
static __always_inline void ip_mapped(__u32 ip[ROTOR_IP_WORDS], __u32 ip4)
{
	ip[0] = 0;
	ip[1] = 0;
	ip[2] = bpf_htonl(0xffff);
	ip[3] = ip4;
}

/* ::ffff:0:0/96, the IPv4-mapped prefix (RFC 4291 §2.5.5.2). */
static __always_inline int ip_is_mapped(const __u32 ip[ROTOR_IP_WORDS])
{
	return ip[0] == 0 && ip[1] == 0 && ip[2] == bpf_htonl(0xffff);
}

static __always_inline int ip_equal(const __u32 a[ROTOR_IP_WORDS], const __u32 b[ROTOR_IP_WORDS])
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

static __always_inline void ip_copy(__u32 to[ROTOR_IP_WORDS], const __u32 from[ROTOR_IP_WORDS])
{
	to[0] = from[0];
	to[1] = from[1];
	to[2] = from[2];
	to[3] = from[3];
}

#endif
