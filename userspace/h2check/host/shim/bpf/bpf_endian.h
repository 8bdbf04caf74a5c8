/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* Host stand-in for libbpf's bpf_endian.h (see bpf_helpers.h here). */
#ifndef ROTOR_HOST_BPF_ENDIAN_H
#define ROTOR_HOST_BPF_ENDIAN_H

#include <arpa/inet.h>

#define bpf_htons(x) htons(x)
#define bpf_ntohs(x) ntohs(x)
#define bpf_htonl(x) htonl(x)
#define bpf_ntohl(x) ntohl(x)

#endif
