#!/usr/bin/env bash
# EPX's tests: installs what is missing, builds everything (GPU code too),
# runs every test that needs no GPU (Bazel's, then pytest's for python/),
# runs four checks
# (tools/check-layering.sh, tools/check-libfabric-prefix.sh,
# tools/check-format.sh, tools/fuzz.sh), and ends with
# the line
#   N passed, N failed, N skipped
# Exit status is non-zero iff N failed > 0. Extra arguments go to bazel test.
#
# Skipped, never passed:
#   * a test that cannot run here prints a line "EPX_TEST_SKIPPED: <why>" and
#     exits 0 (Bazel says PASSED); its log decides, and the reason is printed;
#   * a test case that cannot run prints "EPX_TEST_CASE_SKIPPED: <why>": the
#     binary counts as passed and each such case as one skipped;
#   * GPU tests (tag gpu) are built but not run here; tools/device/run.sh runs
#     them on a GPU machine.
# The checks are no tests: they have their own lines, and their results are
# counted in the closing line's passed or failed.
set -uo pipefail
cd "$(dirname "$0")/.."

summary() { echo "$1 passed, $2 failed, $3 skipped"; }

tools/setup.sh || { echo "setup failed"; summary 0 1 0; exit 1; }

log=$(mktemp /tmp/epx-test-log-XXXXXX)
trap 'rm -f "$log"' EXIT

echo "== bazel build //..."
bazel build //... 2>&1 | tee "$log" | grep -E "^(ERROR|FAILED)|error:"
if ! grep -q "Build completed successfully" "$log"; then
  tail -n 40 "$log"
  echo "build failed"
  summary 0 1 0
  exit 1
fi

# Regions of killed processes make shm refuse a new process that reuses
# their pid: clear the dead ones before the tests start processes.
tools/clean-stale-shm.sh

echo "== bazel test //... --test_tag_filters=-gpu --keep_going${*:+ $*} (GPU tests are not run here)"
bazel test //... --test_tag_filters=-gpu --keep_going "$@" 2>&1 | tee "$log" | grep -vE "^\s*$|linux-sandbox"
bazel_rc=${PIPESTATUS[0]}

# Where this configuration's test logs are: not the bazel-testlogs symlink,
# which another build in this workspace (other flags) may have re-pointed.
testlogs=$(bazel info bazel-testlogs "$@" 2>/dev/null) || testlogs=bazel-testlogs

passed=0 failed=0 skipped=0
skips=()
while read -r label; do
  path=${label#//}
  test_log=$testlogs/${path%%:*}/${path#*:}/test.log
  reason=$(grep -m1 "^EPX_TEST_SKIPPED: " "$test_log" 2>/dev/null)
  if [[ -n $reason ]]; then
    skipped=$((skipped + 1))
    skips+=("$label: ${reason#EPX_TEST_SKIPPED: }")
  elif [[ -f $test_log ]]; then
    passed=$((passed + 1))
    # Test cases that returned early (EPX_TEST_CASE_SKIPPED) are skipped.
    while read -r why; do
      skipped=$((skipped + 1))
      skips+=("$label (one case): ${why#EPX_TEST_CASE_SKIPPED: }")
    done < <(grep "^EPX_TEST_CASE_SKIPPED: " "$test_log")
  else
    echo "$label: PASSED but its log $test_log is missing: counted as failed"
    failed=$((failed + 1))
  fi
done < <(sed -nE 's/^(\/\/[^ ]+) +(\(cached\) )?PASSED.*/\1/p' "$log")
failed=$((failed + $(grep -cE "^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD|INCOMPLETE)" "$log")))
if [[ $bazel_rc -ne 0 && $failed -eq 0 ]]; then failed=1; fi  # e.g. a build error before any test ran

# GPU tests that did not run (the tag filter; extra arguments may lift it).
while read -r label; do
  grep -qE "^$label +" "$log" && continue
  skipped=$((skipped + 1))
  skips+=("$label: tag gpu, not run here (tools/device/run.sh runs it on a GPU machine)")
done < <(bazel query 'attr(tags, "\bgpu\b", tests(//...))' 2>/dev/null)

# The Python packages (python/): pytest with Debian's python3 and CPU torch
# (tools/setup.sh), against this build's libepx_c.so, epxd and epxctl. Its
# test cases are counted one by one; an error (a fixture failing) is failed.
echo "== pytest python/tests (the epx and deep_ep packages against real epxd daemons)"
bazel_bin=$(bazel info bazel-bin "$@" 2>/dev/null) || bazel_bin=bazel-bin
pytest_log=$(mktemp /tmp/epx-pytest-log-XXXXXX)
EPX_LIBRARY=$bazel_bin/python/native/libepx_c.so EPX_EPXD=$bazel_bin/daemon/epxd EPX_EPXCTL=$bazel_bin/tools/epxctl \
  PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 -m pytest python/tests -q -rs -p no:cacheprovider 2>&1 | tee "$pytest_log"
pytest_rc=${PIPESTATUS[0]}
pytest_count() { grep -oE "[0-9]+ $1" "$pytest_log" | tail -n 1 | grep -oE "^[0-9]+" || echo 0; }
py_passed=$(pytest_count passed)
py_failed=$(($(pytest_count failed) + $(pytest_count "errors?")))
py_skipped=$(pytest_count skipped)
if [[ $pytest_rc -ne 0 && $py_failed -eq 0 ]]; then py_failed=1; fi  # e.g. nothing collected
while read -r why; do skips+=("pytest $why"); done < <(grep -E "^SKIPPED " "$pytest_log")
rm -f "$pytest_log"
echo "== pytest: $py_passed passed, $py_failed failed, $py_skipped skipped"
passed=$((passed + py_passed)) failed=$((failed + py_failed)) skipped=$((skipped + py_skipped))

echo "== tests: $passed passed, $failed failed, $skipped skipped"
for s in "${skips[@]}"; do echo "skipped $s"; done

# Checks, not tests: each is reported on its own lines and counted in the
# closing line's passed or failed.
#   libfabric-prefix: the daemon compiles against libfabric 2.1 headers with
#     the FI_MR_DMABUF path (the --config=aws setting); a download that is not
#     possible fails it.
#   format: tools/ and tests/ match .clang-format.
#   fuzz: every libFuzzer target (tests/fuzz) builds with clang, ASan and
#     UBSan and runs 10 s without a crash (docs/TESTING.md: longer runs).
check() {  # name command...
  local name=$1
  shift
  echo "== check (not a test): $name ($*)"
  if "$@"; then
    passed=$((passed + 1))
    echo "check $name: passed (counted below as 1 passed)"
  else
    failed=$((failed + 1))
    echo "check $name: failed (counted below as 1 failed)"
  fi
}
check layering tools/check-layering.sh
check libfabric-prefix tools/check-libfabric-prefix.sh
check format tools/check-format.sh
check fuzz tools/fuzz.sh --seconds 10
summary "$passed" "$failed" "$skipped"
[[ $failed -eq 0 ]]
