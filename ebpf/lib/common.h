/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
#ifndef ROTOR_COMMON_H
#define ROTOR_COMMON_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "rotor.h"
#include "maps.h"

/*
 * Map updates, deletes, pushes and pops, read as the int they return.
 *
 * The verifier turns these helpers into direct calls of the map's ops,
 * which return int before 6.4 (kernel commit d7ba4cc900bf, "bpf: return
 * long from bpf_map_ops funcs"). The call leaves r0's upper half zero, so
 * an error is a large positive number, never below 0: -ENOENT from an
 * empty queue reads as 4294967294. On 6.1 an empty spare_ready therefore
 * "gave" index 0 to every accepted socket once the taps ran out, and each
 * one's first frames went into the one tap at index 0, which another
 * connection read (cli.rs, 5,000 connections: that connection read a
 * second preface and was closed with FRAME_SIZE_ERROR, and the sockets
 * whose frames it had read were never answered). A full `streams` map
 * seemed to take an insert the same way. The low 32 bits are right on
 * every kernel, so the result is cut to them; the raw helpers are
 * poisoned below, and a new call site cannot forget it.
 */
static __always_inline int map_update(void *map, const void *key, const void *value, __u64 flags)
{
	return (int)bpf_map_update_elem(map, key, value, flags);
}

static __always_inline int map_delete(void *map, const void *key)
{
	return (int)bpf_map_delete_elem(map, key);
}

static __always_inline int map_push(void *map, const void *value, __u64 flags)
{
	return (int)bpf_map_push_elem(map, value, flags);
}

static __always_inline int map_pop(void *map, void *value)
{
	return (int)bpf_map_pop_elem(map, value);
}

/* Only for the kernel: h2check's host build defines its stand-ins for the
 * helpers after this header (userspace/h2check/host/kernel_parser.c). */
#ifdef __bpf__
#pragma GCC poison bpf_map_update_elem bpf_map_delete_elem bpf_map_push_elem bpf_map_pop_elem bpf_map_peek_elem
#endif

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
