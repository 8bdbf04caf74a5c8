/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* Map updates, deletes, pushes and pops, read as the int they return. */
#ifndef ROTOR_MAP_OPS_H
#define ROTOR_MAP_OPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/*
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

#endif
