/* Prints the layout of every struct in include/rotor.h as Rust constants;
 * built and run for the host by userspace/build.rs. The Rust mirrors in
 * userspace/src/ebpf/abi.rs are tested against these numbers. */
#include <stddef.h>
#include <stdio.h>
#include "rotor.h"

#define SIZE(t) printf("pub const SIZE_%s: usize = %zu;\n", #t, sizeof(struct t))
#define OFF(t, f) printf("pub const OFF_%s_%s: usize = %zu;\n", #t, #f, offsetof(struct t, f))

int main(void)
{
	SIZE(service_key); SIZE(service); SIZE(agent_config); SIZE(origin);
	SIZE(client_key); SIZE(peer_key); SIZE(sock_ident); SIZE(parse_state);
	SIZE(upstream); SIZE(conn); SIZE(stream_key); SIZE(stream); SIZE(route); SIZE(event);
	OFF(conn, flags); OFF(conn, consumed); OFF(conn, last_stream); OFF(conn, first_slot); OFF(conn, hold_consumed);
	OFF(conn, client_recv); OFF(conn, client_limit); OFF(conn, up);
	OFF(upstream, req_data); OFF(upstream, req_limit); OFF(upstream, req_notify);
	OFF(upstream, resp_data); OFF(upstream, resp_notify); OFF(upstream, diverted);
	OFF(parse_state, passed); OFF(parse_state, kind); OFF(parse_state, client_window);
	OFF(upstream, passed); OFF(upstream, release); OFF(route, stream); OFF(stream, consumed); OFF(stream, last_passed); OFF(upstream, last_diverted); OFF(upstream, consumed);
	OFF(upstream, stream_window_extra); OFF(upstream, refused); OFF(stream, req_sent); OFF(event, stream);
	OFF(sock_ident, generation); OFF(route, generation);
	printf("pub const MAX_UPSTREAMS: usize = %d;\n", ROTOR_MAX_UPSTREAMS);
	return 0;
}
