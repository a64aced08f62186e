#!/usr/bin/env bash
# Runs every check and test of turumba-realtime: formatting, vet, staticcheck,
# the Go tests (race detector on), brief fuzzing and benchmarks, and the
# end-to-end tests with the official socket.io-client against the real binary.
#
# Integration tests use RabbitMQ and Redis on loopback (RABBITMQ_URL,
# REDIS_URL); without them they skip, unless REALTIME_REQUIRE_SERVICES=1 (as
# in CI), under which a missing service fails its tests and any skipped test
# fails the run.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n== %s\n' "$*"; }

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './test/e2e/node_modules/*'))
if [ -n "$unformatted" ]; then echo "not gofmt'ed: $unformatted"; exit 1; fi

step "go vet"
go vet ./...

step "staticcheck"
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

step "go test -race"
# As JSON, summarized as the plain output would be, plus the skipped tests:
# under REALTIME_REQUIRE_SERVICES=1 (CI) a skipped test fails the run.
results=$(mktemp)
status=0
go test -race -count=1 -timeout 20m -json ./... > "$results" || status=$?
no_skips=()
if [ "${REALTIME_REQUIRE_SERVICES:-}" = 1 ]; then no_skips=(-no-skips); fi
go run ./internal/tools/testsummary "${no_skips[@]}" < "$results" || status=1
rm -f "$results"
if [ "$status" != 0 ]; then exit "$status"; fi

step "fuzz (brief)"
for target in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
  for fn in $(grep -h '^func Fuzz' "$target"/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do
    go test -run '^$' -fuzz "^${fn}\$" -fuzztime 10s "$target"
  done
done

step "benchmarks (brief, so they cannot rot)"
go test -run '^$' -bench . -benchtime 20x -timeout 10m ./...

step "end-to-end (socket.io-client against the real binary)"
bin_dir=$(mktemp -d)
trap 'rm -rf "$bin_dir"' EXIT
go build -o "$bin_dir/turumba-realtime" ./cmd/turumba-realtime
(cd test/e2e && npm ci --no-audit --no-fund --loglevel=error && REALTIME_BIN="$bin_dir/turumba-realtime" node --test --test-concurrency=1 --test-reporter=spec)
