#!/usr/bin/env bash
# Installs what stevedore needs on a Debian 12 machine with Node 20 and rustup, idempotently:
#   tools/setup.sh build   apt packages for the Rust builds (native + wasm), npm ci, build everything
#   tools/setup.sh test    the above plus the real components the tests run against
# Quiet when everything is already there. Needs root (or sudo) only when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-build}

# Debian's packaged crates feed the offline cargo source; rustc-web/rust-web-src/lld build wasm.
# The demo builds its image from busybox-static (and serves it with our own registry).
build_pkgs=(rustc-web cargo-web rust-web-src lld pkg-config
  librust-sha2-dev librust-flate2-dev librust-libc-dev librust-zstd-dev libzstd-dev
  busybox-static)
test_pkgs=(docker.io docker-registry skopeo umoci fuse-overlayfs pigz zstd busybox-static
  apache2-utils openssl attr chromium tmux hyperfine squid)

want=("${build_pkgs[@]}")
[ "$mode" = test ] && want+=("${test_pkgs[@]}")

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found: install Rust with rustup first" >&2; exit 1; }
command -v node >/dev/null 2>&1 || { echo "setup: node not found: install Node.js 20 or newer" >&2; exit 1; }

# npm ci only when the lockfile changed since the last install.
stamp=node_modules/.stevedore-lock-sha
lock_sha=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sha" ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  echo "$lock_sha" > "$stamp"
fi

mkdir -p build
# nx caches the builds: a second run with no changes is a cache hit.
npx nx run-many -t build --outputStyle=static >build/setup-build.log 2>&1 || { cat build/setup-build.log >&2; exit 1; }

