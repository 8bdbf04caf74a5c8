/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * One object for all hooks: the agent loads one ELF, so every program
 * shares the maps of lib/maps.h. Each hook lives in its own file.
 */
#include "connect.c"
#include "sockops.c"
#include "parser.c"
#include "client_skb.c"
#include "upstream_skb.c"
#include "injector_skb.c"

char LICENSE[] SEC("license") = "Dual BSD/GPL";
