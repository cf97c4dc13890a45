#!/usr/bin/env bash
# Builds EPX's libFuzzer targets (tests/fuzz) with clang, AddressSanitizer
# and UndefinedBehaviorSanitizer, and runs each for a while.
#
#   tools/fuzz.sh [--seconds N] [--merge] [--jobs N] [target...]
#
#   target     descriptor config fd_protocol handlers peer_gate (default: all)
#   --seconds  how long each target runs (default 10: the short check of
#              tools/test.sh; docs/TESTING.md describes long runs)
#   --merge    afterwards, adds the inputs that reached new coverage to the
#              kept corpus tests/fuzz/corpus/<target>/ (minimised); commit
#              them with the change they cover
#   --jobs     parallel fuzzing processes per target (libFuzzer -fork)
#
# The build uses an output base of its own under ~/.cache/bazel-fuzz (the
# gcc build's outputs stay where they are). New inputs found are kept in
# ~/.cache/epx-fuzz/<target>/ between runs; crashes go to fuzz-crashes/
# <target>/ in the repository (ignored by git). Exits non-zero when a
# target crashed, naming the input that did it: fix the bug, then move the
# input into tests/fuzz/corpus/<target>/ so <target>_regression_test keeps
# it fixed.
set -uo pipefail
cd "$(dirname "$0")/.."

all_targets=(descriptor config fd_protocol handlers peer_gate)
seconds=10
merge=false
jobs=0
targets=()
while (($#)); do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --merge) merge=true; shift ;;
    --jobs) jobs=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    -*) echo "fuzz: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
((${#targets[@]})) || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [[ -d tests/fuzz/corpus/$t ]] || { echo "fuzz: no target $t (one of: ${all_targets[*]})" >&2; exit 2; }
done

command -v clang >/dev/null || { echo "fuzz: no clang (tools/setup.sh installs it)" >&2; exit 1; }

repo=$(pwd -P)
output_base=$HOME/.cache/bazel-fuzz/$(printf '%s' "$repo" | md5sum | cut -c1-16)
labels=()
for t in "${targets[@]}"; do labels+=("//tests/fuzz:${t}_fuzzer"); done

echo "== fuzz: building ${targets[*]} with clang (output base $output_base)"
start=$(date +%s)
build_log=$(mktemp /tmp/epx-fuzz-build-XXXXXX)
trap 'rm -f "$build_log"' EXIT
# --symlink_prefix=/: no bazel-* links in the workspace; those belong to the
# gcc build, and links into this output base would be walked by its //...
if ! bazel --output_base="$output_base" build --config=fuzz --symlink_prefix=/ "${labels[@]}" >"$build_log" 2>&1; then
  grep -E "^(ERROR|FAILED)|error:" "$build_log" | head -n 40
  echo "fuzz: build failed"
  exit 1
fi
bin=$(bazel --output_base="$output_base" info --config=fuzz bazel-bin 2>/dev/null)
echo "fuzz: built in $(($(date +%s) - start)) s"

failed=()
for t in "${targets[@]}"; do
  kept=tests/fuzz/corpus/$t
  found=$HOME/.cache/epx-fuzz/$t
  crashes=fuzz-crashes/$t
  mkdir -p "$found" "$crashes"
  flags=(-max_total_time="$seconds" -timeout=25 -rss_limit_mb=4096 -print_final_stats=1
         -artifact_prefix="$crashes/")
  [[ -f tests/fuzz/$t.dict ]] && flags+=(-dict="tests/fuzz/$t.dict")
  ((jobs > 0)) && flags+=(-fork="$jobs" -ignore_crashes=0)
  log=$crashes/last-run.log
  echo "== fuzz: $t for $seconds s"
  before=$(ls "$crashes" | grep -cvE '^last-run\.log$')
  # Sanitizer reports must end the run: halt on the first, no leak noise
  # from gRPC's and libfabric's process-lifetime caches.
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:handle_abort=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$bin/tests/fuzz/${t}_fuzzer" "${flags[@]}" "$found" "$kept" >"$log" 2>&1
  rc=$?
  grep -aE "^(stat::number_of_executed_units|stat::new_units_added)" "$log" | tr '\n' ' '
  echo
  after=$(ls "$crashes" | grep -cvE '^last-run\.log$')
  if ((rc != 0 || after > before)); then
    input=$(grep -a -m1 -oE "Test unit written to [^ ]+" "$log" | sed 's/Test unit written to //')
    grep -a -m1 -E "ERROR: (AddressSanitizer|UndefinedBehaviorSanitizer|libFuzzer)|runtime error:" "$log"
    echo "fuzz: $t CRASHED (exit $rc); input: ${input:-see $log}; log: $log"
    failed+=("$t")
    continue
  fi
  if $merge; then
    ASAN_OPTIONS=detect_leaks=0 "$bin/tests/fuzz/${t}_fuzzer" -merge=1 "$kept" "$found" >>"$log" 2>&1 &&
      echo "fuzz: $t: kept corpus now $(ls "$kept" | wc -l) inputs"
  fi
done

if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]} crashed (inputs under fuzz-crashes/)"
  exit 1
fi
echo "fuzz: passed: ${targets[*]} ran ${seconds} s each without a crash"
