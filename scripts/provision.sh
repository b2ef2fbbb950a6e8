#!/usr/bin/env bash
# Provisions what the QEMU-backed tests need, from Debian packages only. Idempotent: every step
# checks its own result first, so a second run takes about a second. Needs root.
#
#   host:   qemu-system-x86 (bookworm's 7.2), busybox-static, cpio, debootstrap, gcc, xz-utils,
#           linux-libc-dev, kmod (depmod, to index the guest kernels' modules)
#   cache:  ${VFIO_TS_CACHE:-/var/cache/vfio-ts}, outside the repository (layout: docs/provisioning.md)
#           kernels/6.1   bookworm's current 6.1 kernel (what linux-image-amd64 depends on)
#           kernels/7.3   trixie-backports' 7.3 kernel (linux-binary-7.3.* + linux-modules-7.3.*)
#           trixie/       Debian trixie chroot with trixie-backports' QEMU 11 (vfio-user-pci client)
#           ready         written last, with the versions found
#
# Guest kernels are only unpacked (dpkg -x), never installed on the host. Their package indexes
# live in private apt state under $CACHE/apt/<suite>/ so the host's apt state is left alone.
#
# Environment: VFIO_TS_CACHE (cache root), VFIO_TS_MIRROR (Debian mirror, default
# http://deb.debian.org/debian), VFIO_TS_SECURITY_MIRROR, VFIO_TS_REFRESH=1 (re-resolve and
# re-fetch the kernels and rebuild the chroot even if present).
set -euo pipefail

CACHE=${VFIO_TS_CACHE:-/var/cache/vfio-ts}
MIRROR=${VFIO_TS_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${VFIO_TS_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
REFRESH=${VFIO_TS_REFRESH:-0}
HOST_PACKAGES=(qemu-system-x86 busybox-static cpio debootstrap gcc xz-utils linux-libc-dev kmod pciutils e2fsprogs)

t_start=$(date +%s)
log() { printf 'provision: %s\n' "$*"; }
die() {
  printf 'provision: ERROR: %s\n' "$*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root (apt-get, debootstrap, chroot)"
[ -r "$KEYRING" ] || die "missing $KEYRING (package debian-archive-keyring)"
mkdir -p "$CACHE"
# One provisioning at a time per cache.
exec 9>"$CACHE/.lock"
flock 9
# `ready` is rewritten at the end; while a run is under way the cache is not ready.
rm -f "$CACHE/ready"

# --- 1. host packages ---------------------------------------------------------------------------
missing_host=()
for p in "${HOST_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing_host+=("$p")
  fi
done
if [ ${#missing_host[@]} -gt 0 ]; then
  log "host: apt-get update, then installing: ${missing_host[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing_host[@]}"
else
  log "host: packages already installed (${HOST_PACKAGES[*]})"
fi
host_qemu=$(qemu-system-x86_64 --version | head -n 1)
log "host: $host_qemu"

# --- private apt state, one per suite set ---------------------------------------------------------
# apt_private NAME ARGS...: runs apt-get/apt-cache with sources, lists and caches under $CACHE/apt/NAME.
apt_dir() { printf '%s/apt/%s' "$CACHE" "$1"; }
apt_opts() {
  local d
  d=$(apt_dir "$1")
  printf '%s\n' -o "Dir::Etc::SourceList=$d/sources.list" -o "Dir::Etc::SourceParts=/dev/null" \
    -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -o "Acquire::Languages=none" \
    -o "APT::Get::List-Cleanup=true" -o "APT::Sandbox::User=root"
}
apt_private_setup() { # NAME SOURCES-LINES...
  local name=$1 d
  shift
  d=$(apt_dir "$name")
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/debs"
  printf '%s\n' "$@" >"$d/sources.list"
  local -a o
  mapfile -t o < <(apt_opts "$name")
  log "apt[$name]: update (private lists in $d)"
  apt-get "${o[@]}" update -q >"$d/update.log" 2>&1 || {
    cat "$d/update.log" >&2
    die "apt-get update failed for $name"
  }
}
apt_private() { # NAME apt-get|apt-cache ARGS...
  local name=$1 tool=$2
  shift 2
  local -a o
  mapfile -t o < <(apt_opts "$name")
  "$tool" "${o[@]}" "$@"
}
# fetch_debs NAME PKG...: downloads into $CACHE/apt/NAME/debs, prints the .deb paths.
fetch_debs() {
  local name=$1 p d f
  shift
  d=$(apt_dir "$name")/debs
  for p in "$@"; do
    f=$(find "$d" -maxdepth 1 -name "${p}_*.deb" | head -n 1)
    if [ -z "$f" ]; then
      log "apt[$name]: download $p" >&2
      (cd "$d" && apt_private "$name" apt-get download -q "$p" >/dev/null) || die "apt-get download $p failed"
      f=$(find "$d" -maxdepth 1 -name "${p}_*.deb" | head -n 1)
    fi
    [ -n "$f" ] || die "no .deb for $p"
    printf '%s\n' "$f"
  done
}

# install_kernel LABEL RELEASE PKG-LIST DEB...: unpacks the debs in a scratch dir, lays out
# $CACHE/kernels/LABEL/{vmlinuz,release,packages,modules/RELEASE/}, runs depmod on it.
install_kernel() {
  local label=$1 release=$2 pkgs=$3
  shift 3
  local dest=$CACHE/kernels/$label scratch=$CACHE/kernels/.unpack-$label deb src vml
  rm -rf "$scratch" "$dest.new"
  mkdir -p "$scratch" "$dest.new/modules"
  for deb in "$@"; do
    log "kernel $label: dpkg -x $(basename "$deb")"
    dpkg -x "$deb" "$scratch"
  done
  src=""
  for cand in "$scratch/usr/lib/modules/$release" "$scratch/lib/modules/$release"; do
    if [ -d "$cand/kernel" ]; then src=$cand; fi
  done
  [ -n "$src" ] || die "kernel $label: no modules/$release/kernel in the packages"
  vml=""
  for cand in "$scratch/usr/lib/modules/$release/vmlinuz" "$scratch/lib/modules/$release/vmlinuz" \
    "$scratch/boot/vmlinuz-$release"; do
    if [ -f "$cand" ]; then vml=$cand; fi
  done
  [ -n "$vml" ] || die "kernel $label: no vmlinuz for $release in the packages"
  mv "$vml" "$dest.new/vmlinuz"
  for cand in "$src/config" "$scratch/boot/config-$release"; do
    if [ -f "$cand" ]; then cp "$cand" "$dest.new/config"; fi
  done
  mv "$src" "$dest.new/modules/$release"
  # depmod wants BASE/lib/modules/RELEASE: point a scratch base at our layout.
  mkdir -p "$scratch/depmod/lib/modules"
  ln -s "$dest.new/modules/$release" "$scratch/depmod/lib/modules/$release"
  depmod -b "$scratch/depmod" "$release" || die "kernel $label: depmod failed"
  [ -s "$dest.new/modules/$release/modules.dep" ] || die "kernel $label: depmod wrote no modules.dep"
  printf '%s\n' "$release" >"$dest.new/release"
  printf '%s\n' "$pkgs" >"$dest.new/packages"
  rm -rf "$scratch" "$dest"
  mv "$dest.new" "$dest"
  rm -f "$@" # the .debs: unpacked, no longer needed
  log "kernel $label: ready in $dest ($release)"
}

kernel_present() { # LABEL
  local d=$CACHE/kernels/$1
  [ "$REFRESH" != 1 ] && [ -s "$d/release" ] && [ -f "$d/vmlinuz" ] &&
    [ -s "$d/modules/$(cat "$d/release")/modules.dep" ]
}

# --- 2. guest kernel 6.1 (bookworm) ---------------------------------------------------------------
if kernel_present 6.1; then
  log "kernel 6.1: present ($(cat "$CACHE/kernels/6.1/release"))"
else
  apt_private_setup bookworm \
    "deb [signed-by=$KEYRING] $MIRROR bookworm main" \
    "deb [signed-by=$KEYRING] $MIRROR bookworm-updates main" \
    "deb [signed-by=$KEYRING] $SECURITY_MIRROR bookworm-security main"
  # The image package that bookworm's linux-image-amd64 points at right now.
  pkg61=$(apt_private bookworm apt-cache depends linux-image-amd64 |
    sed -n 's/^ *Depends: \(linux-image-6\.1\.[^ ]*-amd64\)$/\1/p' | head -n 1)
  [ -n "$pkg61" ] || die "kernel 6.1: linux-image-amd64 depends on no linux-image-6.1.*-amd64"
  rel61=${pkg61#linux-image-}
  ver61=$(apt_private bookworm apt-cache show "$pkg61" | sed -n 's/^Version: //p' | head -n 1)
  log "kernel 6.1: $pkg61 $ver61"
  mapfile -t debs61 < <(fetch_debs bookworm "$pkg61")
  install_kernel 6.1 "$rel61" "$pkg61=$ver61" "${debs61[@]}"
fi

# --- 3. guest kernel 7.3 (trixie-backports) -------------------------------------------------------
if kernel_present 7.3; then
  log "kernel 7.3: present ($(cat "$CACHE/kernels/7.3/release"))"
else
  apt_private_setup trixie-backports \
    "deb [signed-by=$KEYRING] $MIRROR trixie-backports main"
  # The newest generic (not -cloud, not -rt) 7.3 flavour.
  rel73=$(apt_private trixie-backports apt-cache pkgnames linux-binary-7.3. |
    sed -n 's/^linux-binary-\(7\.3\.[0-9][0-9]*+deb[0-9]*-amd64\)$/\1/p' | sort -V | tail -n 1)
  [ -n "$rel73" ] || die "kernel 7.3: no linux-binary-7.3.*-amd64 in trixie-backports"
  ver73=$(apt_private trixie-backports apt-cache show "linux-binary-$rel73" | sed -n 's/^Version: //p' | head -n 1)
  log "kernel 7.3: linux-binary-$rel73 + linux-modules-$rel73 + linux-base-$rel73 $ver73"
  # linux-base-* carries config, modules.order and modules.builtin (depmod wants them).
  mapfile -t debs73 < <(fetch_debs trixie-backports "linux-binary-$rel73" "linux-modules-$rel73" "linux-base-$rel73")
  install_kernel 7.3 "$rel73" "linux-binary-$rel73=$ver73 linux-modules-$rel73=$ver73 linux-base-$rel73=$ver73" \
    "${debs73[@]}"
fi

# --- 3b. Linux 7.3 uAPI headers (the ABI probe checks DMA_BUF layouts against them) ----------------
HDR=$CACHE/headers/7.3
if [ -f "$HDR/usr/include/linux/vfio.h" ]; then
  log "headers 7.3: already unpacked"
else
  hver=$(apt_private trixie-backports apt-cache policy linux-libc-dev | sed -n 's/^ *Candidate: //p' | head -n 1)
  case $hver in 7.3.*) ;; *) die "headers 7.3: trixie-backports offers linux-libc-dev '$hver', not 7.3.x" ;; esac
  mapfile -t hdeb < <(fetch_debs trixie-backports linux-libc-dev)
  rm -rf "$HDR" && mkdir -p "$HDR"
  dpkg -x "${hdeb[0]}" "$HDR"
  [ -f "$HDR/usr/include/linux/vfio.h" ] || die "headers 7.3: no linux/vfio.h in ${hdeb[0]}"
  # linux-libc-dev keeps <asm/...> under the multiarch dir; the probe wants it on the include path.
  [ -d "$HDR/usr/include/x86_64-linux-gnu/asm" ] && ln -sfn x86_64-linux-gnu/asm "$HDR/usr/include/asm"
  log "headers 7.3: linux-libc-dev $hver in $HDR"
fi

# --- 4. trixie chroot with QEMU 11 ----------------------------------------------------------------
ROOT=$CACHE/trixie
STAMP=$ROOT/.vfio-ts-qemu
chroot_mounted=""
umount_chroot() {
  if [ -n "$chroot_mounted" ]; then
    umount "$ROOT/proc" 2>/dev/null || true
    chroot_mounted=""
  fi
}
trap umount_chroot EXIT

if [ "$REFRESH" != 1 ] && [ -f "$STAMP" ] && [ -x "$ROOT/usr/bin/qemu-system-x86_64" ]; then
  log "trixie chroot: present ($(cat "$STAMP"))"
else
  if [ "$REFRESH" = 1 ] || [ ! -f "$ROOT/.vfio-ts-debootstrap" ]; then
    # A half-made chroot (interrupted run) is removed, never reused.
    if mountpoint -q "$ROOT/proc" 2>/dev/null; then umount "$ROOT/proc"; fi
    rm -rf "$ROOT"
    log "trixie chroot: debootstrap --variant=minbase trixie $ROOT (about half a minute)"
    debootstrap --variant=minbase trixie "$ROOT" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 || {
      tail -n 30 "$CACHE/debootstrap.log" >&2
      die "debootstrap failed (log: $CACHE/debootstrap.log)"
    }
    date -u +%FT%TZ >"$ROOT/.vfio-ts-debootstrap"
  else
    log "trixie chroot: debootstrap already done"
  fi
  cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR trixie main
deb $MIRROR trixie-backports main
EOF
  if mountpoint -q "$ROOT/proc"; then umount "$ROOT/proc"; fi # left by an interrupted run
  mount -t proc proc "$ROOT/proc"
  chroot_mounted=1
  log "trixie chroot: apt-get install -t trixie-backports qemu-system-x86 (about a minute)"
  if ! {
    chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive LC_ALL=C apt-get update -q &&
      chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive LC_ALL=C \
        apt-get install -y -q --no-install-recommends -t trixie-backports qemu-system-x86
  } >"$CACHE/chroot-apt.log" 2>&1; then
    tail -n 30 "$CACHE/chroot-apt.log" >&2
    die "QEMU install in the chroot failed (log: $CACHE/chroot-apt.log)"
  fi
  chroot "$ROOT" apt-get clean
  umount_chroot
  chroot "$ROOT" qemu-system-x86_64 --version | head -n 1 >"$STAMP"
  log "trixie chroot: $(cat "$STAMP")"
fi

# Verify the chroot's QEMU every run: it is cheap (~0.1 s) and catches a broken chroot.
trixie_qemu=$(chroot "$ROOT" qemu-system-x86_64 --version | head -n 1)
case $trixie_qemu in
*"version 11."*) ;;
*) die "trixie chroot: expected QEMU 11.x, got: $trixie_qemu" ;;
esac
chroot "$ROOT" qemu-system-x86_64 -device vfio-user-pci,help >/dev/null 2>&1 ||
  die "trixie chroot: QEMU has no vfio-user-pci device"
log "trixie chroot: $trixie_qemu, vfio-user-pci present"

# --- 5. ready -------------------------------------------------------------------------------------
rel61=$(cat "$CACHE/kernels/6.1/release")
rel73=$(cat "$CACHE/kernels/7.3/release")
tmp_ready=$CACHE/.ready.tmp
{
  printf 'provisioned=%s\n' "$(date -u +%FT%TZ)"
  printf 'host_qemu=%s\n' "$host_qemu"
  printf 'kernel_6.1=%s\n' "$rel61"
  printf 'kernel_6.1_packages=%s\n' "$(cat "$CACHE/kernels/6.1/packages")"
  printf 'kernel_7.3=%s\n' "$rel73"
  printf 'kernel_7.3_packages=%s\n' "$(cat "$CACHE/kernels/7.3/packages")"
  printf 'trixie_qemu=%s\n' "$trixie_qemu"
  printf 'headers_7.3=%s\n' "$HDR/usr/include"
} >"$tmp_ready"
mv "$tmp_ready" "$CACHE/ready"
log "ready: $CACHE/ready ($(($(date +%s) - t_start)) s)"
sed 's/^/  /' "$CACHE/ready"
