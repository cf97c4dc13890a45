#!/usr/bin/env bash
# Checks with `bazel query` that the daemon's libraries depend on each other
# in one direction only (the order written at the top of daemon/BUILD), that
# the daemon takes nothing from the SDK but its base targets, and that tools/
# never depends on tests/. Prints every edge against the rules; exits 1 if any.
set -uo pipefail
cd "$(dirname "$0")/.."

# Lowest first: a library may depend only on libraries before it.
order=(config fabric shm proxy dataplane jobs control ops shutdown_bound daemon)
# What the daemon may take from the SDK package: base types and contracts.
sdk_allowed="//client:status //client:grpc_status"

bad=0
query() {
  local out
  if ! out=$(bazel query --noshow_progress --output=label "$1" 2>&1); then
    # A dependency cycle (the worst layering error) makes the query fail.
    echo "$out" | grep -E "ERROR|cycle" | head -5 >&2
    return 1
  fi
  echo "$out" | grep -E "^//|^@" || true
}

for ((i = 0; i < ${#order[@]}; i++)); do
  lib=${order[$i]}
  allowed=" ${order[*]:0:$i} "
  deps=$(query "kind('cc_library', deps(//daemon:$lib, 1)) except //daemon:$lib") || {
    echo "layering: bazel query failed for //daemon:$lib"
    exit 1
  }
  for dep in $deps; do
    case "$dep" in
      //daemon:*)
        name=${dep#//daemon:}
        if [[ "$allowed" != *" $name "* ]]; then
          echo "layering: //daemon:$lib -> $dep is against the order (${order[*]})"
          bad=1
        fi
        ;;
      //client:*)
        if [[ " $sdk_allowed " != *" $dep "* ]]; then
          echo "layering: //daemon:$lib -> $dep: the daemon may take only $sdk_allowed from the SDK"
          bad=1
        fi
        ;;
      //tests*|//tools*)
        echo "layering: //daemon:$lib -> $dep: the daemon never depends on tests/ or tools/"
        bad=1
        ;;
    esac
  done
done

# Every daemon library is in the order (a new one must be placed).
for lib in $(query "kind('cc_library', //daemon:*)"); do
  name=${lib#//daemon:}
  if [[ " ${order[*]} " != *" $name "* ]]; then
    echo "layering: $lib is not in the order; add it to tools/check-layering.sh and daemon/BUILD's header"
    bad=1
  fi
done

# tools/ never depends on tests/.
leak=$(query "deps(//tools/...) intersect //tests/...")
if [[ -n "$leak" ]]; then
  echo "layering: tools/ depends on tests/: $(echo $leak)"
  bad=1
fi

if ((bad)); then
  echo "layering: FAILED"
  exit 1
fi
echo "layering: OK (daemon: ${order[*]}; tools/ independent of tests/)"
