# brokerd — `make help` lists the targets.

GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Debian packages the tests and the demo need: swtpm (the TPM the tests run
# on), swtpm-tools (swtpm_setup: TPMs manufactured with EK certificates),
# openssl and curl (tests compare against them), gcc and libssl-dev (the
# in-process TPM simulator of the demo build).
TEST_PKGS   := swtpm swtpm-tools openssl curl gcc libssl-dev
DEMO_PKGS   := gcc libssl-dev
DEMO_DIR    ?= $(CURDIR)/demo
# The slow-TPM profile of make bench-slowtpm (testdata/tpm-profiles/).
TPM_PROFILE ?= testdata/tpm-profiles/slb9670.toml
# Debian packages: version (scripts/deb-version: a tag vX.Y.Z, else
# 0.0~git<commit time>.<commit>), architectures, where they go.
DEB_VERSION ?= $(shell scripts/deb-version)
DEB_ARCHES  ?= amd64 arm64
DEB_DIR     ?= build/deb
# What the package checks and the appliance VM need on the host.
APPLIANCE_PKGS := lintian debootstrap qemu-system-x86 swtpm openssl curl openssh-client e2fsprogs iproute2 systemd

export PATH := $(PATH):/usr/local/go/bin

.PHONY: help build test test-go lint bench bench-slowtpm run deps-test deps-demo deb deb-check e2e-appliance deps-appliance clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build bin/brokerd (linux/amd64) and bin/brokerd-linux-arm64, CGO_ENABLED=0, no simulator
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/brokerd ./cmd/brokerd
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/brokerd-linux-arm64 ./cmd/brokerd

# Four packages at a time on two cores: a package's tests spend much of
# their time waiting on swtpm and brokerd processes, and go test counts a
# waiting test run against -p as it does a link.
test: ## run every test: the Go tests, then the packaged appliance (installs what it needs when root)
	$(MAKE) test-go
	$(MAKE) e2e-appliance

test-go: deps-test ## the Go tests only, against real swtpm processes (a few minutes)
	CGO_ENABLED=1 $(GO) test -race -count=1 -p 4 -timeout 15m ./...
	CGO_ENABLED=1 $(GO) test -count=1 -timeout 5m -tags simulator -run 'Simulator|Demo' ./tpm/ ./cmd/brokerd/

lint: deps-demo ## gofmt, go vet and staticcheck (both build variants)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	CGO_ENABLED=1 $(GO) vet -tags simulator ./...
	$(GO) run $(STATICCHECK) ./...
	CGO_ENABLED=1 $(GO) run $(STATICCHECK) -tags simulator ./...

# The adversarial benchmarks (flood, overload, audit fill) run apart: their
# package also holds BenchmarkSlowTPM, which is make bench-slowtpm's.
bench: deps-test ## print the performance ratios, each measured within one run
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 20m ./tpm/ ./keys/ ./store/ ./audit/ ./broker/ | grep -E '^(Benchmark|ok|FAIL|---)'
	$(GO) test -run '^$$' -bench 'SignUnderFlood|Overload|AuditFill' -benchtime 1x -timeout 10m ./internal/adversarial/ | grep -E '^(Benchmark|ok|FAIL|---|    bench_test)'

bench-slowtpm: deps-test ## the in-process appliance through a slow-TPM profile (TPM_PROFILE): rates, p50/p99, 503s, handshakes
	BROKERD_TPM_PROFILE=$(abspath $(TPM_PROFILE)) $(GO) test -run '^$$' -bench SlowTPM -benchtime 1x -timeout 20m ./internal/adversarial/

run: deps-demo ## run brokerd on the embedded TPM simulator (state in ./demo)
	CGO_ENABLED=1 $(GO) build -tags simulator -o bin/brokerd-demo ./cmd/brokerd
	./bin/brokerd-demo demo --dir $(DEMO_DIR)

deb: ## build/deb/brokerd_<version>_{amd64,arm64}.deb with dpkg-deb (binary, units, man page, completion)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w -X main.version=$(DEB_VERSION)' -o $(DEB_DIR)/bin/host/brokerd ./cmd/brokerd
	for a in $(DEB_ARCHES); do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$a $(GO) build -trimpath -ldflags '-s -w -X main.version=$(DEB_VERSION)' \
			-o $(DEB_DIR)/bin/$$a/brokerd ./cmd/brokerd && \
		scripts/build-deb '$(DEB_VERSION)' $$a $(DEB_DIR)/bin/$$a/brokerd $(DEB_DIR)/bin/host/brokerd $(DEB_DIR) || exit 1; \
	done

deb-check: deps-appliance deb ## lintian, systemd-analyze verify and security, reproducibility of the packages
	scripts/deb-check $(foreach a,$(DEB_ARCHES),$(DEB_DIR)/brokerd_$(DEB_VERSION)_$(a).deb)

e2e-appliance: deps-appliance ## deb-check, the chroot lifecycle and the QEMU/vTPM appliance VM (log: build/e2e-appliance.log)
	scripts/e2e-appliance

deps-appliance:
	@./scripts/need-packages $(APPLIANCE_PKGS)

deps-test: ## install the test dependencies when missing (as root, Debian)
	@./scripts/need-packages $(TEST_PKGS)

deps-demo:
	@./scripts/need-packages $(DEMO_PKGS)

clean: ## remove build output and the demo state
	rm -rf bin demo build
