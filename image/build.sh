#!/usr/bin/env bash
# Builds the VOCA Box SD-card image for the Raspberry Pi 4 from Debian 12 arm64 packages only (Debian
# 12's kernel has no Pi 5 support):
#   image/build.sh VOCA_DEB [MODEL_DEB]      (as root; `make image` calls it)
#
#   1. the root file system: mmdebstrap of image/packages (main + non-free-firmware), cached in
#      /var/cache/voca-image/ (VOCA_IMAGE_CACHE) by the hash of the list, since it takes many
#      minutes under qemu-user (delete it to take in Debian's latest updates);
#   2. the box: its arm64 package (and a speech model package) installed with dpkg inside it, the files
#      under image/rootfs/ laid over it, first-boot services on, SSH off, no machine id or host keys;
#   3. the card: genimage puts /boot/firmware on a FAT partition (RASPIFIRM) and the rest on ext4
#      (RASPIROOT), MBR as the Pi's boot ROM wants;
#   4. the output: target/image/voca-VERSION-arm64.img.zst with its .sha256 beside it (and the .img).
#
# Foreign-architecture programs run through binfmt_misc and qemu-user-static: the script registers
# qemu-aarch64 if it is not registered and unregisters it when done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
voca_deb=${1:?usage: $0 VOCA_DEB [MODEL_DEB]}
model_deb=${2:-}
OUT=$ROOT/target/image
WORK=$OUT/work
# The root file system takes minutes to build under qemu-user: it is cached for the whole machine
# (every clone, CI's too), by the hash of what goes into it.
CACHE=${VOCA_IMAGE_CACHE:-/var/cache/voca-image}
SUITE=bookworm
version=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
name=voca-$version-arm64

say() { printf '==> %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { echo "$0 builds a root file system and must run as root" >&2; exit 1; }
[ -f "$voca_deb" ] || { echo "$voca_deb: no such package (make deb builds it)" >&2; exit 2; }
[ -z "$model_deb" ] || [ -f "$model_deb" ] || { echo "$model_deb: no such package (make deb-model)" >&2; exit 2; }

# --- qemu-user for arm64 programs (maintainer scripts, dpkg, systemctl in the root file system) ---
registered=
cleanup() {
    [ -n "$registered" ] && echo -1 > /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null || true
}
trap cleanup EXIT
if [ "$(uname -m)" != aarch64 ]; then
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
        registered=1
    fi
fi

# --- 1. the root file system, cached by its package list ---
packages=$(sed -e 's/#.*//' -e '/^\s*$/d' image/packages | paste -sd, -)
# The initramfs is made once, at the end: every package that triggers it would otherwise make it
# again, and each takes minutes under qemu-user (update-initramfs is a no-op until then).
no_initramfs='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs &&
    printf "#!/bin/sh\nexit 0\n" > "$1/usr/sbin/update-initramfs" && chmod 755 "$1/usr/sbin/update-initramfs"'
initramfs='rm "$1/usr/sbin/update-initramfs" &&
    chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs &&
    chroot "$1" update-initramfs -c -k all'
mmdebstrap_args=(--quiet --variant=minbase --architectures=arm64 --components=main,non-free-firmware
    --include="$packages" --essential-hook="$no_initramfs" --customize-hook="$initramfs" --format=tar "$SUITE")
key=$(printf '%s\n' "${mmdebstrap_args[@]}" | sha256sum | cut -c1-12)
tar=$CACHE/rootfs-$SUITE-arm64-$key.tar
if [ -s "$tar" ]; then
    say "root file system: cached $tar"
else
    say "root file system: mmdebstrap $SUITE arm64 ($(wc -w <<< "${packages//,/ }") packages; minutes under qemu-user)"
    mkdir -p "$CACHE"
    rm -f "$CACHE"/rootfs-*.tar
    mmdebstrap "${mmdebstrap_args[@]}" "$tar.part" >&2
    mv "$tar.part" "$tar"
fi

# --- 2. the box in it ---
rm -rf "$WORK"
mkdir -p "$WORK/root"
rootfs=$WORK/root
tar -C "$rootfs" --numeric-owner --xattrs --xattrs-include='*' -xpf "$tar"
mkdir -p "$rootfs/tmp/debs"
cp "$voca_deb" ${model_deb:+"$model_deb"} "$rootfs/tmp/debs/"
# Runs "$@" inside the root file system, in a mount namespace of its own (/dev, /proc, /run go with it).
in_root() {
    unshare --mount --fork /bin/sh -c 'root=$1; shift
        mount --rbind /dev "$root/dev" && mount -t proc proc "$root/proc" && mount -t tmpfs tmpfs "$root/run" &&
        exec chroot "$root" "$@"' in_root "$rootfs" "$@"
}
say "installing $(basename "$voca_deb")${model_deb:+ and $(basename "$model_deb")}"
in_root sh -c 'dpkg -i /tmp/debs/*.deb' >&2
rm -rf "$rootfs/tmp/debs"

# The kernel finds its root by label (SD card or USB disk alike): raspi-firmware writes cmdline.txt
# from its defaults at every kernel upgrade, so the setting goes there and the hook runs again.
sed -i 's|^#\?ROOTPART=.*|ROOTPART=LABEL=RASPIROOT|' "$rootfs/etc/default/raspi-firmware"
for kernel in "$rootfs"/boot/vmlinuz-*; do
    in_root env DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware "${kernel##*/vmlinuz-}" >&2
done

say "laying image/rootfs/ over it; first-boot services on, SSH off"
cp -a image/rootfs/. "$rootfs/"
chown -R 0:0 "$rootfs/etc/systemd/network" "$rootfs/usr/libexec/voca-image-setup"
in_root systemctl enable --quiet voca-image-setup.service systemd-networkd.service systemd-resolved.service \
    systemd-timesyncd.service avahi-daemon.service voca.service
in_root systemctl disable --quiet ssh.service
# resolved's stub resolver for DNS from DHCP (networkd hands it the servers).
ln -sf ../run/systemd/resolve/stub-resolv.conf "$rootfs/etc/resolv.conf"
# Every box makes its own identity at first boot: machine id (systemd), SSH host keys (when SSH is
# turned on); nothing of this build machine stays in the image.
: > "$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id" "$rootfs"/etc/ssh/ssh_host_*
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log
printf '%s\n' "$SUITE arm64, voca $version, built $(date -u +%Y-%m-%d)" > "$rootfs/etc/voca-image-release"

# --- 3. the card ---
for f in config.txt cmdline.txt; do
    [ -s "$rootfs/boot/firmware/$f" ] || { echo "raspi-firmware left no /boot/firmware/$f" >&2; exit 1; }
done
root_mib=$(( $(du -sm --exclude=./boot/firmware "$rootfs" | cut -f1) * 13 / 10 + 256 ))
cat > "$WORK/genimage.cfg" <<CFG
image boot.vfat {
    vfat { label = "RASPIFIRM" }
    mountpoint = "/boot/firmware"
    size = 256M
}
image root.ext4 {
    ext4 { label = "RASPIROOT" use-mke2fs = true }
    mountpoint = "/"
    size = ${root_mib}M
}
image $name.img {
    hdimage { partition-table-type = "mbr" }
    partition boot { partition-type = 0xC bootable = true image = "boot.vfat" offset = 4M }
    partition root { partition-type = 0x83 image = "root.ext4" }
}
CFG
say "laying out the card: 256 MiB FAT boot, ${root_mib} MiB ext4 root (grown to the card at first boot)"
rm -f "$OUT/$name.img"
genimage --rootpath "$rootfs" --tmppath "$WORK/genimage-tmp" --inputpath "$WORK" --outputpath "$OUT" \
    --config "$WORK/genimage.cfg" >&2
rm -f "$OUT/boot.vfat" "$OUT/root.ext4"

# --- 4. compressed, with its checksum ---
say "compressing (zstd)"
zstd -q -f -T0 -10 "$OUT/$name.img" -o "$OUT/$name.img.zst"
(cd "$OUT" && sha256sum "$name.img.zst" > "$name.img.zst.sha256")
say "$OUT/$name.img.zst: $(stat -c %s "$OUT/$name.img.zst") bytes ($(stat -c %s "$OUT/$name.img") bytes raw)"
