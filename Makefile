# Contributor shortcuts; each target wraps cargo. `make test` is the README's test command.
CARGO ?= cargo

.PHONY: install test bench-smoke lint format check demo

## install: fetch every dependency so later targets work offline
install:
	$(CARGO) fetch --locked

## test: the whole test suite (unit, integration, conformance, UI and doc tests), with set-up
test:
	./scripts/test.sh

## bench-smoke: every benchmark once, on small inputs, in the test profile (what CI runs)
bench-smoke:
	INTERLOCK_BENCH_N=2000 $(CARGO) test --workspace --all-features --locked --benches

## lint: formatting and clippy, warnings are errors
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --all-features --locked -- -D warnings

## format: rewrite sources with rustfmt
format:
	$(CARGO) fmt --all

## check: what CI runs
check: lint test bench-smoke

## demo: the bank example on the embedded store
demo:
	$(CARGO) run --example bank
