/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Structures and constants shared by the kernel programs and the agent.
 * The agent's side is generated from this file (bindgen in
 * userspace/build.rs, laid out for the BPF target): a struct, #define or
 * stat changed here is changed there at the next build, and Rust code that
 * uses a field or constant that went away no longer compiles. Fields are
 * here only if a program or the agent reads them.
 */
#ifndef ROTOR_H
#define ROTOR_H

#include <linux/types.h>

#define ROTOR_MAX_UPSTREAMS 16
/* Largest frame either peer may send: we never raise SETTINGS_MAX_FRAME_SIZE. */
#define ROTOR_MAX_FRAME 16384
/* A header block (HEADERS + CONTINUATION) travels as one message. */
#define ROTOR_MAX_BLOCK 65536
#define ROTOR_MAX_CONTINUATIONS 16
/* Frames in one batch (MSG_FRAME_BATCH); its bytes stay within ROTOR_MAX_BLOCK,
 * the largest message before batches. */
#define ROTOR_BATCH_FRAMES 32
/* The client is told the default stream window (65,535); an endpoint that
 * grants more waits for more before its first WINDOW_UPDATE. A stream bound
 * to such an endpoint gets the difference from the agent once the client
 * has sent this much DATA on it (a request without a body never costs an
 * event). */
#define ROTOR_STREAM_GRANT_AFTER 16384

/* HTTP/2 frame types (RFC 9113 §6) and the agent's private routing frame. */
#define H2_DATA 0x0
#define H2_HEADERS 0x1
#define H2_PRIORITY 0x2
#define H2_RST_STREAM 0x3
#define H2_SETTINGS 0x4
#define H2_PUSH_PROMISE 0x5
#define H2_PING 0x6
#define H2_GOAWAY 0x7
#define H2_WINDOW_UPDATE 0x8
#define H2_CONTINUATION 0x9
/* Never leaves the agent's injector socket: it names the target of the
 * frames that follow it, and carries actions applied in order. */
#define ROTOR_ROUTE 0xfa

#define H2_REFUSED_STREAM 0x7 /* RST_STREAM error code */
#define H2_FLAG_END_STREAM 0x1
#define H2_FLAG_END_HEADERS 0x4

/* What the parser made of the last message on a socket (parse_state.kind). */
#define MSG_FRAME 0    /* one frame, or a whole header block */
#define MSG_PREFACE 1  /* the 24-byte client connection preface */
#define MSG_RAW 2      /* not HTTP/2: bytes passed on as they come */
/* Bytes of the preface, not all of it yet: the agent gets them at once (it
 * can wait with a timeout for a client that never sends the rest; a parser
 * holding them cannot give them back). Not counted in `passed`: the part
 * that completes the preface is, as the agent counts one preface. */
#define MSG_PREFACE_PART 3
/* Whole stream frames of an endpoint, the first and those already queued
 * behind it, carried to the client as one message (lib/h2.h, batch_len):
 * one hand-off and one TCP segment for a response's HEADERS, DATA and
 * trailers instead of one per frame. parse_state.batch says how many. */
#define MSG_FRAME_BATCH 4

/* sock_ident.role */
#define ROLE_AGENT 1    /* A: the agent's accepted end of a client connection */
#define ROLE_UPSTREAM 2 /* Uk: the agent's connection to one endpoint */
#define ROLE_INJECTOR 3 /* J: receives the agent's own frames, routes them */

/* conn.policy: how a new stream picks its upstream (the value of the
 * Service's rotor.dev/balance label; model/policy.rs). */
#define POLICY_ROUND_ROBIN 0
#define POLICY_LEAST_REQUEST 1
#define POLICY_PEAK_EWMA 2

/* Peak EWMA of each endpoint's time to first byte (`endpoint_latency`),
 * in integers: weights are fractions of ROTOR_EWMA_ONE, and the weight of
 * the past after dt is 2^(-dt / half-life): halvings by shift, and 2^-f
 * between them as 1 - ln2 f + (ln2 - 1/2) f^2 (LN2 and SQ, scaled by
 * 2^24; within 0.007 of the curve, exact slope at 0 so that frequent
 * answers see the time constant). The half-life is a 10 s time constant
 * times ln 2. Estimates are capped at ROTOR_EWMA_MAX_NS and open streams
 * at ROTOR_EWMA_MAX_OPEN so that every product fits in 64 bits. An
 * endpoint with no estimate and streams open costs ROTOR_EWMA_UNPROBED
 * plus its open streams: one probe at a time until its first answer. */
#define ROTOR_EWMA_HALF_LIFE_NS 6931471806ULL
#define ROTOR_EWMA_ONE (1ULL << 24)
#define ROTOR_EWMA_LN2 11629080ULL
#define ROTOR_EWMA_SQ 3240472ULL
#define ROTOR_EWMA_MAX_NS (1ULL << 36)
#define ROTOR_EWMA_MAX_OPEN (1ULL << 20)
#define ROTOR_EWMA_UNPROBED (1ULL << 60)

/* conn.flags */
#define CONN_FAST 0x1      /* stream frames may bypass the agent */
#define CONN_GATE_OPEN 0x4 /* the agent published `consumed` after the client's SETTINGS ACK */
/* No endpoint had room for a new stream: new streams go to the agent, which
 * holds them in order until one has room (an endpoint must see increasing
 * stream ids, so none may overtake a held one). */
#define CONN_HOLD 0x8
#define CONN_UNHOLD 0x10 /* the agent holds nothing once `hold_consumed` messages are handled */

/* upstream.state */
#define UP_EMPTY 0
#define UP_ACTIVE 1   /* takes new streams */
#define UP_DRAINING 2 /* in-flight streams only */

/* stream.flags */
#define STREAM_SLOW 0x1       /* every frame of this stream goes through the agent */
#define STREAM_CLIENT_END 0x2 /* client sent END_STREAM */
#define STREAM_SERVER_END 0x4 /* endpoint sent END_STREAM */
#define STREAM_ANSWERED 0x8   /* endpoint sent response HEADERS */
#define STREAM_RELEASE 0x10   /* the agent asked to end STREAM_SLOW */
#define STREAM_WINDOW_GRANTED 0x20 /* the client got the endpoint's stream window */

/* route.target: 0 = the client socket, k + 1 = upstream slot k */
#define ROUTE_CLIENT 0
/* route.action */
#define ROUTE_ACT_NONE 0
#define ROUTE_ACT_GATE 1 /* conn.consumed = arg; conn.flags |= CONN_GATE_OPEN */
/* The agent holds nothing more for this upstream (target) or stream: the
 * kernel carries its frames again once it has handed over no more than arg. */
#define ROUTE_ACT_RELEASE_UPSTREAM 2
#define ROUTE_ACT_RELEASE_STREAM 3
#define ROUTE_ACT_UNHOLD 4 /* conn.hold_consumed = arg; conn.flags |= CONN_UNHOLD */

/* event.kind */
#define EV_REQ_DATA 1  /* client DATA forwarded to upstreams crossed req_notify */
#define EV_RESP_DATA 2 /* endpoint DATA forwarded to the client crossed resp_notify */
#define EV_DIVERTED 3  /* a flow-control limit sent frames to the agent */
#define EV_STREAM_WINDOW 4 /* event.stream needs the endpoint's larger stream window */
#define EV_STREAM_CLOSED 5 /* a stream ended while the agent holds new ones */

/*
 * Addresses of both families share every key: an address is 16 bytes in
 * network byte order, an IPv4 one written IPv4-mapped (::ffff:a.b.c.d,
 * RFC 4291 §2.5.5.2). An IPv4 client, a dual-stack client dialling
 * ::ffff:VIP and a native IPv6 client dialling [VIP6] then go through one
 * services map, one client_origins and one agent_socks; and the mapped
 * form is how an IPv6 socket carrying IPv4 names its peer anyway.
 */
#define ROTOR_IP_WORDS 4

struct service_key {
	__u32 ip[ROTOR_IP_WORDS]; /* network byte order, IPv4 mapped */
	__u32 port; /* host byte order */
};

struct service {
	__u32 id;
};

struct agent_config {
	__u32 listen_ip;   /* network byte order */
	__u32 listen_port; /* host byte order */
	/* connect4 sends the agent no more client connections at once than
	 * this (its connection table); the rest keep their original path. */
	__u32 max_clients;
	/* The agent's IPv6 listener (--listen6), for native IPv6 clients: a
	 * connect6 to [VIP6] cannot be sent to an IPv4 address. Port 0: none,
	 * and IPv6 Services keep their original path. */
	__u32 listen_ip6[ROTOR_IP_WORDS]; /* network byte order */
	__u32 listen_port6; /* host byte order */
};

/* Written by connect4/6 (keyed by socket cookie) and moved by sockops to
 * client_origins, keyed by the client's address, for the agent's accept. */
struct origin {
	__u32 ip[ROTOR_IP_WORDS]; /* network byte order, IPv4 mapped */
	__u32 port; /* host byte order */
	__u32 service_id;
	__u32 counted; /* client_sock_origins: the socket counts in client_count */
};

/* A client socket, named from the client's side: the key of agent_socks. */
struct client_key {
	__u32 client_ip[ROTOR_IP_WORDS]; /* network byte order, IPv4 mapped */
	__u32 agent_ip[ROTOR_IP_WORDS];
	__u32 client_port; /* host byte order */
	__u32 agent_port;
};

/* The agent's address of a client: key of client_origins. */
struct peer_key {
	__u32 ip[ROTOR_IP_WORDS]; /* network byte order, IPv4 mapped */
	__u32 port; /* host byte order */
};

/* Per-socket identity, keyed by socket cookie, written by the agent. */
struct sock_ident {
	__u32 conn_id;
	__u32 role;
	__u32 slot;
	/* conn.generation when the agent named the socket: a socket of a
	 * connection that ended names the id's next connection no more. */
	__u32 generation;
};

/* Per-socket parser state, keyed by socket cookie, owned by the programs.
 * See ebpf/README.md, "Where a message starts". */
struct parse_state {
	__u32 next_seq;  /* TCP sequence number where the next message starts */
	__u32 msg_off;   /* offset of the current message in its head skb */
	__u32 seq_valid; /* next_seq is set */
	__u32 preface;  /* 1 while the client preface is still expected */
	__u32 raw;      /* not HTTP/2: hand every byte to the agent */
	__u32 preface_seen; /* bytes of it that came as MSG_PREFACE_PART */
	/* TCP sequence number of the first byte parsed: next_seq - first_seq
	 * bytes have been through the verdict (the agent compares it with
	 * what TCP received before it closes a socket the peer closed). */
	__u32 first_seq;
	/* the last complete message, for the verdict */
	__u32 kind;
	__u32 len;    /* whole message, headers included */
	__u32 stream; /* stream id of its first frame */
	__u32 type;
	union {
		struct {
			/* flags of the last frame (END_STREAM lives on HEADERS) */
			__u32 flags;
			__u32 first_flags;
		};
		/* MSG_FRAME_BATCH: the verdict reads each frame's own header */
		struct {
			__u32 frames; /* each a message the agent counts */
			__u32 data;   /* DATA payload bytes, for the client's window */
		} batch;
	};
	__u32 passed; /* messages the verdict handed to the agent, in order */
	/* 1: sockops made it for an accepted socket (A) and deletes it when
	 * that socket closes; the agent's sweep of states nobody owns leaves
	 * it alone, however long A waits in the accept queue. (This field
	 * fills what was padding: the struct keeps its size across upgrades.) */
	__u32 accepted;
	/* A: index + 1 of the spare tap sockops gave it at ESTABLISHED
	 * (spare_taps), 0 for none: its frames for the agent go there from
	 * the first byte. (Also what was padding.) */
	__u32 spare;
	/* A: every connection-level WINDOW_UPDATE increment the client sent,
	 * counted from its first byte (before the agent knows the connection). */
	__u64 client_window;
};

/* Where an accepted socket's frames for the agent began to go into its
 * tap (tap_starts): what had gone into its own ingress before, in the
 * messages the client task counts and in bytes (a spliced connection,
 * whose bytes all go to the agent, counts bytes). */
struct tap_start {
	__u32 messages;
	__u32 bytes;
};

struct upstream {
	__u32 state;
	__u32 streams; /* open streams routed here */
	__u64 req_data;   /* client DATA bytes redirected here by the kernel */
	__u64 req_limit;  /* the kernel redirects DATA only up to this */
	__u64 req_notify; /* event when req_data reaches this (agent re-arms) */
	__u64 resp_data;  /* endpoint DATA bytes redirected to the client */
	__u64 resp_notify; /* event when resp_data reaches this (agent re-arms) */
	__u32 diverted;   /* endpoint frames go to the agent until released */
	__u32 max_streams; /* the endpoint's SETTINGS_MAX_CONCURRENT_STREAMS */
	__u32 passed;      /* messages this upstream's verdict handed to the agent */
	__u32 last_diverted; /* `passed` when the latest stream frame went to the agent */
	__u32 consumed;    /* messages from it the agent had handled when it asked for release */
	__u32 release;     /* the agent asked to end the divert (see upstream_skb.c) */
	/* The endpoint's SETTINGS_INITIAL_WINDOW_SIZE beyond the client's
	 * 65,535: what each stream bound here must be granted (EV_STREAM_WINDOW). */
	__u32 stream_window_extra;
	/* The endpoint refused a stream (REFUSED_STREAM) while it had others
	 * open: it takes no new stream until one of them ends. grpc-core frees a
	 * stream's place a moment after it sent the trailers; without this, the
	 * refusal freed our count, the next waiting stream went at once and was
	 * refused too, and so on down the queue (failures.rs,
	 * backend_max_concurrent_streams_*: 95 of 600 calls refused, against
	 * 12 for the same client connected straight to a server). */
	__u32 refused;
	/* The agent's id for this slot's endpoint (registry.rs): a stream
	 * opened here counts in endpoint_stats under it. */
	__u32 endpoint;
	/* Response window the client verdict may still hand this endpoint
	 * from the client's connection WINDOW_UPDATEs (lib/window.h). The
	 * agent sets it and counts what the kernel took (client/flow.rs);
	 * it lives in what was the struct's tail padding, so the layout an
	 * adopted generation is read with stays the same. */
	__u32 credit_room;
};

struct conn {
	struct client_key client;
	__u32 flags;
	__u32 service_id;
	__u32 consumed; /* messages the agent had handled when it opened the gate */
	__u32 generation; /* bumped by the agent each time it reuses this slot */
	__u32 last_stream; /* highest client stream id seen by the kernel */
	__u32 next;        /* round-robin cursor */
	__u32 hold_consumed; /* ROUTE_ACT_UNHOLD */
	__u32 policy;        /* POLICY_*: the Service's, written by the agent */
	__u64 client_recv;  /* endpoint DATA bytes redirected to the client */
	__u64 client_limit; /* the client's connection window as the agent knows it */
	struct upstream up[ROTOR_MAX_UPSTREAMS];
};

struct stream_key {
	__u32 conn_id;
	__u32 stream;
};

struct stream {
	__u32 slot;
	__u32 flags;
	__u32 last_passed; /* parse_state.passed of A when this stream's latest
			    * frame went to the agent */
	__u32 consumed; /* messages from A the agent had handled when it asked to
			 * end STREAM_SLOW */
	__u32 req_sent; /* client DATA bytes the kernel carried on this stream */
	/* upstream.endpoint when the stream opened: the stream counts there
	 * even after its slot went to another endpoint. */
	__u32 endpoint;
	/* CLOCK_MONOTONIC (bpf_ktime_get_ns) at the request's HEADERS; the
	 * first response HEADERS files the difference in endpoint_stats.ttfb.
	 * 0: not timed. */
	__u64 opened_ns;
};

struct route {
	__u32 conn_id;
	__u32 target;
	__u32 action;
	__u32 arg;    /* ROUTE_ACT_GATE, _RELEASE_*: messages the agent has handled */
	__u32 stream; /* ROUTE_ACT_RELEASE_STREAM */
	__u32 generation; /* conn.generation when the agent sent it */
};

struct event {
	__u32 conn_id;
	__u32 kind;
	__u32 slot;
	__u32 stream; /* EV_STREAM_WINDOW */
};

/* Per-endpoint counters (`endpoint_stats`, indexed by the agent's endpoint
 * id; id 0 collects what no endpoint owns). Cumulative for the life of the
 * agent: an id is never given to another endpoint, so a slot reused or a
 * connection closed takes nothing away. */
#define ROTOR_MAX_ENDPOINTS 4096
/* Time to the first response HEADERS, log2: bucket b holds
 * (ns >> 10) < 2^b, i.e. ns < 2^(b+10); the last bucket holds the rest. */
#define ROTOR_TTFB_BUCKETS 32
/* RST_STREAM codes 0x0..0xd (RFC 9113 §7) by value; 15 any other. */
#define ROTOR_RESET_CODES 16
#define RESET_SIDE_CLIENT 0
#define RESET_SIDE_ENDPOINT 1
#define RESET_SIDES 2

struct endpoint_stats {
	__u64 opened;   /* streams opened to the endpoint */
	__u64 answered; /* streams whose response HEADERS came */
	__u64 ended;    /* streams ended (both ends, or a reset) */
	__u64 req_bytes;  /* client frames of its streams, headers included */
	__u64 resp_bytes; /* endpoint frames of its streams */
	__u64 ttfb_sum_ns;
	__u64 ttfb[ROTOR_TTFB_BUCKETS];
	__u64 resets[RESET_SIDES][ROTOR_RESET_CODES];
};

/* One endpoint's latency estimate (`endpoint_latency`, indexed like
 * endpoint_stats; memory-mapped by the agent, which reads it for its own
 * picks and feeds it the answers it carries). */
struct endpoint_latency {
	__u64 ewma_ns; /* 0: no answer timed yet */
	__u64 at_ns;   /* CLOCK_MONOTONIC of the answer that set it */
};

/* Counters in the `stats` per-CPU array. */
enum stat {
	STAT_REDIRECT_UP = 0,
	STAT_REDIRECT_CLIENT,
	STAT_PASS_AGENT,
	STAT_DIVERT,
	STAT_BAD_FRAME,
	STAT_CONNECT_REWRITE,
	STAT_NO_UPSTREAM,
	STAT_REDIRECT_BYTES, /* bytes of the frames redirected (both directions) */
	STAT_AGENT_BYTES,    /* bytes of the messages handed to the agent */
	/* Connections left on their original path (fail open): connect4 found
	 * the agent's table full, or the agent's accepted socket could not get
	 * a parser state or a place in agent_socks. */
	STAT_FAIL_OPEN_CONNECT,
	STAT_FAIL_OPEN_ACCEPT,
	STAT_UNKNOWN_FRAME, /* frames of unknown types, discarded (RFC 9113 §5.5) */
	STAT_EVENT_LOST,    /* events not sent: the ring buffer was full */
	/* Accepted sockets that found no spare tap ready: their first frames
	 * for the agent take their own ingress (agent/spare_taps.rs). */
	STAT_SPARE_TAP_NONE,
	/* Messages handed to the agent through their source's own ingress (a
	 * source without a tap): 7.3 turns that into SK_PASS (ebpf/README.md,
	 * "What differs by kernel"). */
	STAT_OWN_INGRESS,
	/* Batches an upstream's verdict carried to the client (MSG_FRAME_BATCH: each
	 * also one redirect_client), and the frames in them: frames carried to
	 * clients = redirect_client - batches + batched_frames. */
	STAT_BATCHES,
	STAT_BATCHED_FRAMES,
	/* Connection WINDOW_UPDATEs of clients the kernel handed to an
	 * endpoint itself (lib/window.h), without waking the agent. */
	STAT_WINDOW_CREDITS,
	STAT_MAX,
};

#endif
