#!/usr/bin/env bash
# Builds a Debian package that carries one speech model, for SD-card images and offline installs:
#   scripts/deb-model.sh NAME [FOLDER [OUTDIR]]   (FOLDER: models/NAME; OUTDIR: target/debian)
# It installs the model under /usr/share/voca/models/NAME, where the box looks when its own
# models_dir (/var/lib/voca/models) has no model of that name. Output: target/debian/voca-model-*.deb
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: $0 NAME (a model folder under models/)}
src=${2:-models/$name}
outdir=${3:-target/debian}
[ -f "$src/am/final.mdl" ] && [ -f "$src/conf/model.conf" ] || {
  echo "$src is not a VOCA speech model (no am/final.mdl and conf/model.conf): install it with voca models fetch|install" >&2
  exit 2
}
package=voca-model-$(printf '%s' "$name" | tr 'A-Z_.' 'a-z--')
version=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/DEBIAN" "$stage/usr/share/voca/models"
cp -a "$src" "$stage/usr/share/voca/models/$name"
find "$stage/usr" -type d -exec chmod 755 {} + && find "$stage/usr" -type f -exec chmod 644 {} +
cat > "$stage/DEBIAN/control" <<CONTROL
Package: $package
Version: $version-1
Architecture: all
Maintainer: VOCA Box developers
Section: comm
Priority: optional
Installed-Size: $(du -sk "$stage/usr" | cut -f1)
Enhances: voca
Description: speech model $name for VOCA Box
 The VOSK speech model $name, installed under /usr/share/voca/models/$name, where the
 voca service finds it when /var/lib/voca/models has no model of that name.
CONTROL
mkdir -p "$outdir"
out=$outdir/${package}_${version}-1_all.deb
dpkg-deb --root-owner-group -Zzstd --build "$stage" "$out" >/dev/null
echo "$out: $(stat -c %s "$out") bytes"
