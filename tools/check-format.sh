#!/usr/bin/env bash
# Checks C++ and CUDA sources (.cc .h .cu .cuh) against .clang-format with
# the machine's clang-format (tools/setup.sh installs it), changing nothing.
#   tools/check-format.sh              tools/ and tests/ (formatted so far)
#   tools/check-format.sh DIR|FILE...  those instead
#   tools/check-format.sh --fix [...]  rewrites the files instead of checking
# The other directories are to be formatted when their owners next change
# them. Prints "format check: PASSED|FAILED ..." last; exits non-zero when a
# file differs from its formatted form.
set -uo pipefail
cd "$(dirname "$0")/.."

fix=false
if [[ ${1:-} == --fix ]]; then
  fix=true
  shift
fi
(($#)) || set -- tools tests

command -v clang-format >/dev/null || { echo "format check: FAILED: no clang-format (tools/setup.sh installs it)"; exit 1; }
mapfile -t files < <(git ls-files --cached --others --exclude-standard -- "$@" | grep -E '\.(cc|h|cu|cuh)$' | sort -u)
((${#files[@]})) || { echo "format check: FAILED: no C++ or CUDA files under $*"; exit 1; }

if $fix; then
  clang-format -i --style=file "${files[@]}"
  echo "format: rewrote ${#files[@]} files under $* with $(clang-format --version)"
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  clang-format --style=file --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if ((${#bad[@]})); then
  for f in "${bad[@]}"; do
    echo "-- $f"
    clang-format --style=file "$f" | diff -u "$f" - | sed -n '3,40p'
  done
  echo "format check: FAILED: ${#bad[@]} of ${#files[@]} files under $* differ from .clang-format (fix: tools/check-format.sh --fix $*)"
  exit 1
fi
echo "format check: PASSED (${#files[@]} files under $*)"
