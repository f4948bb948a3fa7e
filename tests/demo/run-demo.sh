#!/bin/sh
# `make run`: an upstream (nginx, from Debian) on 127.0.0.1:9000 and sluiced
# in front of it with hooks/examples/demo.yaml, in the foreground. ^C stops
# both.
set -eu
build=${1:-build}
top=$(cd "$(dirname "$0")/../.." && pwd)
run=$(mktemp -d /tmp/sluice-demo.XXXXXX)

sed "s#PREFIX#$run#g" "$top/tests/demo/nginx.conf" > "$run/nginx.conf"
nginx -c "$run/nginx.conf" -p "$run" -g 'daemon off;' &
nginx_pid=$!
trap 'kill $nginx_pid 2>/dev/null; wait $nginx_pid 2>/dev/null; rm -rf "$run"' EXIT INT TERM

cat <<TXT

sluice demo: sluiced on :8080 (admin 127.0.0.1:9901), upstream nginx on :9000.
Try, from another terminal:

  curl -i localhost:8080/plain/hello              # plain API, no Python
  curl -i localhost:8081/anything                 # own listener, spliced whole
  time curl -s localhost:8080/slow/x              # a hook that sleeps 1 s
  time (for i in \$(seq 10); do curl -s -o /dev/null localhost:8080/slow/\$i & done; wait)
                                                  # ten at once: about 1 s, not 10
  curl -i localhost:8080/tyk/x                    # Tyk plugin: 401 without a key
  curl -i -H 'Authorization: secret-1' localhost:8080/tyk/x
  for i in \$(seq 6); do curl -s -o /dev/null -w '%{http_code} ' -H 'Authorization: secret-1' localhost:8080/tyk/x; done; echo
                                                  # the key may send 5 per 10 s, then 429
  curl -s localhost:9901/status                   # JSON counters
  build/sluicectl top                             # live view; browse 127.0.0.1:9901/stats

TXT
"$top/$build/sluiced" -c "$top/hooks/examples/demo.yaml" -f
