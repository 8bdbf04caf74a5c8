#!/usr/bin/env bash
# The kernel smoke subset, run by `cargo xtask kernels` inside each kernel's
# VM (virtme-ng, host root read-only) and directly for the host kernel.
#
#   smoke.sh BIN_DIR PROBE_BIN NAME=TEST_BIN[:FILTER]...
#
# BIN_DIR holds the workspace's binaries (staged copies: rotor-agent,
# rotor-load, ...), which the tests are pointed at. PROBE_BIN is the rotor library's unit-test binary: its probe test prints
# one `ROTOR-PROBE ok|refused ...` line. Each NAME=TEST_BIN is a prebuilt
# integration-test binary (built on the host), run with FILTER. For each
# column it prints `ROTOR-RESULT NAME ok|refused|fail|absent DETAIL`, which
# the xtask reads; everything else is the log.
set -u
export RUST_BACKTRACE=0 NO_COLOR=1
echo "ROTOR-KERNEL $(uname -r)"
bin_dir=$1
probe_bin=$2
shift 2
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

for spec in "$@"; do
	name=${spec%%=*}
	rest=${spec#*=}
	bin=${rest%%:*}
	filter=""
	[[ $rest == *:* ]] && filter=${rest#*:}
	start=$SECONDS
	# shellcheck disable=SC2086 # the filter is one word or none
	out=$(timeout 600 "$bin" $filter --test-threads=1 2>&1)
	rc=$?
	printf '%s\n' "$out" | sed "s/^/$name| /"
	if ((rc == 0)) && printf '%s\n' "$out" | grep -q 'test result: ok. [1-9]'; then
		res="ok $(printf '%s\n' "$out" | grep -m1 -o 'test result: ok. [0-9]* passed')"
	elif printf '%s\n' "$out" | grep -q 'rotor needs'; then
		res="refused $(printf '%s\n' "$out" | grep -m1 -o 'lacks .*' | cut -c1-300)"
	elif ((rc == 124)); then
		res="fail timed out after 600 s"
	else
		res="fail rc=$rc $(printf '%s\n' "$out" | grep -m1 -A1 'panicked at' | tail -1 | cut -c1-300)"
	fi
	echo "ROTOR-RESULT $name $res [$((SECONDS - start)) s]"
done
echo "ROTOR-DONE"
