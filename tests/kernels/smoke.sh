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
# kernel thread that spins) gets one look at the machine in the log.
STALL=${ROTOR_STALL_REPORT:-300}
stall_report() {
	echo "ROTOR-STALL $1: $2"
	{
		echo "load: $(cat /proc/loadavg)"
		ps -eo pid,ppid,stat,pcpu,etimes,wchan:32,args --sort=-pcpu | head -25
		# the busiest kernel threads' stacks (a kworker that spins shows here)
		for p in $(ps -eo pid,pcpu,comm --sort=-pcpu --no-headers | awk '$3 ~ /^(kworker|ksoftirqd)/ && $2 > 5 { print $1 }' | head -4); do
			echo "stack of $p ($(cat /proc/"$p"/comm 2>/dev/null)):"
			cat /proc/"$p"/stack 2>/dev/null
		done
		# bytes stuck in a queue show as Recv-Q / Send-Q, per test namespace
		for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }'); do
			echo "netns $ns:"
			# nsenter, not `ip netns exec`, which remounts /sys (read-only here)
			nsenter --net=/run/netns/"$ns" ss -tnp 2>&1 | awk 'NR == 1 || $2 > 0 || $3 > 0' | head -12
		done
		dmesg 2>/dev/null | tail -20
	} 2>&1 | sed "s/^/$1| stall| /"
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
	while kill -0 $pid 2>/dev/null; do
		sleep 2
		if ((SECONDS - start >= limit)); then
			stall_report "$name" "$limit s: stopped"
			kill -9 -- -$pid 2>/dev/null
			rc=124
			break
		fi
		idle=$(($(date +%s) - $(stat -c %Y "$out_file")))
		if ((idle >= STALL && !reported)); then
			stall_report "$name" "no output for $idle s"
			reported=1
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
