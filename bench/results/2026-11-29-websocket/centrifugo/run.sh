#!/usr/bin/env bash
# Herald (D = main) WebSocket and SSE against Centrifugo v6.9.1's WebSocket
# (uni_websocket, defaults), interleaved; every message published over HTTP.
# In one directory: herald-bench-D (go build ./cmd/herald-bench in bench/),
# embedded-D (go build ./cmd/embedded at the measured commit), and cf/ with
# centrifugo (GOBIN=$PWD/cf go install github.com/centrifugal/centrifugo/v6@v6.9.1)
# and centrifugo-config.json as cf/config.json.
set -u
out=${OUT:-./cf-$(date +%H%M)}
mkdir -p "$out"
hb=./herald-bench-D
CFURL='ws://127.0.0.1:8000/connection/uni_websocket?cf_connect=%7B%22subs%22%3A%7B%22bench%22%3A%7B%7D%7D%7D'
herald() { # name transport args...
  local name=$1 tr=$2; shift 2
  $hb -binary ./embedded-D -publish http -transport $tr "$@" -json-out "$out/$name-$tr.json" > "$out/$name-$tr.txt" 2>&1
}
cf() { # name args...
  local name=$1; shift
  (cd cf && exec ./centrifugo -c config.json > /dev/null 2>&1) &
  for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:8000/health && break; sleep 0.1; done
  local pid; pid=$(pgrep -n -x centrifugo)
  $hb -sub-url "$CFURL" -pub-url http://127.0.0.1:8000/api/publish \
    -pub-body '{"channel":"bench","data":{{payload}}}' -pub-header 'X-API-Key: bench-key' \
    -pid "$pid" "$@" -json-out "$out/$name-cf.json" > "$out/$name-cf.txt" 2>&1
  kill "$pid"; wait 2>/dev/null; sleep 1
}
for round in 1 2; do
  for load in "1k200:-subs 1000 -rate 200 -messages 1000" "1k400:-subs 1000 -rate 400 -messages 2000" \
              "10k1:-subs 10000 -rate 1 -messages 30" "10k50:-subs 10000 -rate 50 -messages 250"; do
    name=${load%%:*}; args=${load#*:}
    herald $name-r$round ws -scenario fanout $args
    cf $name-r$round -scenario fanout $args
    herald $name-r$round sse -scenario fanout $args
  done
  herald idle-r$round ws -scenario idle -subs 10000 -hold 5s -concurrency 512
  cf idle-r$round -scenario idle -subs 10000 -hold 5s -concurrency 512
done
# Equal load: 10k × 10 msg/s, where the HTTP publisher keeps up with both.
for round in 1 2; do
  herald 10k10-r$round ws -scenario fanout -subs 10000 -rate 10 -messages 100
  cf 10k10-r$round -scenario fanout -subs 10000 -rate 10 -messages 100
  herald 10k10-r$round sse -scenario fanout -subs 10000 -rate 10 -messages 100
done
echo done > "$out/DONE"
