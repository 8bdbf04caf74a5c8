/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
#ifndef ROTOR_COMMON_H
#define ROTOR_COMMON_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "rotor.h"
#include "maps.h"

#define AF_INET 2
#define AF_INET6 10
#define SOL_SOCKET 1
#define SO_RCVBUF 8
#define SO_SNDBUF 7
/* A's send buffer: every frame for the client queues there (sockops.c). */
#define ROTOR_AGENT_SNDBUF (4 << 20)

#endif
