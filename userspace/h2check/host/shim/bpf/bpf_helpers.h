/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Host stand-in for libbpf's bpf_helpers.h: just enough for ebpf/lib/h2.h
 * (and the maps.h it includes) to compile as ordinary C, so the kernel's
 * frame parser can be run and fuzzed against the agent's reader. The map
 * declarations compile to plain globals whose addresses name the maps; the
 * helpers are functions in kernel_parser.c that serve one emulated socket.
 */
#ifndef ROTOR_HOST_BPF_HELPERS_H
#define ROTOR_HOST_BPF_HELPERS_H

#include <linux/types.h>

#define __uint(name, val) int (*name)[val]
#define __type(name, val) __typeof__(val) *name
#define __array(name, val) __typeof__(val) *name[]
#define SEC(name)
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

struct __sk_buff;

void *bpf_map_lookup_elem(void *map, const void *key);
long bpf_map_update_elem(void *map, const void *key, const void *value, __u64 flags);
/* declared for ebpf/lib/map_ops.h; h2.h calls none of them */
long bpf_map_delete_elem(void *map, const void *key);
long bpf_map_push_elem(void *map, const void *value, __u64 flags);
long bpf_map_pop_elem(void *map, void *value);
long bpf_skb_load_bytes(const void *skb, __u32 offset, void *to, __u32 len);
__u64 bpf_get_socket_cookie(void *ctx);
void *bpf_ringbuf_reserve(void *ringbuf, __u64 size, __u64 flags);
void bpf_ringbuf_submit(void *data, __u64 flags);
long bpf_loop(__u32 nr_loops, void *callback_fn, void *callback_ctx, __u64 flags);

#endif
