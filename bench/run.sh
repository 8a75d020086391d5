#!/usr/bin/env bash
# The benchmark (`make bench`): the plugin through the real `plakar`, against the
# hand-made pipe, PostgreSQL's own tools and (when its package is given) the other
# PostgreSQL integration, on throw-away PostgreSQL clusters. Writes BENCHMARKS.md
# and bench/scaling.png.
#
# Environment:
#   BENCH_SCALE      pgbench scale of the largest database (default 65, about
#                    1.1 GiB on disk with the wide tables); s/4 and s/2 are measured too
#   BENCH_RUNS       runs per measurement, the median is reported (default 3, at least 3)
#   PG_BIN_DIR       PostgreSQL 15 server binaries (default /usr/lib/postgresql/15/bin)
#   PLAKAR           the plakar binary; else `plakar` on $PATH, else
#                    $(go env GOPATH)/bin/plakar (the test suite's lookup). Without
#                    one, examples/drive stands in for Plakar and the report says so.
#   BENCH_PEER_PTAR  the other integration's package (PlakarKorp's `postgresql`,
#                    v1.1.0-beta.9), installed in a Plakar environment of its own;
#                    a benchmark peer only
#   BENCH_BASELINE   a git revision of this project: its plugin is built in a
#                    temporary worktree and its own CPU per GiB measured beside
#                    this build's
#   BENCH_PHYS_SCALE pgbench scale of the physical benchmark's database (default 65,
#                    about 1.1 GiB on disk); bench/physical.py measures physical
#                    against logical backups through the real plakar, and
#                    bench/wal.py WAL archive runs and restores to a moment
#   BENCH_WAL_LOAD_SECONDS  seconds of pgbench at full speed before each measured
#                    archive run (default 60)
#   BENCH_CURVE_RUNS, BENCH_CURVE_RUNS_10K, BENCH_CURVE_RUNS_50K  runs of the
#                    point-in-time cost curve with 1k, 10k and 50k WAL segments
#                    (defaults 1500, 300, 300; 0 leaves one out)
#   BENCH_CPU        plakar's -cpu in bench/wal.py (default: plakar's own)
#   BENCH_RESTORE_ROUNDS  rounds of bench/wal.py's restore cases (default 7)
#   BENCH_KEEP_LOGS  a directory where bench/wal.py keeps the restored servers'
#                    logs and recovery settings (their `redo done ... system
#                    usage` lines say where a replay's time went)
#   BENCH_DIRECT_SCALE  pgbench scale of bench/direct.py's cluster
#                    (`pgbench -i --partitions=8`; default BENCH_PHYS_SCALE):
#                    the direct copy against pgBackRest and Plakar's own importer
#   BENCH_DIRECT_TABLES  tables of its memory case (default 20000)
#   BENCH_ONLY=wal   only bench/wal.py, on the physical cluster alone; its
#                    section replaces the one BENCHMARKS.md has
#   BENCH_ONLY=direct  only bench/direct.py (its own cluster); likewise
#   BENCH_ONLY=physical  only bench/physical.py (the physical cluster and the
#                    one of 20 small databases); likewise
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export BENCH_SCALE=${BENCH_SCALE:-65}
export BENCH_RUNS=${BENCH_RUNS:-3}
if ((BENCH_RUNS < 3)); then BENCH_RUNS=3; fi
if ((BENCH_SCALE < 4)); then
  echo "bench: BENCH_SCALE must be at least 4" >&2
  exit 2
fi
pg_bin=${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}
password=bench

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# pgBackRest, the direct copy's peer (bench/direct.py).
if ! command -v pgbackrest >/dev/null; then
  log "installing pgbackrest (Debian's package), the direct copy's peer"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends pgbackrest >/dev/null
fi
python3 -c 'import matplotlib' 2>/dev/null ||
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore matplotlib >&2

log "building the plugin and examples/drive (release)"
cargo build --release --locked --bin postgresql --example drive >&2

work=$(mktemp -d /tmp/plakar-bench.XXXXXX)
chmod 755 "$work"
# Private copies: the tree may be rebuilt while the benchmark runs.
cp target/release/postgresql target/release/examples/drive "$work/"

clusters=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for data in "${clusters[@]}"; do
    as_server "$pg_bin/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
  done
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# plakar, found as the test suite finds it (tests/common/plakar.rs).
plakar_bin=${PLAKAR:-}
if [ -z "$plakar_bin" ]; then
  plakar_bin=$(command -v plakar || true)
fi
if [ -z "$plakar_bin" ] && command -v go >/dev/null; then
  gobin="$(go env GOPATH)/bin/plakar"
  [ -x "$gobin" ] && plakar_bin=$gobin
fi
export BENCH_PLAKAR=$plakar_bin BENCH_PTAR=
if [ -n "$plakar_bin" ]; then
  log "using $plakar_bin; packaging the plugin as make package does"
  stage="$work/stage"
  mkdir -p "$stage" "$work/pkg-env"
  cp "$work/postgresql" manifest.yaml validators/*.json "$stage/"
  version="v$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
  (cd "$stage" && HOME="$work/pkg-env" XDG_CONFIG_HOME="$work/pkg-env/config" \
    XDG_CACHE_HOME="$work/pkg-env/cache" XDG_DATA_HOME="$work/pkg-env/data" \
    "$plakar_bin" pkg create ./manifest.yaml "$version" >&2)
  BENCH_PTAR=$(ls "$stage"/postgresql_"$version"_*.ptar)
else
  log "no plakar found (\$PLAKAR, plakar on \$PATH, \$(go env GOPATH)/bin/plakar): examples/drive stands in for it"
fi
export BENCH_PEER_PTAR=${BENCH_PEER_PTAR:-}
if [ -n "$BENCH_PEER_PTAR" ] && [ ! -f "$BENCH_PEER_PTAR" ]; then
  echo "bench: BENCH_PEER_PTAR=$BENCH_PEER_PTAR is not a file" >&2
  exit 2
fi
[ -n "$plakar_bin" ] || BENCH_PEER_PTAR=

# An older build of the plugin, for its CPU per GiB only.
export BENCH_BASELINE=${BENCH_BASELINE:-} BENCH_BASELINE_BIN=
if [ -n "$BENCH_BASELINE" ]; then
  log "building the plugin at $BENCH_BASELINE for the CPU comparison"
  rev=$(git rev-parse --short "$BENCH_BASELINE")
  mkdir -p "$work/baseline-src"
  git archive "$rev" | tar -x -C "$work/baseline-src"
  (cd "$work/baseline-src" && CARGO_TARGET_DIR="$root/target/bench-baseline" \
    cargo build --release --locked --bin postgresql >&2)
  cp target/bench-baseline/release/postgresql "$work/postgresql-baseline"
  BENCH_BASELINE_BIN="$work/postgresql-baseline"
  BENCH_BASELINE="git $rev"
fi

# This machine's own address, if it has one: a server reached through it is not
# recognised as local, which is how the benchmark reaches jobs' copy.
own_addr=$(ip -4 -o addr show scope global 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')
export BENCH_OWN_ADDR=$own_addr


as_server() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- env LC_ALL=C.UTF-8 "$@"
  else
    env LC_ALL=C.UTF-8 "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_cluster NAME: initdb + pg_ctl start; sets $cluster_port_out.
start_cluster() {
  local dir="$work/$1" port
  mkdir -p "$dir"
  printf '%s' "$password" >"$dir/pw"
  [ "$(id -u)" -ne 0 ] || chown -R postgres: "$dir"
  as_server "$pg_bin/initdb" -D "$dir/data" -U postgres --auth=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 --no-sync --pwfile="$dir/pw" >"$dir/initdb.log"
  port=$(free_port)
  cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1${own_addr:+,$own_addr}'
port = $port
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 50
shared_buffers = 256MB
maintenance_work_mem = 256MB
max_wal_size = 8GB
checkpoint_timeout = 30min
EOF
  printf 'local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n' >"$dir/data/pg_hba.conf"
  [ -z "$own_addr" ] || printf 'host all all %s/32 scram-sha-256\n' "$own_addr" >>"$dir/data/pg_hba.conf"
  clusters+=("$dir/data")
  as_server "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 start >/dev/null
  cluster_port_out=$port
}

export PGHOST=127.0.0.1 PGUSER=postgres PGPASSWORD=$password

# make_database PORT DB SCALE: pgbench tables plus wide tables with text, jsonb,
# bytea, secondary indexes and foreign keys (about a tenth of the size).
make_database() {
  local port=$1 db=$2 scale=$3
  createdb -p "$port" "$db"
  pgbench -p "$port" -i -q -s "$scale" -I dtGvpf "$db" >/dev/null 2>&1
  psql -p "$port" -d "$db" -q -v ON_ERROR_STOP=1 -v n="$scale" >/dev/null <<'SQL'
CREATE TABLE customers (
  id integer PRIMARY KEY,
  name text NOT NULL,
  email text NOT NULL UNIQUE,
  profile jsonb NOT NULL
);
INSERT INTO customers
SELECT i, 'customer ' || i, 'c' || i || '@example.com',
       jsonb_build_object('tier', i % 5, 'tags', jsonb_build_array('a' || i % 7, 'b' || i % 11),
                          'since', (date '2015-01-01' + i % 3000)::text)
FROM generate_series(1, :n * 500) AS i;
CREATE TABLE documents (
  id bigint PRIMARY KEY,
  aid integer NOT NULL REFERENCES pgbench_accounts (aid),
  customer_id integer NOT NULL REFERENCES customers (id),
  title text NOT NULL,
  body text NOT NULL,
  attrs jsonb NOT NULL,
  payload bytea NOT NULL,
  created timestamptz NOT NULL
);
INSERT INTO documents
SELECT i, 1 + (i::bigint * 7919) % (:n * 100000), 1 + i % (:n * 500),
       'document ' || md5(i::text),
       repeat(md5(i::text) || ' lorem ipsum dolor sit amet ', 6),
       jsonb_build_object('kind', 'k' || i % 13, 'size', i % 1000, 'flags', jsonb_build_array(i % 2 = 0, i % 3 = 0)),
       decode(md5(i::text) || md5((i + 1)::text) || md5((i * 31)::text) || md5((i * 17)::text), 'hex'),
       timestamptz '2020-01-01' + i * interval '1 minute'
FROM generate_series(1, :n * 2000) AS i;
CREATE INDEX ON documents (aid);
CREATE INDEX ON documents (customer_id, created);
CREATE INDEX ON documents ((attrs ->> 'kind'));
CREATE TABLE events (
  id bigint PRIMARY KEY,
  document_id bigint NOT NULL REFERENCES documents (id),
  kind text NOT NULL,
  data jsonb,
  at timestamptz NOT NULL
);
INSERT INTO events
SELECT i, 1 + i % (:n * 2000), (ARRAY['view', 'edit', 'share', 'delete'])[1 + i % 4],
       jsonb_build_object('ip', '10.0.' || i % 256 || '.' || i % 199, 'agent', 'bench/' || i % 17),
       timestamptz '2021-01-01' + i * interval '10 seconds'
FROM generate_series(1, :n * 3000) AS i;
CREATE INDEX ON events (document_id);
CREATE INDEX ON events (kind, at);
VACUUM ANALYZE;
SQL
}

# replace_section TITLE FILE: FILE's section in place of BENCHMARKS.md's
# section TITLE (appended when there is none).
replace_section() {
  python3 - "$1" "$2" <<'PY'
import sys
title, path = sys.argv[1], sys.argv[2]
text = open("BENCHMARKS.md").read()
section = open(path).read()
start = text.find("## " + title)
end = text.find("\n## ", start + 1) if start >= 0 else -1
if start < 0:
    text = text.rstrip("\n") + "\n\n" + section
elif end < 0:
    text = text[:start] + section
else:
    text = text[:start] + section.rstrip("\n") + "\n\n" + text[end + 1:]
open("BENCHMARKS.md", "w").write(text)
PY
  rm -f "$2"
}

# The cluster of bench/physical.py: the benchmark database at the physical
# scale; and 20 small databases in the cluster at $2.
make_physical_data() {
  log "generating database bench_phys for the physical benchmark (pgbench scale ${BENCH_PHYS_SCALE:-65})"
  make_database "$1" bench_phys "${BENCH_PHYS_SCALE:-65}"
  psql -p "$1" -d postgres -q -c 'CHECKPOINT' >/dev/null
}
make_small_databases() {
  log "generating 20 small databases"
  make_database "$1" template_bench 1
  for i in $(seq -w 1 20); do
    createdb -p "$1" -T template_bench "app_$i"
  done
  dropdb -p "$1" template_bench
  psql -p "$1" -d postgres -q -c 'CHECKPOINT' >/dev/null
}

started=$(date +%s)
if [ "${BENCH_ONLY:-}" = physical ]; then
  log "starting the physical cluster and the one of small databases (BENCH_ONLY=physical)"
  start_cluster phys
  phys_port=$cluster_port_out
  start_cluster many
  cluster_port=$cluster_port_out
  export BENCH_PHYS_PORT=$phys_port BENCH_PHYS_DB=bench_phys BENCH_CLUSTER_PORT=$cluster_port
  export BENCH_WORK=$work BENCH_PG_BIN=$pg_bin
  make_physical_data "$phys_port"
  make_small_databases "$cluster_port"
  python3 bench/physical.py
  replace_section "Physical backups" bench/physical.md
  log "done after $(($(date +%s) - started)) s: the physical section of BENCHMARKS.md"
  exit 0
fi
if [ "${BENCH_ONLY:-}" = direct ]; then
  export BENCH_WORK=$work BENCH_PG_BIN=$pg_bin
  python3 bench/direct.py
  replace_section "Direct copy" bench/direct.md
  log "done after $(($(date +%s) - started)) s: the direct copy's section of BENCHMARKS.md"
  exit 0
fi
if [ "${BENCH_ONLY:-}" = wal ]; then
  log "starting the physical cluster (BENCH_ONLY=wal)"
  start_cluster phys
  export BENCH_PHYS_PORT=$cluster_port_out BENCH_PHYS_DB=bench_phys BENCH_WORK=$work BENCH_PG_BIN=$pg_bin
  make_database "$BENCH_PHYS_PORT" bench_phys "${BENCH_PHYS_SCALE:-65}"
  psql -p "$BENCH_PHYS_PORT" -d postgres -q -c 'CHECKPOINT' >/dev/null
  python3 bench/wal.py
  replace_section "Point-in-time recovery" bench/wal.md
  log "done after $(($(date +%s) - started)) s: the point-in-time section of BENCHMARKS.md"
  exit 0
fi
log "starting the clusters"
start_cluster main
port=$cluster_port_out
start_cluster many
cluster_port=$cluster_port_out
start_cluster phys
phys_port=$cluster_port_out
export BENCH_PORT=$port BENCH_CLUSTER_PORT=$cluster_port BENCH_WORK=$work BENCH_PG_BIN=$pg_bin
export BENCH_PHYS_PORT=$phys_port BENCH_PHYS_DB=bench_phys

sizes=$(python3 -c "import os; s=int(os.environ['BENCH_SCALE']); print(' '.join(str(x) for x in sorted({max(1,s//4), max(1,s//2), s})))")
export BENCH_SIZES=$sizes
for s in $sizes; do
  log "generating database bench_s$s (pgbench scale $s + wide tables)"
  make_database "$port" "bench_s$s" "$s"
done

make_physical_data "$phys_port"
make_small_databases "$cluster_port"
psql -p "$port" -d postgres -q -c 'CHECKPOINT' >/dev/null
log "data ready after $(($(date +%s) - started)) s"

python3 bench/bench.py
log "physical backups against logical ones, through the real plakar"
python3 bench/physical.py
{ echo; cat bench/physical.md; } >>BENCHMARKS.md
rm -f bench/physical.md
log "point-in-time recovery: WAL archive runs and restores to the latest, through the real plakar"
python3 bench/wal.py
{ echo; cat bench/wal.md; } >>BENCHMARKS.md
rm -f bench/wal.md
log "the direct copy against pgBackRest and Plakar's own importer"
python3 bench/direct.py
{ echo; cat bench/direct.md; } >>BENCHMARKS.md
rm -f bench/direct.md
log "done after $(($(date +%s) - started)) s: BENCHMARKS.md, bench/scaling.png"
