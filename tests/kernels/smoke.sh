#!/usr/bin/env bash
# The kernel smoke subset, run by `cargo xtask kernels` inside each kernel's
# VM (virtme-ng, host root read-only) and directly for the host kernel.
#
#   smoke.sh [--host-ms MS] [--timeout S] [--python PY] [--image OCI_TAR] BIN_DIR PROBE_BIN NAME=TEST_BIN[:FILTER]...
#   smoke.sh --calibrate      # prints this machine's calibration time, ms
#
# --host-ms is the host's calibration time: the script measures its own and
# exports ROTOR_TIME_SCALE=guest/host (at least 1), by which the tests scale
# their liveness bounds (rotor_tests::util::scaled), so that a VM under
# software emulation gets a true answer and not a timeout tuned for the host.
# --timeout limits each test binary (default 600 s).
#
# BIN_DIR holds the workspace's binaries (staged copies: rotor-agent,
# rotor-load, ...), which the tests are pointed at. PROBE_BIN is the rotor library's unit-test binary: its probe test prints
# one `ROTOR-PROBE ok|refused ...` line. Each NAME=TEST_BIN is a prebuilt
# integration-test binary (built on the host), run with FILTER. For each
# column it prints `ROTOR-RESULT NAME ok|refused|fail|absent DETAIL`, which
# the xtask reads; everything else is the log.
set -u
export RUST_BACKTRACE=0 NO_COLOR=1

# What the tests do most, in miniature: processes started and CPU work in
# user space. Best of three, so one stall of a shared machine does not count.
calibrate() {
	local best=0 t0 ms i n
	for _ in 1 2 3; do
		t0=$(date +%s%N)
		for ((i = 0; i < 16; i++)); do /bin/true; done
		n=0
		for ((i = 0; i < 8000; i++)); do n=$((n + i)); done
		ms=$((($(date +%s%N) - t0) / 1000000))
		((best == 0 || ms < best)) && best=$ms
	done
	echo "$((best > 0 ? best : 1))"
}
if [[ ${1:-} == --calibrate ]]; then
	calibrate
	exit 0
fi
host_ms=""
limit=600
while [[ ${1:-} == --* ]]; do
	case $1 in
	--host-ms) host_ms=$2 ;;
	--timeout) limit=$2 ;;
	# the host's interpreter with grpcio, h2, httpx (pyenv shims need the host's env)
	--python) export ROTOR_PYTHON=$2 ;;
	# the agent's image, built on the host: the guest cannot write target/
	--image) export ROTOR_IMAGE=$2 ;;
	*) echo "smoke.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift 2
done

echo "ROTOR-KERNEL $(uname -r)"
echo "ROTOR-ENV PATH=$PATH ROTOR_PYTHON=${ROTOR_PYTHON:-}"
# The tests' delay line (testbed/src/delay_line.rs) opens /dev/net/tun.
# Debian builds tun as a module and the guest's /dev has no node for it
# until the module is loaded: policies.rs failed on 6.1 with "opening
# /dev/net/tun: No such file or directory". A no-op on the host.
if [[ ! -e /dev/net/tun ]]; then
	modprobe tun 2>/dev/null
	if [[ ! -e /dev/net/tun ]]; then
		mkdir -p /dev/net && mknod /dev/net/tun c 10 200
	fi
	[[ -e /dev/net/tun ]] || echo "smoke.sh: no /dev/net/tun: the delay-line tests will fail" >&2
fi
# A node's container runtime hands the agent a high hard limit of open
# files (containerd: 1048576; this host: 20000); the guest's init leaves
# 4096, below what 1,000 balanced connections to 5 endpoints hold (one
# socket each plus one per endpoint): scale.rs failed on 6.1 with the agent
# at 4,095 descriptors and its connects failing. As on the host, then.
ulimit -n 65536 2>/dev/null || echo "smoke.sh: open file limit stays $(ulimit -n)" >&2
bin_dir=$1
probe_bin=$2
shift 2
if [[ -n $host_ms ]]; then
	own_ms=$(calibrate)
	# one decimal, at least 1: the tests never get less time than on the host
	scale=$(awk -v g="$own_ms" -v h="$host_ms" 'BEGIN { s = g / h; if (s < 1) s = 1; printf "%.1f", s }')
	export ROTOR_TIME_SCALE=$scale
	echo "ROTOR-SCALE $scale (calibration: here $own_ms ms, host $host_ms ms)"
fi
for pair in rotor-agent:ROTOR_AGENT_BIN rotor-load:ROTOR_LOAD_BIN rotor-peer:ROTOR_PEER_BIN \
	rotor-h2-backend:ROTOR_H2_BACKEND_BIN rotor-bench-load:ROTOR_BENCH_LOAD_BIN; do
	[[ -x $bin_dir/${pair%%:*} ]] && export "${pair#*:}=$bin_dir/${pair%%:*}"
done

start=$SECONDS
out=$(timeout 120 "$probe_bin" ebpf::probe::tests::this_kernel --exact --nocapture --test-threads=1 2>&1)
rc=$?
printf '%s\n' "$out" | sed 's/^/probe| /'
line=$(printf '%s\n' "$out" | grep -m1 -o 'ROTOR-PROBE .*' || true)
case "$line" in
"ROTOR-PROBE ok"*) res="ok ${line#ROTOR-PROBE ok }" ;;
"ROTOR-PROBE refused"*) res="refused ${line#ROTOR-PROBE refused }" ;;
*) if printf '%s\n' "$out" | grep -q 'running 0 tests'; then
		res="absent probe test not in this build"
	else
		res="fail rc=$rc $(printf '%s\n' "$out" | grep -m1 -A1 'panicked at' | tail -1 | cut -c1-300)"
	fi ;;
esac
echo "ROTOR-RESULT probe $res [$((SECONDS - start)) s]"

# A target that prints nothing for this long (a test that hangs, or a
# kernel thread that spins) gets a look at the machine in the log, up to
# three, one per STALL seconds of silence. With an agent built by
# `ROTOR_CLANG=<clang-16 -DROTOR_DEBUG_PARSE wrapper> cargo xtask kernels`
# the look includes the client parser's trace (lib/h2.h).
STALL=${ROTOR_STALL_REPORT:-180}
stall_report() {
	echo "ROTOR-STALL $1: $2"
	{
		echo "load: $(cat /proc/loadavg)"
		# per thread: a tokio worker blocked in the kernel shows its wait
		# channel here, not on its process's line
		ps -eLo pid,tid,stat,pcpu,etimes,wchan:32,comm --sort=-pcpu | awk 'NR == 1 || $3 ~ /D/ || $4 > 1 || $7 ~ /^(rotor|kworker|python|nghttp|h2load)/' | head -60
		# the stacks of every task in uninterruptible sleep (a socket lock
		# that is never released shows as several tasks in lock_sock, and
		# the holder's stack)
		if [[ -w /proc/sysrq-trigger ]]; then
			seen=$(dmesg 2>/dev/null | wc -l)
			echo w >/proc/sysrq-trigger
			sleep 1
			dmesg 2>/dev/null | tail -n +$((seen + 1)) | head -300
		fi
		for p in $(ps -eLo tid,stat --no-headers | awk '$2 ~ /D/ { print $1 }' | head -8); do
			echo "stack of $p ($(cat /proc/"$p"/comm 2>/dev/null)):"
			timeout 5 cat /proc/"$p"/stack 2>/dev/null
		done
		# every TCP socket per test namespace: bytes stuck show as Recv-Q /
		# Send-Q; memory held off the TCP queue (a psock's or strparser's)
		# shows only in skmem (r: receive memory charged, rb: its limit),
		# and a closed window in rcv_space / snd_wnd. `ss -i` takes each
		# socket's lock, so it is limited: a lock never released stops it.
		for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }'); do
			echo "netns $ns:"
			# nsenter, not `ip netns exec`, which remounts /sys (read-only here)
			timeout 10 nsenter --net=/run/netns/"$ns" ss -tanp 2>&1 | head -30
			timeout 10 nsenter --net=/run/netns/"$ns" ss -tanmi >"$out_file.ss" 2>&1
			(($? == 124)) && echo "(ss -tanmi: no answer in 10 s; what it printed follows)"
			head -60 "$out_file.ss"
			rm -f "$out_file.ss"
		done
		cat /proc/net/sockstat 2>/dev/null
		# the kernel's side of each socket: where its parser stands
		# (next_seq against TCP's bytes_received above) and what the
		# verdicts counted
		if command -v bpftool >/dev/null; then
			for m in parse_states stats; do
				echo "map $m:"
				timeout 10 bpftool map dump name "$m" 2>&1 | head -150
			done
		fi
		# a debug build's trace lines (ROTOR_CLANG adding -DROTOR_DEBUG_PARSE)
		for t in /sys/kernel/tracing/trace /sys/kernel/debug/tracing/trace; do
			[[ -r $t ]] && { grep 'rotor-' "$t" | tail -80; break; }
		done
		dmesg 2>/dev/null | grep -v 'sysrq\|task:\|Call Trace\|^\[.*\]  ' | tail -20
	} 2>&1 | sed -u "s/^/$1| stall| /"
}

for spec in "$@"; do
	name=${spec%%=*}
	rest=${spec#*=}
	bin=${rest%%:*}
	filter=""
	[[ $rest == *:* ]] && filter=${rest#*:}
	start=$SECONDS
	# The output goes to the log as it comes (libtest names each test as
	# it starts), so a test that hangs shows which one it is; a target
	# silent for STALL seconds gets one look at the machine (stall_report).
	out_file=$(mktemp)
	# shellcheck disable=SC2086 # the filter is one word or none
	# its own process group, so that a stop takes the agents and peers it
	# started with it
	setsid "$bin" $filter --test-threads=1 >"$out_file" 2>&1 &
	pid=$!
	tail -n +1 -f --pid=$pid "$out_file" | sed -u "s/^/$name| /" &
	follower=$!
	rc=""
	reported=0
	next=$STALL
	while kill -0 $pid 2>/dev/null; do
		sleep 2
		if ((SECONDS - start >= limit)); then
			stall_report "$name" "$limit s: stopped"
			kill -9 -- -$pid 2>/dev/null
			rc=124
			break
		fi
		idle=$(($(date +%s) - $(stat -c %Y "$out_file")))
		# one look per STALL seconds of silence, three at most per
		# target: whether anything moved between two looks is the answer
		if ((idle < STALL)); then
			next=$STALL
		elif ((idle >= next && reported < 3)); then
			stall_report "$name" "no output for $idle s"
			reported=$((reported + 1))
			next=$((next + STALL))
		fi
	done
	if [[ -z $rc ]]; then
		wait $pid
		rc=$?
	fi
	wait $follower 2>/dev/null
	# a test stopped mid-line ("test x ... ") leaves no newline
	((rc == 124)) && echo
	out=$(cat "$out_file")
	rm -f "$out_file"
	if ((rc == 0)) && printf '%s\n' "$out" | grep -q 'test result: ok. [1-9]'; then
		res="ok $(printf '%s\n' "$out" | grep -m1 -o 'test result: ok. [0-9]* passed')"
	elif printf '%s\n' "$out" | grep -q 'rotor needs'; then
		res="refused $(printf '%s\n' "$out" | grep -m1 -o 'lacks .*' | cut -c1-300)"
	elif ((rc == 124)); then
		res="fail timed out after $limit s"
	else
		res="fail rc=$rc $(printf '%s\n' "$out" | grep -m1 -A1 'panicked at' | tail -1 | cut -c1-300)"
	fi
	echo "ROTOR-RESULT $name $res [$((SECONDS - start)) s]"
done
echo "ROTOR-DONE"
