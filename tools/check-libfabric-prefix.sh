#!/usr/bin/env bash
# Proves the daemon builds against a newer libfabric at another prefix (the
# --config=aws setting, EPX_LIBFABRIC_PREFIX) and that the device-window
# registration (fi_mr_regattr with FI_MR_DMABUF, libfabric >= 1.20) is then
# compiled in, not the 1.17 refusal.
#
# Uses Debian trixie's libfabric 2.1 packages, unpacked (dpkg -x) into a
# cache. They come from the Debian archive this machine's apt is configured
# with (sources.list, sources.list.d/*.list or deb822 *.sources, as
# `apt-get indextargets` reads them): Debian's pool is shared by all its
# suites, so a bookworm mirror serves trixie's files too, and the pinned
# sha256 below decides whatever the mirror. apt's own downloader
# (apt-helper, with apt's proxy settings) fetches them. The repository names
# no host. Their libraries need glibc 2.38, newer than this machine's, so
# nothing is linked: Bazel builds //daemon/... compilation outputs only,
# with -DEPX_REQUIRE_FI_MR_DMABUF, which makes device_memory.cc refuse to
# compile without FI_MR_DMABUF. A separate Bazel output base keeps the
# regular build's cache (and @libfabric from /usr) untouched.
#
# Prints one "libfabric-prefix check: PASSED|FAILED ..." line last; exits
# non-zero on any failure, including a download that is not possible.
set -uo pipefail
cd "$(dirname "$0")/.."

version=2.1.0-1.1
pool_path=pool/main/libf/libfabric
# sha256 of the two .debs (Debian's pool files for $version).
declare -A sha256=(
  [libfabric-dev_${version}_amd64.deb]=0c827978d96c2c84bb4065d14f2cc2f6774c2145a2e6ad84dc3e7c25956abb0a
  [libfabric1_${version}_amd64.deb]=2cab4f5fda610ccebc8c9da61f81cf6a49f99f103ef44b3f22828400565c8639
)
cache=${EPX_LIBFABRIC_CACHE:-$HOME/.cache/epx/libfabric-$version}
prefix=$cache/root/usr

fail() {
  echo "libfabric-prefix check: FAILED: $*"
  exit 1
}

# The archives (base URIs) of this machine's deb sources, in apt's order.
archives() {
  apt-get indextargets --no-release-info --format '$(TARGET_OF) $(REPO_URI)' 2>/dev/null |
    awk '$1 == "deb" && !seen[$2]++ { print $2 }'
}

# download DEB FILE: from the first archive that has it with the pinned sha256.
download() {
  local deb=$1 file=$2 archive tried=() sandbox=()
  [[ $(id -u) -ne 0 ]] || sandbox=(-o APT::Sandbox::User=root)  # root may write where _apt cannot
  mapfile -t sources < <(archives)
  ((${#sources[@]})) || fail "apt has no deb sources configured (apt-get indextargets lists none), so there is no archive to fetch $deb from"
  for archive in "${sources[@]}"; do
    echo "downloading ${archive%/}/$pool_path/$deb"
    if /usr/lib/apt/apt-helper "${sandbox[@]}" download-file "${archive%/}/$pool_path/$deb" "$file.part" \
      "SHA256:${sha256[$deb]}" >"$file.log" 2>&1; then
      rm -f "$file.log"
      mv "$file.part" "$file"
      return 0
    fi
    tried+=("$(grep -m1 "^E: " "$file.log" | sed "s/^E: //" | tr -s ' ')")
    rm -f "$file.part" "$file.part.FAILED"
  done
  rm -f "$file.log"
  fail "cannot download $deb with sha256 ${sha256[$deb]} from any archive apt is configured with" \
    "($(printf '%s; ' "${tried[@]}")no network, a mirror that is not Debian's, or Debian dropped $version" \
    "from its pool: update version and sha256 here)"
}

if [[ ! -f $prefix/include/rdma/fi_domain.h || ! -e $prefix/lib/x86_64-linux-gnu/libfabric.so ]]; then
  mkdir -p "$cache/debs" || fail "cannot create $cache"
  rm -rf "$cache/root"
  for deb in "${!sha256[@]}"; do
    file=$cache/debs/$deb
    if ! { [[ -f $file ]] && echo "${sha256[$deb]}  $file" | sha256sum -c --quiet - >/dev/null 2>&1; }; then
      download "$deb" "$file"
      echo "${sha256[$deb]}  $file" | sha256sum -c --quiet - || fail "$deb does not have the expected sha256"
    fi
    dpkg -x "$file" "$cache/root" || fail "dpkg -x $file"
  done
fi
grep -q "define FI_MR_DMABUF" "$prefix/include/rdma/fi_domain.h" ||
  fail "$prefix/include/rdma/fi_domain.h has no FI_MR_DMABUF"
headers=$(sed -n 's/^#define FI_MAJOR_VERSION \([0-9]*\)$/\1/p;s/^#define FI_MINOR_VERSION \([0-9]*\)$/.\1/p' \
  "$prefix/include/rdma/fabric.h" | tr -d '\n')
echo "compiling //daemon/... against libfabric $headers headers at $prefix (no link)"

log=$(mktemp /tmp/epx-libfabric-check-XXXXXX)
trap 'rm -f "$log"' EXIT
# --max_idle_secs: the second Bazel server goes away soon after.
# --symlink_prefix=/: no bazel-* symlinks, so the workspace's keep pointing
# at the regular build.
bazel --output_base="$cache/bazel" --max_idle_secs=60 build \
  --symlink_prefix=/ \
  --repo_env=EPX_LIBFABRIC_PREFIX="$prefix" \
  --copt=-DEPX_REQUIRE_FI_MR_DMABUF \
  --output_groups=compilation_outputs \
  //daemon/... >"$log" 2>&1
rc=$?
if [[ $rc -ne 0 ]] || ! grep -q "Build completed successfully" "$log"; then
  grep -vE "linux-sandbox|^\s*$" "$log" | grep -E "error|ERROR" | head -n 30
  fail "//daemon/... does not compile against libfabric $headers at $prefix"
fi
echo "libfabric-prefix check: PASSED (//daemon/... compiles against libfabric $headers headers, FI_MR_DMABUF path included)"
