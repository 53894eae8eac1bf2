#!/bin/bash
# The A/B runs of this directory, interleaved so that both builds see the
# same machine. From bench/, with two builds of cmd/embedded:
#
#   MAIN=embedded-main BRANCH=embedded-presence results/2026-11-29-presence/ab.sh
#
# (go build -o embedded-main ./cmd/embedded in a checkout of main, and the
# same here), and the edge package's test binary for the fan-out figures:
#
#   go test -c -o edge.test ../pkg/edge
set -euo pipefail
out=results/2026-11-29-presence
bench() { go run ./cmd/herald-bench "$@"; }

# Connect and disconnect cost, memory per connection: main, this branch,
# this branch without lifecycle events.
for round in 1 2 3 4 5; do
  for v in main presence nolifecycle; do
    bin=$BRANCH; extra=()
    [ $v = main ] && bin=$MAIN
    [ $v = nolifecycle ] && extra=(-server-arg=-lifecycle=false)
    bench -scenario storm -subs 10000 -binary "$bin" "${extra[@]}" -json-out $out/storm10k-$v-$round.json > $out/storm10k-$v-$round.txt 2>&1
    if [ $round -le 3 ]; then
      bench -scenario idle -subs 10000 -hold 5s -concurrency 1024 -binary "$bin" "${extra[@]}" -json-out $out/idle10k-$v-$round.json > $out/idle10k-$v-$round.txt 2>&1
    fi
  done
done

# Kept clientIds on every route, against none.
for round in 1 2 3; do
  for v in nokeep keep; do
    extra=(); [ $v = keep ] && extra=(-server-arg=-keep-client-id)
    bench -scenario storm -subs 10000 -binary "$BRANCH" "${extra[@]}" -json-out $out/storm10k-$v-$round.json > $out/storm10k-$v-$round.txt 2>&1
    bench -scenario idle -subs 10000 -hold 5s -concurrency 1024 -binary "$BRANCH" "${extra[@]}" -json-out $out/idle10k-$v-$round.json > $out/idle10k-$v-$round.txt 2>&1
  done
done

# Per delivery, with and without a kept clientId, alternating.
: > $out/fanout-keep-clientid-ab.txt
for round in 1 2 3 4 5; do
  for n in 1000 10000; do
    for inf in 1 64; do
      for keep in false true; do
        (cd ../pkg/edge && ../../bench/edge.test -test.run '^$' -test.bench "^BenchmarkFanoutKeepClientID\$/^conns=$n\$/^keep=$keep\$/^inflight=$inf\$" -test.benchmem -test.count 1) |
          grep '^Benchmark' >> $out/fanout-keep-clientid-ab.txt
      done
    done
  done
done

# Presence at 10k and 100k connections, the kill, the write costs.
bench -scenario presence -subs 10k,100k -messages 2000 -rate 10000 -step 5s -json-out $out/presence-1.json > $out/presence-1.txt
