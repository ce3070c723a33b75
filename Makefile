# SOLLOL mesh. `make up` runs the mesh; `make test` installs what the tests need and runs them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
GO ?= go
# Every Go module of the workspace (go.work); `go test` takes their package patterns.
PACKAGES := ./gen/... ./services/shared/... ./services/discovery/... ./services/coordinator/... \
	./services/ollamapool/... ./services/router/... ./services/sollol/... ./services/e2e/... \
	./services/doubles/...
GO_TEST_FLAGS ?= -race -count=1 -timeout 20m

.PHONY: all build up test unit bench generate lint vet check-generated ollama tidy fmt clean

all: build

## build: the sollol binary into bin/
build:
	$(GO) build -o bin/sollol ./services/sollol

## up: run the whole mesh in one process with an embedded etcd (router gRPC :50051, HTTP :8000)
up: build
	./bin/sollol up

## test: everything CI runs — tools, generated-code check, vet, the real Ollama, all tests
test: check-generated vet ollama
	SOLLOL_REQUIRE_OLLAMA=1 SOLLOL_OLLAMA_BIN="$$(scripts/build-ollama.sh | tail -n 1)" \
		$(GO) test $(GO_TEST_FLAGS) $(PACKAGES)

## unit: the tests without rebuilding tools or Ollama (Ollama tests skip if it is absent)
unit:
	$(GO) test $(GO_TEST_FLAGS) $(PACKAGES)

## bench: every benchmark once (figures and their meaning: BENCHMARKS.md)
bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x $(PACKAGES)

## generate: regenerate gen/ from proto/ (buf and plugins are pinned Go tools; works offline)
generate:
	scripts/generate.sh

## lint: buf lint
lint:
	scripts/generate.sh lint

vet:
	$(GO) vet $(PACKAGES)
	@unformatted="$$(git ls-files '*.go' | grep -v '^gen/' | xargs gofmt -l)"; \
	if [[ -n "$$unformatted" ]]; then echo "not gofmt-ed: $$unformatted" >&2; exit 1; fi

## check-generated: fail when regenerating changes gen/ (generated code is committed)
check-generated: generate
	@if [[ -n "$$(git status --porcelain -- gen)" ]]; then \
		git status --porcelain -- gen >&2; \
		echo "gen/ is out of date with proto/: run 'make generate' and commit the result" >&2; \
		exit 1; \
	fi

## ollama: build the real Ollama server from its Go module (cached after the first time)
ollama:
	scripts/build-ollama.sh >/dev/null

## tidy: go mod tidy in every module (each keeps replace lines to its siblings)
tidy:
	for m in gen services/*/; do (cd $$m && GOWORK=off $(GO) mod tidy); done

fmt:
	git ls-files '*.go' | grep -v '^gen/' | xargs gofmt -w

clean:
	rm -rf bin .cache

.PHONY: images etcd-image

## images: the static sollol binary (CGO_ENABLED=0) and the sollol:latest image FROM scratch
## (SOLLOL_IMAGE=name:tag to rename); deploy/docker-compose.yml runs it
images:
	deploy/build-images.sh

## etcd-image: sollol-etcd:v3.7.3, the real etcd and etcdctl built from their Go modules, for
## hosts that cannot pull the official image (SOLLOL_ETCD_IMAGE=sollol-etcd:v3.7.3 to use it)
etcd-image:
	deploy/build-images.sh --etcd
