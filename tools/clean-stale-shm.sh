#!/usr/bin/env bash
# Removes libfabric shm provider regions left in /dev/shm by processes that
# are gone (killed, or exited without closing their endpoints). shm names a
# region "<pid>:<n>:<n>" and refuses to open an endpoint whose name exists
# while that pid is alive ("shm file in use", EBUSY), so once pids wrap a
# stale region fails a new process that happens to get the same pid. The
# tests kill daemons on purpose (SIGKILL leaves the region behind), so
# tools/test.sh runs this first. Regions of running processes are kept.
#   tools/clean-stale-shm.sh [DIR]   (default /dev/shm)
set -uo pipefail
dir=${1:-/dev/shm}
removed=0 kept=0
for f in "$dir"/*; do
  name=${f##*/}
  [[ $name =~ ^([0-9]+):[0-9]+:[0-9]+$ ]] || continue
  pid=${BASH_REMATCH[1]}
  if [[ -d /proc/$pid ]]; then
    kept=$((kept + 1))
  elif rm -f -- "$f"; then
    removed=$((removed + 1))
  fi
done
echo "stale libfabric shm regions in $dir: removed $removed, kept $kept of running processes"
