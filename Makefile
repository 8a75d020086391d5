# Build, package, install and test the PostgreSQL integration for Plakar.

VERSION ?= v$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
GOBIN := $(shell go env GOPATH 2>/dev/null || echo $(HOME)/go)/bin
PLAKAR ?= $(shell command -v plakar 2>/dev/null || echo $(GOBIN)/plakar)
BIN := target/release/postgresql
STAGE := stage

.PHONY: setup build package install uninstall test bench clean

setup:
	@bash scripts/setup.sh

build:
	cargo build --release --locked

package: build
	rm -rf $(STAGE) && mkdir -p $(STAGE)
	cp $(BIN) manifest.yaml validators/*.json $(STAGE)/
	cd $(STAGE) && $(PLAKAR) pkg create ./manifest.yaml $(VERSION)
	mv $(STAGE)/postgresql_$(VERSION)_*.ptar .
	rm -rf $(STAGE)

install: setup package
	-$(PLAKAR) pkg rm postgresql >/dev/null 2>&1
	$(PLAKAR) pkg add ./postgresql_$(VERSION)_*.ptar

uninstall:
	$(PLAKAR) pkg rm postgresql

test: setup
	cargo fmt --check
	cargo clippy --all-targets --locked -- -D warnings
	rm -f target/plakar-not-run
	cargo test --locked
	@if [ -f target/plakar-not-run ]; then echo; cat target/plakar-not-run; fi

bench: setup build
	bash bench/run.sh

clean:
	cargo clean
	rm -rf $(STAGE) postgresql_*.ptar
