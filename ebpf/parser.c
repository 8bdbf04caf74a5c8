/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* sk_skb stream parser for A, Uk and J: one message per HTTP/2 frame. */
#include "lib/h2.h"

SEC("sk_skb/stream_parser")
int rotor_frame_parser(struct __sk_buff *skb)
{
	return parse_frames(skb);
}
