#!/usr/bin/env bash
# Builds the real Ollama server (CPU only) from its Go module at a pinned
# version, into a cache folder, and prints the binary's path as the last line
# of stdout. Progress goes to stderr.
#
#   OLLAMA_BIN=$(scripts/build-ollama.sh)
#
# Environment:
#   SOLLOL_CACHE   cache root (default: $HOME/.cache/sollol)
#   OLLAMA_FORCE=1 rebuild even when the cached binary is current
#
# Why this is more than `go install`: Go module zips drop every folder named
# vendor/, and the llama.cpp bundled in Ollama includes headers from its own
# vendor/ folder. nlohmann/json and stb come from Debian packages;
# miniaudio/miniaudio.h comes from the Go module github.com/gen2brain/malgo.
# See shared/design/BACKENDS.md.
#
# Idempotent: a warm run checks a stamp file next to the binary and exits at
# once. Needs root (or the packages already installed) the first time; never
# uses sudo.
set -euo pipefail

OLLAMA_VERSION=0.17.4
MALGO_VERSION=v0.11.24
DEB_PACKAGES=(gcc g++ nlohmann-json3-dev libstb-dev)

cache_root="${SOLLOL_CACHE:-$HOME/.cache/sollol}"
prefix="$cache_root/ollama/$OLLAMA_VERSION"
bin_dir="$prefix/bin"
bin="$bin_dir/ollama"
stamp="$prefix/stamp"
stamp_want="ollama=$OLLAMA_VERSION malgo=$MALGO_VERSION"

log() { printf 'build-ollama: %s\n' "$*" >&2; }

# Fast path: built before with the same pins.
if [[ "${OLLAMA_FORCE:-0}" != 1 && -x "$bin" && -f "$stamp" && "$(<"$stamp")" == "$stamp_want" ]]; then
	log "up to date"
	printf '%s\n' "$bin"
	exit 0
fi

mkdir -p "$prefix"

# Serialise concurrent builds into the same cache (flock is in util-linux).
if command -v flock >/dev/null 2>&1; then
	exec 9>"$prefix/.lock"
	flock 9
	if [[ "${OLLAMA_FORCE:-0}" != 1 && -x "$bin" && -f "$stamp" && "$(<"$stamp")" == "$stamp_want" ]]; then
		log "up to date (built by a concurrent run)"
		printf '%s\n' "$bin"
		exit 0
	fi
fi

command -v go >/dev/null 2>&1 || { log "go is not on PATH"; exit 1; }

# --- Debian packages -------------------------------------------------------
missing=()
for p in "${DEB_PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if ((${#missing[@]})); then
	if [[ "$(id -u)" != 0 ]]; then
		log "missing Debian packages: ${missing[*]} (install them as root: apt-get install ${missing[*]})"
		exit 1
	fi
	log "installing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# --- miniaudio header from the malgo Go module ------------------------------
# Run module commands outside any workspace so the caller's go.work/go.mod do
# not interfere.
export GOWORK=off
export GOFLAGS="${GOFLAGS:-} -modcacherw"
workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT

log "fetching github.com/gen2brain/malgo@$MALGO_VERSION"
malgo_dir="$(cd "$workdir" && go mod download -json "github.com/gen2brain/malgo@$MALGO_VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
if [[ -z "$malgo_dir" || ! -f "$malgo_dir/miniaudio.h" ]]; then
	log "miniaudio.h not found in github.com/gen2brain/malgo@$MALGO_VERSION (dir: ${malgo_dir:-?})"
	exit 1
fi
include_dir="$prefix/include"
mkdir -p "$include_dir/miniaudio"
cp -f "$malgo_dir/miniaudio.h" "$include_dir/miniaudio/miniaudio.h"

# --- build -----------------------------------------------------------------
# Install into a scratch GOBIN and move into place, so an interrupted build
# never leaves a half-written binary behind a valid stamp.
rm -f "$stamp"
tmp_bin="$prefix/bin.tmp"
rm -rf "$tmp_bin"
mkdir -p "$tmp_bin" "$bin_dir"

log "building github.com/ollama/ollama@v$OLLAMA_VERSION (cgo, CPU only; takes a few minutes cold)"
start=$SECONDS
(
	cd "$workdir"
	CGO_ENABLED=1 \
		CGO_CPPFLAGS="-I$include_dir -I/usr/include/stb ${CGO_CPPFLAGS:-}" \
		GOBIN="$tmp_bin" \
		go install -trimpath \
		-ldflags "-s -w -X github.com/ollama/ollama/version.Version=$OLLAMA_VERSION" \
		"github.com/ollama/ollama@v$OLLAMA_VERSION"
) >&2
mv -f "$tmp_bin/ollama" "$bin"
rm -rf "$tmp_bin"

# Sanity check: the version flag works without a server (it only warns).
got="$(OLLAMA_HOST=127.0.0.1:1 "$bin" --version 2>&1 || true)"
if [[ "$got" != *"$OLLAMA_VERSION"* ]]; then
	log "built binary reports an unexpected version: $got"
	exit 1
fi
printf '%s' "$stamp_want" >"$stamp"
log "built in $((SECONDS - start))s: $bin"
printf '%s\n' "$bin"
