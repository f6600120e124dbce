#!/usr/bin/env bash
# Build fsmfast's manylinux aarch64 wheel on an x86_64 Debian 12 machine WITHOUT Docker, and smoke-test it:
# an arm64 Debian chroot (debootstrap) whose binaries run under qemu user emulation (binfmt_misc). Opt-in:
# it needs root and takes minutes; the test suite never runs it.
#
#   sudo wheels/build_aarch64.sh [--out DIR] [--src DIR] [--no-smoke] [--keep-binfmt]
#
#   --out DIR       where the wheel and its .auditwheel.txt/.smoke.txt go (default: wheels/dist)
#   --src DIR       build this source tree instead of the checkout's work tree (see build_host.sh)
#   --no-smoke      build and repair only
#   --keep-binfmt   leave the qemu-aarch64 binfmt_misc entry registered afterwards (default: restore)
#
# Environment:
#   FSMFAST_CHROOT_DIR      the chroot, kept between runs (default ~/.cache/fsmfast/arm64-chroot; ~1 GB)
#   FSMFAST_CHROOT_SUITE    Debian suite of the chroot (default bookworm: CPython 3.11 -> a cp311 wheel)
#   FSMFAST_DEBIAN_MIRROR   Debian mirror URL for debootstrap (default: the one in this host's apt sources,
#                           else debootstrap's own default)
#   FSMFAST_ARM64_TOOLS_DIR where Debian's qemu-user-static and debootstrap are unpacked (no host install;
#                           default ~/.cache/fsmfast/arm64-tools)
#
# What happens (see wheels/README.md): unpack the two .debs; mount binfmt_misc and register qemu-aarch64 with
# the F flag (the kernel opens the emulator now, so the chroot needs no copy of it); debootstrap an arm64
# minbase chroot with python3-dev, python3-venv, gcc, ca-certificates (first run only: about 4 minutes on
# 2 cores); copy in the host's resolv.conf and CA bundle (the host may reach PyPI through a TLS proxy with its
# own CA); then, in a clean environment (`env -i`: none of the host's pip settings leak in, pip in the chroot
# uses its defaults), run wheels/build_wheel.sh and wheels/smoke_test.sh inside the chroot.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=wheels/_lib.sh
source "$here/_lib.sh"
root=$(fsmfast_repo_root)

out="$root/wheels/dist"
smoke=1
keep_binfmt=0
src_arg=""
while [ "$#" -gt 0 ]; do
    case "$1" in
    --out) out=${2:?--out needs a value}; shift 2 ;;
    --src) src_arg=${2:?--src needs a value}; shift 2 ;;
    --no-smoke) smoke=0; shift ;;
    --keep-binfmt) keep_binfmt=1; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "run as root: binfmt_misc, mount and chroot need it (sudo $0)"
cache=$(fsmfast_cache_dir)
tools=${FSMFAST_ARM64_TOOLS_DIR:-$cache/arm64-tools}
chroot_dir=${FSMFAST_CHROOT_DIR:-$cache/arm64-chroot}
suite=${FSMFAST_CHROOT_SUITE:-bookworm}
include="python3,python3-dev,python3-venv,gcc,libc6-dev,ca-certificates"
native=0
[ "$(uname -m)" = aarch64 ] && native=1
mkdir -p "$out" "$cache"
out=$(cd "$out" && pwd)
started=$(date +%s)

# --- 1. host tools: dpkg-deb, wget and gpgv for debootstrap, Debian's keyring --------------------------------
missing=()
command -v wget >/dev/null 2>&1 || missing+=(wget)
command -v gpgv >/dev/null 2>&1 || missing+=(gpgv)
command -v perl >/dev/null 2>&1 || missing+=(perl)
command -v dpkg-deb >/dev/null 2>&1 || die "no dpkg-deb: this script is for Debian hosts"
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
if [ "${#missing[@]}" -gt 0 ]; then
    fsmfast_apt_install "${missing[@]}"
fi

# qemu-user-static and debootstrap are unpacked into $tools, not installed: the host's dpkg state stays as is.
if [ ! -x "$tools/usr/bin/qemu-aarch64-static" ] || [ ! -x "$tools/usr/sbin/debootstrap" ]; then
    say "unpacking Debian's qemu-user-static and debootstrap into $tools"
    rm -rf "$tools"
    mkdir -p "$tools/debs"
    # Sandbox user root: apt's _apt user cannot enter a private cache directory. stdout is kept for the result.
    fetch() { (cd "$tools/debs" && apt-get download -q -o APT::Sandbox::User=root qemu-user-static debootstrap) >&2; }
    if ! fetch; then
        # An empty or stale package list: update once and retry.
        if [ -z "${_FSMFAST_APT_UPDATED:-}" ]; then
            DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
            _FSMFAST_APT_UPDATED=1
        fi
        fetch || die "apt-get download qemu-user-static debootstrap failed"
    fi
    for deb in "$tools"/debs/*.deb; do
        dpkg-deb -x "$deb" "$tools"
    done
    # qemu-user-static brings an emulator for every architecture (~430 MB): keep the one needed here.
    find "$tools/usr/bin" -name 'qemu-*-static' ! -name qemu-aarch64-static -delete
    rm -rf "$tools/debs"
fi
qemu="$tools/usr/bin/qemu-aarch64-static"
debootstrap=("env" "DEBOOTSTRAP_DIR=$tools/usr/share/debootstrap" "$tools/usr/sbin/debootstrap")

# --- 2. cleanup of everything this run mounts or registers (also on failure) ---------------------------------
bm=/proc/sys/fs/binfmt_misc
mounted_bm=0
registered=0
mounts=()
cleanup() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        umount "${mounts[$i]}" 2>/dev/null || umount -l "${mounts[$i]}" 2>/dev/null || warn "could not unmount ${mounts[$i]}"
    done
    if [ "$registered" -eq 1 ] && [ "$keep_binfmt" -eq 0 ] && [ -e "$bm/qemu-aarch64" ]; then
        echo -1 >"$bm/qemu-aarch64" || warn "could not unregister $bm/qemu-aarch64"
    fi
    if [ "$mounted_bm" -eq 1 ] && [ "$keep_binfmt" -eq 0 ]; then
        umount "$bm" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Anything left mounted inside the chroot by an interrupted run: unmount it first (deepest first).
unmount_stale() {
    local m
    awk -v d="$chroot_dir/" 'index($2 "/", d) == 1 { print $2 }' /proc/mounts | sort -r | while IFS= read -r m; do
        warn "unmounting $m, left over from an earlier run"
        umount "$m" 2>/dev/null || umount -l "$m"
    done
}

# --- 3. binfmt_misc: run aarch64 ELF binaries through qemu -----------------------------------------------------
if [ "$native" -eq 0 ]; then
    if [ ! -e "$bm/register" ]; then
        modprobe binfmt_misc 2>/dev/null || true
        mount -t binfmt_misc binfmt_misc "$bm" || die "cannot mount binfmt_misc (needs root with CAP_SYS_ADMIN)"
        mounted_bm=1
    fi
    if [ -e "$bm/qemu-aarch64" ] && grep -q '^enabled' "$bm/qemu-aarch64"; then
        say "binfmt_misc: qemu-aarch64 is already registered ($(grep '^flags' "$bm/qemu-aarch64"))"
    else
        [ -e "$bm/qemu-aarch64" ] && echo -1 >"$bm/qemu-aarch64"
        # Magic and mask of qemu's qemu-binfmt-conf.sh for aarch64 (ELF64, little endian, e_machine 0xB7).
        # F (fix-binary): the kernel opens the interpreter now, so it need not exist inside the chroot.
        magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
        mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
        printf ':qemu-aarch64:M::%s:%s:%s:F' "$magic" "$mask" "$qemu" >"$bm/register" ||
            die "registering qemu-aarch64 in binfmt_misc failed"
        registered=1
        say "binfmt_misc: registered qemu-aarch64 -> $qemu (flags F)"
    fi
fi

# --- 4. the chroot, created once and cached -----------------------------------------------------------------
host_mirror() {
    if [ -n "${FSMFAST_DEBIAN_MIRROR:-}" ]; then
        printf '%s\n' "$FSMFAST_DEBIAN_MIRROR"
        return
    fi
    # The main archive of the host's apt sources (deb822 .sources, then one-line .list): not -security.
    {
        awk '/^[[:space:]]*$/ { if (deb && uri != "" && uri !~ /security/) print uri; deb = 0; uri = ""; next }
             /^Types:/ { deb = ($0 ~ /[[:space:]]deb([[:space:]]|$)/) }
             /^URIs:/ { uri = $2 }
             END { if (deb && uri != "" && uri !~ /security/) print uri }' /etc/apt/sources.list.d/*.sources 2>/dev/null
        awk '$1 == "deb" { u = ($2 ~ /^\[/) ? $3 : $2; if (u !~ /security/) print u }' \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
    } | grep -E '^https?://' | head -n 1 || true
}

mkdir -p "$chroot_dir"
chroot_dir=$(cd "$chroot_dir" && pwd -P)
if [[ "$chroot_dir" =~ ^/([^/]+)?$ || "$chroot_dir" =~ ^/home/[^/]+$ || "$chroot_dir" == "$HOME" ]]; then
    die "refusing to use $chroot_dir as the chroot (FSMFAST_CHROOT_DIR): a directory of its own is needed"
fi
stamp="$chroot_dir/.fsmfast-chroot"
unmount_stale
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$suite" ]; then
    if [ -n "$(ls -A "$chroot_dir")" ]; then
        [ -f "$stamp" ] || [ -d "$chroot_dir/debootstrap" ] || [ -f "$chroot_dir/etc/debian_version" ] ||
            die "$chroot_dir is not empty and not a chroot made by this script: set FSMFAST_CHROOT_DIR elsewhere"
        say "removing the incomplete or outdated chroot $chroot_dir"
        rm -rf --one-file-system "$chroot_dir"
    fi
    mirror=$(host_mirror)
    say "debootstrap: arm64 $suite chroot in $chroot_dir (${mirror:-the default mirror of debootstrap}); takes minutes"
    mkdir -p "$chroot_dir"
    t0=$(date +%s)
    # shellcheck disable=SC2086  # $mirror is one URL or nothing
    "${debootstrap[@]}" --arch=arm64 --variant=minbase --include="$include" "$suite" "$chroot_dir" $mirror \
        >"$cache/debootstrap.log" 2>&1 || {
        tail -n 40 "$cache/debootstrap.log" >&2
        [ -f "$chroot_dir/debootstrap/debootstrap.log" ] && tail -n 40 "$chroot_dir/debootstrap/debootstrap.log" >&2
        die "debootstrap failed (full log: $cache/debootstrap.log)"
    }
    printf '%s' "$suite" >"$stamp"
    say "debootstrap: done in $(($(date +%s) - t0)) s ($(du -sh --one-file-system "$chroot_dir" | cut -f1))"
else
    say "reusing the chroot $chroot_dir ($suite)"
fi

# --- 5. what the chroot needs at run time ----------------------------------------------------------------------
mount -t proc proc "$chroot_dir/proc"
mounts+=("$chroot_dir/proc")
mkdir -p "$chroot_dir/dev/shm"
mount -t tmpfs -o mode=1777,size=256m tmpfs "$chroot_dir/dev/shm"
mounts+=("$chroot_dir/dev/shm")
for node in null:1:3 zero:1:5 random:1:8 urandom:1:9; do
    IFS=: read -r name major minor <<<"$node"
    [ -c "$chroot_dir/dev/$name" ] || { rm -f "$chroot_dir/dev/$name"; mknod -m 666 "$chroot_dir/dev/$name" c "$major" "$minor"; }
done
cp -L /etc/resolv.conf "$chroot_dir/etc/resolv.conf"
grep -qs '^127\.0\.0\.1' "$chroot_dir/etc/hosts" || printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >>"$chroot_dir/etc/hosts"
# Trust what the host trusts: where outbound TLS goes through a proxy with a local CA, pip in the chroot
# fails with CERTIFICATE_VERIFY_FAILED otherwise (PIP_CERT alone did not help).
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$chroot_dir/etc/ssl/certs/ca-certificates.crt"
fi
if [ "$native" -eq 0 ] && [ "$registered" -eq 0 ] && ! grep -q '^flags:.*F' "$bm/qemu-aarch64"; then
    # Registered by someone else without F: the interpreter must exist at its path inside the chroot.
    interp=$(awk '/^interpreter/ { print $2 }' "$bm/qemu-aarch64")
    install -D -m 755 "$qemu" "$chroot_dir$interp"
fi

# A clean environment: nothing of the host's shell (pip's find-links, constraints, index URLs, CA paths) leaks
# in; pip in the chroot uses its defaults. Proxy settings and an explicit index URL are passed on when set.
passenv=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb
    PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1)
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY PIP_INDEX_URL PIP_TRUSTED_HOST; do
    [ -n "${!v:-}" ] && passenv+=("$v=${!v}")
done
in_chroot() { env -i "${passenv[@]}" chroot "$chroot_dir" "$@"; }

arch=$(in_chroot uname -m)
[ "$arch" = aarch64 ] || die "the chroot runs as $arch, not aarch64: is binfmt_misc working?"
say "chroot: $(in_chroot python3 --version) on $arch"

# --- 6. build and repair inside the chroot ---------------------------------------------------------------------
# /build/wheels: these scripts; /build/src: the source tree to build.
rm -rf "$chroot_dir/build"
mkdir -p "$chroot_dir/build/wheels" "$chroot_dir/build/src"
cp "$here"/*.sh "$chroot_dir/build/wheels/"
if [ -n "$src_arg" ]; then
    [ -f "$src_arg/pyproject.toml" ] || die "--src $src_arg has no pyproject.toml"
    cp -a "$src_arg/." "$chroot_dir/build/src/"
else
    fsmfast_export_source "$chroot_dir/build/src"
fi
t0=$(date +%s)
wheel=$(in_chroot bash /build/wheels/build_wheel.sh --python /usr/bin/python3 --src /build/src --out /build/out)
say "built $(basename "$wheel") inside the chroot in $(($(date +%s) - t0)) s"
name=$(basename "$wheel")
cp "$chroot_dir$wheel" "$out/$name"
cp "$chroot_dir$wheel.auditwheel.txt" "$out/$name.auditwheel.txt"

# --- 7. smoke test inside the chroot -------------------------------------------------------------------------------
if [ "$smoke" -eq 1 ]; then
    t0=$(date +%s)
    in_chroot bash /build/wheels/smoke_test.sh --python /usr/bin/python3 --wheel "$wheel" \
        --manifests /build/src/tests/manifests/founding 2>&1 | tee "$out/$name.smoke.txt" >&2
    say "smoke test passed in $(($(date +%s) - t0)) s (output: $out/$name.smoke.txt)"
fi

say "done in $(($(date +%s) - started)) s: $out/$name ($(fsmfast_size "$out/$name"))"
printf '%s\n' "$out/$name"
