#!/bin/sh
# demo.sh BIN — litevisor's main job on an embedded default that needs no S3:
# a demo service writing to SQLite every 100 ms, a file replica under a temp
# dir, health and metrics on 127.0.0.1. Ctrl-C stops it cleanly (the service
# gets SIGINT, litevisor flushes the last rows to the replica and exits).
# Run it twice with DEMO_DIR=<dir from the first run> to see restore at work:
# delete <dir>/data first and litevisor brings the database back before the
# service starts.
set -eu
BIN=$1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${DEMO_DIR:-$(mktemp -d /tmp/litevisor-demo.XXXXXX)}
PORT=${DEMO_PORT:-$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
mkdir -p "$DIR/data"

cat >"$DIR/litevisor.yml" <<YAML
# litevisor demo configuration (written by scripts/demo.sh)
addr: 127.0.0.1:$PORT
logging:
  level: info
supervisor:
  stop-grace: 5s
  flush-timeout: 5s
dbs:
  - path: $DIR/data/demo.db
    replicas:
      - name: local-replica
        type: file
        path: $DIR/replica
        sync-interval: 1s
        snapshot-interval: 10m
        retention: 1h
YAML

cat <<MSG
litevisor demo
  config:    $DIR/litevisor.yml
  database:  $DIR/data/demo.db   (written by scripts/demo-service.py every 100 ms)
  replica:   $DIR/replica        (Litestream v0.3 layout: generations/<id>/{snapshots,wal})
  health:    curl -s http://127.0.0.1:$PORT/healthz    (also /readyz, /livez, /metrics)
  restore:   $BIN restore -o /tmp/demo-copy.db file://$DIR/replica
Ctrl-C stops the service, flushes the replica and exits.

MSG
exec "$BIN" run -config "$DIR/litevisor.yml" -- /usr/bin/python3 "$ROOT/scripts/demo-service.py" "$DIR/data/demo.db"
