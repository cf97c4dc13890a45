#!/usr/bin/env bash
# tools/clean-stale-shm.sh on a scratch directory: a region named for a pid
# that no longer runs goes, one of a running process (this shell) stays, and
# files of other names are never touched.
set -euo pipefail
script=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# A pid that is certainly gone: a child that has exited and been reaped.
sleep 0 &
gone=$!
wait "$gone"
touch "$dir/$gone:0:0" "$dir/$$:0:1" "$dir/fi_other" "$dir/12x:0:0"
out=$("$script" "$dir")
echo "$out"
[[ ! -e $dir/$gone:0:0 ]] || { echo "FAIL: the dead pid's region is still there"; exit 1; }
[[ -e $dir/$$:0:1 ]] || { echo "FAIL: a running process's region was removed"; exit 1; }
[[ -e $dir/fi_other && -e $dir/12x:0:0 ]] || { echo "FAIL: a file of another name was removed"; exit 1; }
[[ $out == *"removed 1, kept 1"* ]] || { echo "FAIL: unexpected report: $out"; exit 1; }
echo "PASS"
