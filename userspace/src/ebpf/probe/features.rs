//! What rotor needs from the kernel: one entry per map type, program and
//! attach type, helper per program type and instruction class, with the
//! release that brought it and what rotor uses it for. The probe
//! (`probe_kernel`) checks them in this order.

/// One thing rotor needs from the kernel.
#[derive(Debug, PartialEq, Eq)]
pub struct Feature {
    /// What it is, as the kernel documentation names it.
    pub name: &'static str,
    /// First mainline release that has it, where that is one release.
    pub since: Option<&'static str>,
    /// What rotor uses it for.
    pub used_for: &'static str,
}

macro_rules! features {
    ($($id:ident = $name:expr, $since:expr, $for:expr;)*) => {
        $(pub static $id: Feature = Feature { name: $name, since: $since, used_for: $for };)*
        /// Every feature [`probe_kernel`] checks, in the order it checks them.
        pub static ALL: &[&Feature] = &[$(&$id),*];
    };
}

features! {
    MAP_HASH = "hash maps (BPF_MAP_TYPE_HASH)", Some("3.19"), "per-socket and per-stream state";
    MAP_ARRAY = "array maps (BPF_MAP_TYPE_ARRAY)", Some("3.19"), "the agent's configuration";
    MAP_LRU_HASH = "LRU hash maps (BPF_MAP_TYPE_LRU_HASH)", Some("4.10"), "destinations of connects that may never complete";
    MAP_PERCPU_ARRAY = "per-CPU array maps (BPF_MAP_TYPE_PERCPU_ARRAY)", Some("4.6"), "kernel counters";
    MAP_SOCKHASH = "socket hash maps (BPF_MAP_TYPE_SOCKHASH)", Some("4.18"), "the sockets frames are redirected between";
    MAP_RINGBUF = "ring buffer maps (BPF_MAP_TYPE_RINGBUF)", Some("5.8"), "flow-control events to the agent";
    MAP_SK_STORAGE = "socket-local storage maps (BPF_MAP_TYPE_SK_STORAGE, with BTF)", Some("5.2"), "a balanced socket's Service address, for getpeername";
    MAP_MMAPABLE = "memory-mapped array maps (BPF_F_MMAPABLE)", Some("5.5"), "the connection table the agent writes in place";
    PROG_CONNECT4 = "cgroup/connect4 programs (BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT)", Some("4.17"), "sending a Service's connections to the agent";
    PROG_GETPEERNAME4 = "cgroup/getpeername4 programs (BPF_CGROUP_INET4_GETPEERNAME)", Some("5.8"), "showing a client the Service address as its peer";
    PROG_CONNECT6 = "cgroup/connect6 programs (BPF_CGROUP_INET6_CONNECT)", Some("4.17"), "balancing dual-stack clients that dial ::ffff:VIP";
    PROG_GETPEERNAME6 = "cgroup/getpeername6 programs (BPF_CGROUP_INET6_GETPEERNAME)", Some("5.8"), "showing a dual-stack client the Service address as its peer";
    PROG_SOCKOPS = "sockops programs (BPF_PROG_TYPE_SOCK_OPS)", Some("4.13"), "adding sockets to socket hashes at ESTABLISHED";
    PROG_SK_SKB = "sk_skb programs (BPF_PROG_TYPE_SK_SKB)", Some("4.14"), "the HTTP/2 frame parser and verdicts";
    H_CONNECT4_LOOKUP = "bpf_map_lookup_elem in cgroup/connect4", None, "looking up Services";
    H_CONNECT4_UPDATE = "bpf_map_update_elem in cgroup/connect4", None, "recording a connection's original destination";
    H_CONNECT4_PID = "bpf_get_current_pid_tgid in cgroup/connect4", None, "leaving the agent's own connections alone";
    H_CONNECT4_COOKIE = "bpf_get_socket_cookie in cgroup/connect4", None, "keying a connection's original destination";
    H_CONNECT4_SK_STORAGE = "bpf_sk_storage_get in cgroup/connect4", None, "keeping the Service address of a reconnecting socket";
    H_GETPEERNAME4_SK_STORAGE = "bpf_sk_storage_get in cgroup/getpeername4", None, "reading a socket's Service address";
    H_SOCKOPS_SK_STORAGE = "bpf_sk_storage_get in sockops", None, "storing a socket's Service address";
    H_SOCKOPS_LOOKUP = "bpf_map_lookup_elem in sockops", None, "finding a connection's original destination";
    H_SOCKOPS_UPDATE = "bpf_map_update_elem in sockops", None, "publishing a client's original destination";
    H_SOCKOPS_DELETE = "bpf_map_delete_elem in sockops", None, "dropping consumed destinations";
    H_SOCKOPS_COOKIE = "bpf_get_socket_cookie in sockops", None, "naming sockets";
    H_SOCKOPS_SETSOCKOPT = "bpf_setsockopt in sockops", None, "sizing receive buffers for redirected frames";
    H_SOCKOPS_HASH_UPDATE = "bpf_sock_hash_update in sockops", None, "adding sockets to socket hashes";
    H_SKB_LOOKUP = "bpf_map_lookup_elem in sk_skb", None, "connection and stream state";
    H_SKB_UPDATE = "bpf_map_update_elem in sk_skb", None, "opening streams";
    H_SKB_DELETE = "bpf_map_delete_elem in sk_skb", None, "closing streams";
    H_SKB_COOKIE = "bpf_get_socket_cookie in sk_skb", None, "per-socket parser state";
    H_SKB_LOAD_BYTES = "bpf_skb_load_bytes in sk_skb", None, "reading HTTP/2 frame headers";
    H_SKB_REDIRECT_HASH = "bpf_sk_redirect_hash in sk_skb", None, "moving frames between sockets";
    H_SKB_RINGBUF_RESERVE = "bpf_ringbuf_reserve in sk_skb", Some("5.8"), "flow-control events";
    H_SKB_RINGBUF_SUBMIT = "bpf_ringbuf_submit in sk_skb", Some("5.8"), "flow-control events";
    H_SKB_LOOP = "bpf_loop in sk_skb", Some("5.17"), "carrying an endpoint's frames to the client in batches";
    INSN_JMP32 = "32-bit jumps (BPF_JMP32, clang -mcpu=v3)", Some("5.1"), "the compiled programs (-mcpu=v3)";
    INSN_ATOMIC_ADD_W = "32-bit atomic add (BPF_ATOMIC BPF_ADD, BPF_W)", None, "per-upstream stream counts";
    INSN_ATOMIC_FETCH_ADD_W = "32-bit atomic fetch-and-add (BPF_ATOMIC BPF_ADD|BPF_FETCH, BPF_W)", Some("5.12"), "per-upstream stream counts";
    INSN_ATOMIC_OR_W = "32-bit atomic or (BPF_ATOMIC BPF_OR, BPF_W)", Some("5.12"), "connection flags";
    INSN_ATOMIC_AND_W = "32-bit atomic and (BPF_ATOMIC BPF_AND, BPF_W)", Some("5.12"), "releasing a stream from the agent";
    INSN_ATOMIC_FETCH_OR_W = "32-bit atomic fetch-and-or (BPF_ATOMIC BPF_OR|BPF_FETCH, BPF_W)", Some("5.12"), "ending a stream once from either side";
    INSN_ATOMIC_FETCH_ADD_DW = "64-bit atomic fetch-and-add (BPF_ATOMIC BPF_ADD|BPF_FETCH, BPF_DW)", Some("5.12"), "flow-control byte counters";
    CTX_CONNECT4 = "cgroup/connect4 rewriting user_ip4/user_port with socket cookie and map update", None, "sending a Service's connections to the agent";
    CTX_GETPEERNAME4 = "cgroup/getpeername4 reading ctx->sk into bpf_sk_storage_get", None, "showing a client the Service address as its peer";
    CTX_SOCKOPS = "sockops with bpf_setsockopt(SO_RCVBUF), bpf_sk_storage_get(skops->sk) and bpf_sock_hash_update", None, "adding sockets to socket hashes at ESTABLISHED";
    CTX_PARSER = "sk_skb stream parser reading cb[0], addresses, ports and bytes", None, "cutting the byte stream into frames";
    CTX_VERDICT = "sk_skb verdict with bpf_sk_redirect_hash(BPF_F_INGRESS) keyed by socket cookie", None, "moving frames between sockets";
    CTX_RINGBUF = "bpf_ringbuf_reserve/bpf_ringbuf_submit from sk_skb", Some("5.8"), "flow-control events";
    ATTACH_PARSER = "attaching a stream parser to a socket hash (BPF_SK_SKB_STREAM_PARSER)", Some("4.18"), "the frame parser";
    ATTACH_VERDICT = "attaching a stream verdict to a socket hash (BPF_SK_SKB_STREAM_VERDICT)", Some("4.18"), "the verdicts";
    LINK_CONNECT4 = "bpf links for cgroup/connect4 (BPF_LINK_CREATE)", Some("5.7"), "detaching when the agent exits (fail-open)";
    LINK_GETPEERNAME4 = "bpf links for cgroup/getpeername4 (BPF_LINK_CREATE)", Some("5.8"), "detaching when the agent exits (fail-open)";
    LINK_SOCKOPS = "bpf links for sockops (BPF_LINK_CREATE)", Some("5.7"), "detaching when the agent exits (fail-open)";
}
