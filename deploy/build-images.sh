#!/usr/bin/env bash
# Builds the SOLLOL image from the static sollol binary, and with --etcd also a local etcd
# image (the real etcd and etcdctl built from their Go modules) for hosts that cannot pull
# the official one. Nothing is pulled from an image registry: both images are FROM scratch.
#
#   deploy/build-images.sh [--etcd]
#
# Environment:
#   SOLLOL_IMAGE       tag of the sollol image        (default sollol:latest)
#   SOLLOL_ETCD_IMAGE  tag of the local etcd image    (default sollol-etcd:v3.7.3)
#   ETCD_VERSION       etcd module version to build   (default v3.7.3)
#   SOLLOL_VERSION     version stamped in the binary  (default: git describe, else dev)
#   IMAGE_LABELS       extra `docker build` labels, e.g. "run=abc" (space-separated)
#   GO, DOCKER         the go and docker commands
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GO="${GO:-go}"
DOCKER="${DOCKER:-docker}"
SOLLOL_IMAGE="${SOLLOL_IMAGE:-sollol:latest}"
ETCD_VERSION="${ETCD_VERSION:-v3.7.3}"
SOLLOL_ETCD_IMAGE="${SOLLOL_ETCD_IMAGE:-sollol-etcd:${ETCD_VERSION}}"
version="${SOLLOL_VERSION:-$(git -C "$root" describe --always --dirty 2>/dev/null || echo dev)}"

with_etcd=false
for arg in "$@"; do
	case "$arg" in
	--etcd) with_etcd=true ;;
	*) echo "usage: $0 [--etcd]" >&2; exit 2 ;;
	esac
done

labels=(--label org.opencontainers.image.source=sollol-mesh)
for l in ${IMAGE_LABELS:-}; do labels+=(--label "$l"); done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The sollol image: the binary and an empty data folder in a fresh build context.
mkdir -p "$work/sollol/data"
(cd "$root" && CGO_ENABLED=0 "$GO" build -trimpath \
	-ldflags "-s -w -X github.com/sollol/mesh/services/sollol/internal/app.Version=$version" \
	-o "$work/sollol/sollol" ./services/sollol)
"$DOCKER" build -q "${labels[@]}" -f "$root/deploy/Dockerfile" -t "$SOLLOL_IMAGE" "$work/sollol" >/dev/null
echo "built $SOLLOL_IMAGE"

if $with_etcd; then
	# etcd's main packages declare replace directives, so `go install pkg@version` refuses
	# them; a throwaway module that requires them builds them as they are released.
	mod="$work/etcdmod"
	mkdir -p "$mod" "$work/etcd"
	cat >"$mod/go.mod" <<GOMOD
module sollol.local/etcdbuild

go 1.26.0

require (
	go.etcd.io/etcd/etcdctl/v3 $ETCD_VERSION
	go.etcd.io/etcd/server/v3 $ETCD_VERSION
)
GOMOD
	cat >"$mod/tools.go" <<'GOSRC'
//go:build tools

package etcdbuild

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/server/v3"
)
GOSRC
	(cd "$mod" && GOWORK=off GOFLAGS=-mod=mod "$GO" mod tidy 2>"$work/tidy.log") || { cat "$work/tidy.log" >&2; exit 1; }
	(cd "$mod" && GOWORK=off CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w" -o "$work/etcd/etcd" go.etcd.io/etcd/server/v3)
	(cd "$mod" && GOWORK=off CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w" -o "$work/etcd/etcdctl" go.etcd.io/etcd/etcdctl/v3)
	"$DOCKER" build -q "${labels[@]}" -f "$root/deploy/etcd/Dockerfile" -t "$SOLLOL_ETCD_IMAGE" "$work/etcd" >/dev/null
	echo "built $SOLLOL_ETCD_IMAGE"
fi
