#!/usr/bin/env bash
# Builds the EPX Python wheel: the packages `epx` and `deep_ep` (python/)
# with libepx_c.so as package data (epx/lib/), plus the shared libraries it
# links that a serving machine may lack (gRPC, protobuf, abseil and their
# dependencies from this build machine; found through the library's
# RUNPATH $ORIGIN). Not bundled: glibc, libstdc++, libgcc_s and the CUDA
# runtime (taken from the process, i.e. torch, or /usr/local/cuda/lib64).
#
#   tools/build-wheel.sh [OUT_DIR]      (default dist/; PYTHON, EPX_LIBRARY: see below)
#   pip install --no-index dist/epx-*.whl
#
# Offline: bazel builds from the local cache and pip builds the wheel with
# the machine's setuptools and wheel (no build isolation, no downloads).
# The wheel is tagged py3-none-linux_x86_64: one build for every CPython
# >= 3.9 and torch, since the native part is a C ABI loaded with ctypes.
set -euo pipefail
cd "$(dirname "$0")/.."

out=$(realpath -m "${1:-dist}")
python=${PYTHON:-/usr/bin/python3}
version=$(sed -nE 's/^version = "([^"]+)".*/\1/p' python/VERSION.toml)

# EPX_LIBRARY: an already built libepx_c.so (the tests pass bazel-bin's).
if [[ -n ${EPX_LIBRARY:-} ]]; then
  library=$EPX_LIBRARY
else
  bazel build //python/native:libepx_c.so
  library=$(bazel info bazel-bin)/python/native/libepx_c.so
fi

stage=$(mktemp -d /tmp/epx-wheel-XXXXXX)
trap 'rm -rf "$stage"' EXIT
cp -r python/epx python/deep_ep "$stage"/
find "$stage" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p "$stage/epx/lib"
install -m 0755 "$library" "$stage/epx/lib/libepx_c.so"

# The libraries ldd resolves for it, but the base system's and CUDA's.
keep_out='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|librt\.|libpthread\.|libstdc\+\+\.|libgcc_s\.|libcudart\.)'
ldd "$library" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | while read -r name path; do
  [[ $name =~ $keep_out ]] && continue
  install -m 0644 "$path" "$stage/epx/lib/$name"
done

# Their load order, dependencies first (epx/_native.py loads them in it, so
# each finds what it needs already loaded from the wheel by soname).
(cd "$stage/epx/lib" && for lib in lib*.so*; do
  [[ $lib == libepx_c.so ]] && continue
  echo "$lib $(readelf -d "$lib" | sed -nE 's/.*\(NEEDED\).*\[(.*)\]/\1/p' | tr '\n' ' ')"
done) | "$python" -c '
import sys
needs = {f[0]: [n for n in f[1:]] for f in (line.split() for line in sys.stdin) if f}
order, seen = [], set()
def visit(lib):
    if lib in seen or lib not in needs:
        return
    seen.add(lib)
    for dep in needs[lib]:
        visit(dep)
    order.append(lib)
for lib in sorted(needs):
    visit(lib)
print("\n".join(order))' >"$stage/epx/lib/load-order.txt"

cat >"$stage/setup.py" <<EOF
from setuptools import setup
from wheel.bdist_wheel import bdist_wheel


class platform_wheel(bdist_wheel):
    """Pure Python plus a native library loaded with ctypes: any CPython, one platform."""

    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        return "py3", "none", "linux_x86_64"


setup(
    name="epx",
    version="$version",
    description="EPX: DeepEP-compatible MoE dispatch/combine through the node's epxd (packages epx and deep_ep)",
    packages=["epx", "deep_ep"],
    package_data={"epx": ["lib/*"]},
    python_requires=">=3.9",
    cmdclass={"bdist_wheel": platform_wheel},
    zip_safe=False,
)
EOF

mkdir -p "$out"
"$python" -m pip wheel --no-build-isolation --no-deps --no-index -w "$out" "$stage"
ls -l "$out"/epx-"$version"-*.whl
