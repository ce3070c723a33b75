#!/usr/bin/env bash
# Regenerates gen/ from proto/ with buf and the plugins pinned in tools/go.mod.
#
#   scripts/generate.sh         build tools, lint, generate (gen/go, gen/openapiv2)
#   scripts/generate.sh lint    build tools, lint only
#
# Works offline once the tools' modules are in the Go module cache: buf uses no BSR
# dependencies and only local plugins. Idempotent: output dirs are wiped first, so deleted
# protos leave nothing behind, and the output is deterministic (CI regenerates and diffs).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${root}/.cache/bin"
mode="${1:-generate}"

case "${mode}" in
  generate | lint) ;;
  *)
    echo "usage: $0 [generate|lint]" >&2
    exit 2
    ;;
esac

# Build (or refresh) the pinned tools. go install is incremental: a no-op run takes about a
# second. GOWORK=off: tools/ is deliberately outside go.work.
mkdir -p "${bin}"
(cd "${root}/tools" && GOWORK=off GOBIN="${bin}" go install tool)
export PATH="${bin}:${PATH}"

cd "${root}"
buf lint

if [[ "${mode}" == lint ]]; then
  exit 0
fi

rm -rf gen/go gen/openapiv2
buf generate
buf generate --template buf.gen.openapi.yaml
