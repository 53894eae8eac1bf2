#!/usr/bin/env bash
# Final A/B/C runs, interleaved: A = before this work (4df1cdb), B = after the
# issue-9 refactor (25ba291), C = final main. One machine, one run.
set -u
# In one directory: herald-bench-final (bench/cmd/herald-bench at main) and embedded-A/B/C (cmd/embedded at 4df1cdb, 25ba291, main before the presence merge).
out=${OUT:-./final-$(date +%H%M)}
mkdir -p "$out"
hb=./herald-bench-final
run() { # name binary args...
  local name=$1 bin=$2; shift 2
  $hb -binary ./embedded-$bin "$@" -json-out "$out/$name-$bin.json" > "$out/$name-$bin.txt" 2>&1
}
for round in 1 2; do
  for v in A B C; do
    run idle-sse-r$round $v -scenario idle -subs 10000 -hold 5s -concurrency 512
    run fanout10k-r$round $v -scenario fanout -subs 10000 -rate 1 -messages 30
    run sweep1k-r$round $v -scenario sweep -subs 1000 -rates 500k,1M,2M,3M
    run sat10k-r$round $v -scenario sweep -subs 10000 -rates 1M,2M,3M
  done
  for v in A C; do
    run idle-ws-r$round $v -scenario idle -subs 10000 -hold 5s -concurrency 512 -transport ws
    for tr in sse ws; do
      run ws1k400-$tr-r$round $v -scenario fanout -subs 1000 -rate 400 -messages 2000 -transport $tr
      run ws10k50-$tr-r$round $v -scenario fanout -subs 10000 -rate 50 -messages 250 -transport $tr
      run ws1k200-$tr-r$round $v -scenario fanout -subs 1000 -rate 200 -messages 1000 -transport $tr
      run ws10k1-$tr-r$round $v -scenario fanout -subs 10000 -rate 1 -messages 30 -transport $tr
    done
  done
done
echo done > "$out/DONE"
