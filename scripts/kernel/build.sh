#!/usr/bin/env bash
# Builds the guest kernels with iommufd and the VFIO device cdev from a Debian linux-source
# tarball, and lays each out like scripts/provision.sh's packaged kernels:
#
#   OUT/<label>/vmlinuz, release, packages, config, key, modules/<release>/{modules.dep,modules.builtin}
#
# (modules.dep is empty: everything is built in; the test harness skips built-in modules by
# modules.builtin). Called by scripts/provision.sh, which fetches the source and decides when a
# rebuild is due (KEY changes with the source version, this script, the fragment, the compiler).
#
#   build.sh SOURCE-TARBALL OUT-DIR PACKAGES KEY
#
# The variants share one output tree: the second is an incremental build of the first, so it
# recompiles only what its config changes (kbuild's per-symbol dependencies, include/config/).
#
#   7.3-iommufd  scripts/kernel/vfio-guest.config as is (group + container + cdev + iommufd)
#   7.3-cdev     the same without VFIO_GROUP (so without VFIO_CONTAINER): cdev + iommufd only
#
# Environment: VFIO_TS_KERNEL_JOBS (make -j; default nproc), VFIO_TS_KERNEL_KEEP=1 keeps the
# unpacked source and the build tree (OUT/.build-7.3) for a look afterwards.
set -euo pipefail

SRC_TARBALL=$1
OUT=$2
PACKAGES=$3
KEY=$4
HERE=$(cd "$(dirname "$0")" && pwd)
FRAGMENT=$HERE/vfio-guest.config
JOBS=${VFIO_TS_KERNEL_JOBS:-$(nproc)}
WORK=$OUT/.build-7.3
MAKE=(make -s ARCH=x86_64 "O=$WORK/out" "-j$JOBS")

log() { printf 'kernel build: %s\n' "$*"; }
die() {
  printf 'kernel build: ERROR: %s\n' "$*" >&2
  exit 1
}

# variant_fragment LABEL: the fragment for that variant on stdout.
variant_fragment() {
  case $1 in
  7.3-iommufd) cat "$FRAGMENT" ;;
  7.3-cdev)
    sed -e 's/^CONFIG_VFIO_GROUP=y$/# CONFIG_VFIO_GROUP is not set/' -e '/^CONFIG_VFIO_CONTAINER=y$/d' "$FRAGMENT"
    ;;
  *) die "unknown variant $1" ;;
  esac
}

# check_config FRAGMENT CONFIG: every `CONFIG_X=y` of the fragment is in the .config, and every
# `# CONFIG_X is not set` is not set there (olddefconfig silently drops what a dependency forbids).
check_config() {
  local frag=$1 config=$2 line sym bad=()
  while IFS= read -r line; do
    case $line in
    CONFIG_*=y) grep -qx "$line" "$config" || bad+=("$line") ;;
    "# CONFIG_"*" is not set")
      sym=${line#\# }
      sym=${sym%% *}
      if grep -q "^$sym=" "$config"; then bad+=("$line"); fi
      ;;
    esac
  done <"$frag"
  [ ${#bad[@]} -eq 0 ] || die "olddefconfig did not keep: ${bad[*]} (see $config)"
}

t0=$(date +%s)
rm -rf "$WORK"
mkdir -p "$WORK/out"
log "unpacking $(basename "$SRC_TARBALL")"
tar -xJf "$SRC_TARBALL" -C "$WORK"
SRC=$(find "$WORK" -mindepth 1 -maxdepth 1 -type d -name 'linux-source-*' | head -n 1)
[ -n "$SRC" ] && [ -f "$SRC/Makefile" ] || die "no linux-source-*/Makefile in $SRC_TARBALL"
t_unpack=$(($(date +%s) - t0))

built=()
for label in 7.3-iommufd 7.3-cdev; do
  t1=$(date +%s)
  frag=$WORK/$label.config
  variant_fragment "$label" >"$frag"
  # allnoconfig, then the fragment, then every other symbol at its default.
  (
    cd "$SRC"
    "${MAKE[@]}" allnoconfig >/dev/null
    scripts/kconfig/merge_config.sh -m -O "$WORK/out" "$WORK/out/.config" "$frag" >"$WORK/merge-$label.log" 2>&1 ||
      {
        cat "$WORK/merge-$label.log" >&2
        exit 1
      }
    "${MAKE[@]}" olddefconfig LOCALVERSION="-vfio-ts-${label#7.3-}" >/dev/null
  ) || die "$label: configuration failed"
  check_config "$frag" "$WORK/out/.config"
  log "$label: make -j$JOBS bzImage (load: $(cut -d' ' -f1-3 /proc/loadavg))"
  (cd "$SRC" && "${MAKE[@]}" bzImage LOCALVERSION="-vfio-ts-${label#7.3-}" >"$WORK/make-$label.log" 2>&1) || {
    tail -n 40 "$WORK/make-$label.log" >&2
    die "$label: make bzImage failed (log: $WORK/make-$label.log)"
  }
  release=$(cd "$SRC" && "${MAKE[@]}" -j1 kernelrelease LOCALVERSION="-vfio-ts-${label#7.3-}")
  dest=$OUT/$label
  rm -rf "$dest.new"
  mkdir -p "$dest.new/modules/$release"
  cp "$WORK/out/arch/x86/boot/bzImage" "$dest.new/vmlinuz"
  cp "$WORK/out/.config" "$dest.new/config"
  cp "$WORK/out/modules.builtin" "$dest.new/modules/$release/modules.builtin"
  : >"$dest.new/modules/$release/modules.dep"
  printf '%s\n' "$release" >"$dest.new/release"
  printf '%s\n' "$PACKAGES" >"$dest.new/packages"
  printf '%s\n' "$KEY" >"$dest.new/key"
  rm -rf "$dest"
  mv "$dest.new" "$dest"
  secs=$(($(date +%s) - t1))
  built+=("$label ${secs}s $(stat -c %s "$dest/vmlinuz") bytes")
  log "$label: $release in $dest (${secs} s, bzImage $(stat -c %s "$dest/vmlinuz") bytes)"
done

if [ "${VFIO_TS_KERNEL_KEEP:-0}" != 1 ]; then rm -rf "$WORK"; fi
log "done in $(($(date +%s) - t0)) s (unpack ${t_unpack} s; ${built[*]})"
