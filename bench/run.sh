#!/usr/bin/env bash
# DataGuardian agent benchmark (`make bench`): wall time, throughput (MiB/s of raw dump), client
# CPU seconds per GiB of raw dump and peak RSS of
#   (a) pg_dump -Fc -Z0 > /dev/null                       the limit
#   (b) dataguardian agent backup → S3, zstd:3 + age      ours
#   (c) pg_dump -Fc -Z0 | gzip | aws s3 cp -             what logical-backup CronJobs run
#   (d) pg_dump -Fc -Z0 | zstd -3 -T0 | aws s3 cp -      a careful shell pipeline (no age CLI here)
#   (h) pg_dump -Fc -Z0 | restic backup --stdin          K8up's way (restic from Debian)
#   (e) pg_restore -d from a local -Z0 file               the restore limit
#   (f) dataguardian agent restore ← S3 (zstd + age)      ours
#   (g) dataguardian agent backup → file:// (zstd + age)  ours without the S3 server in the way
# against two S3 servers on loopback: moto (Python, has the checksum extension) and s3s-fs
# (Rust, SigV4, files on disk; fast enough not to be the bottleneck), on a generated PostgreSQL
# database (pgbench tables plus random base64 text, so the dump compresses about 2x instead of
# pgbench's ~100x) at two sizes, to show that memory stays flat. Ratios are printed, not
# asserted. Everything runs on loopback in a temp dir, removed at exit.
#
# Last MariaDB (issue 18): a database of BENCH_MARIADB_TABLES tables holding BENCH_MARIADB_MIB
# MiB (default 16 tables, 512 MiB; mixed rows as above) on a MariaDB server of its own, backed up
# to file:// and restored with --parallelism 1 (the single stream: one mariadb-dump), 2 and 4.
#
# Then the parallel layout (issue 18): a database of BENCH_PARALLEL_TABLES tables holding
# BENCH_PARALLEL_MIB MiB (default 16 tables, 2048 MiB; same mixed-compressibility rows), backed
# up and restored with --parallelism 1 (the single stream), 2 and 4, side by side, to and from
# file:// and s3s-fs (BENCH_PARALLEL_SINKS), with wall time, client CPU s/GiB and peak RSS.
#
# Environment: BENCH_SIZES="small large" (default; "tiny" is a smoke test; "" skips them),
#   BENCH_PARALLEL="1 2 4" (job counts of the parallel section; "" skips it),
#   BENCH_PARALLEL_MIB=2048 and BENCH_PARALLEL_TABLES=16 (shrink for a quick run),
#   BENCH_PARALLEL_SINKS="file s3s" (where the parallel section backs up to and restores from),
#   BENCH_MARIADB="1 2 4" (job counts of the MariaDB section; "" skips it),
#   BENCH_MARIADB_MIB=512 and BENCH_MARIADB_TABLES=16 (its database),
#   BENCH_OUT=<file for the markdown table>, BENCH_KEEP=1 keeps the temp dir, BENCH_BIN=<binary>
#   skips the release build, BENCH_TMPDIR=<dir> puts the temp dir elsewhere than /tmp.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
SIZES="${BENCH_SIZES-small large}"
PARALLEL="${BENCH_PARALLEL-1 2 4}"
PAR_MIB="${BENCH_PARALLEL_MIB:-2048}"
PAR_TABLES="${BENCH_PARALLEL_TABLES:-16}"
PAR_SINKS="${BENCH_PARALLEL_SINKS-file s3s}"
OUT="${BENCH_OUT:-$ROOT/target/bench/results.md}"

need() { command -v "$1" >/dev/null 2>&1 || { echo "bench: $1 is required but not installed ($2)" >&2; exit 1; }; }
MARIADB="${BENCH_MARIADB-1 2 4}"
MY_MIB="${BENCH_MARIADB_MIB:-512}"
MY_TABLES="${BENCH_MARIADB_TABLES:-16}"
# Each section needs only its own servers and tools.
USE_PG=""; [ -n "$SIZES$PARALLEL" ] && USE_PG=1
if [ -n "$USE_PG" ]; then
  need "$PGBIN/pg_ctl" "apt-get install postgresql-15"
  need pgbench "apt-get install postgresql-contrib"
fi
USE_S3=""; [ -n "$SIZES" ] && USE_S3=1
[ -n "$PARALLEL" ] && [[ " $PAR_SINKS " == *" s3s "* ]] && USE_S3=1
if [ -n "$USE_S3" ]; then
  need moto_server "pip install 'moto[server]'"
  need s3s-fs "cargo install s3s-fs@0.14.1 --locked --features binary (scripts/install-deps.sh)"
  need restic "apt-get install restic"
  need aws "pip install awscli"
fi
if [ -n "$MARIADB" ]; then
  need mariadb-install-db "apt-get install mariadb-server"
  need mariadb-dump "apt-get install mariadb-client"
  [ -x /usr/sbin/mariadbd ] || command -v mariadbd >/dev/null || { echo "bench: mariadbd is required (apt-get install mariadb-server)" >&2; exit 1; }
fi
need zstd "apt-get install zstd"
need gzip "apt-get install gzip"
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is required (apt-get install time)" >&2; exit 1; }

if [ -n "${BENCH_BIN:-}" ]; then
  DG="$BENCH_BIN"
else
  echo "bench: building the release binary" >&2
  (cd "$ROOT" && cargo build --release --bin dataguardian >&2)
  DG="$ROOT/target/release/dataguardian"
fi

# BENCH_TMPDIR: where the temp dir goes (default /tmp; /dev/shm when the disk is short: the large
# size needs about 6 GiB for the databases, the S3 objects and the local dump).
WORK="$(mktemp -d "${BENCH_TMPDIR:-/tmp}/dg-bench.XXXXXX")"
chmod 755 "$WORK"
touch "$WORK/pg.log" && chown postgres "$WORK/pg.log"
PGDATA="$WORK/pg"
MOTO_PID=""
S3S_PID=""
MY_PID=""
cleanup() {
  set +e
  [ -n "$MOTO_PID" ] && kill "$MOTO_PID" 2>/dev/null && wait "$MOTO_PID" 2>/dev/null
  [ -n "$S3S_PID" ] && kill "$S3S_PID" 2>/dev/null && wait "$S3S_PID" 2>/dev/null
  [ -n "$MY_PID" ] && kill "$MY_PID" 2>/dev/null && wait "$MY_PID" 2>/dev/null
  [ -d "$PGDATA" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT_="$(free_port)"
MOTO_PORT="$(free_port)"
S3S_PORT="$(free_port)"

# PostgreSQL 15 as the postgres user, trust auth on loopback only.
if [ -n "$USE_PG" ]; then
mkdir -p "$PGDATA" && chown postgres "$PGDATA"
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/../pg.log" -w start \
  -o "-p $PGPORT_ -c listen_addresses=127.0.0.1 -k $PGDATA -c shared_buffers=256MB -c max_wal_size=2GB -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >/dev/null
fi
export PGHOST=127.0.0.1 PGPORT="$PGPORT_" PGUSER=postgres

export DG_EGRESS_ALLOW_CIDRS=127.0.0.0/8
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
if [ -n "$USE_S3" ]; then
# moto S3.
# moto spools large uploads to TMPDIR: keep them in the work dir too.
TMPDIR="$WORK" moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
ENDPOINT="http://127.0.0.1:$MOTO_PORT"
for _ in $(seq 1 100); do curl -fs "$ENDPOINT" >/dev/null 2>&1 && break; sleep 0.1; done
aws --endpoint-url "$ENDPOINT" s3 mb s3://bench >/dev/null

# s3s-fs S3 (SigV4 with the same keys; objects are files under $WORK/s3s).
mkdir -p "$WORK/s3s"
s3s-fs --host 127.0.0.1 --port "$S3S_PORT" --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" "$WORK/s3s" >"$WORK/s3s.log" 2>&1 &
S3S_PID=$!
S3S="http://127.0.0.1:$S3S_PORT"
for _ in $(seq 1 100); do aws --endpoint-url "$S3S" s3 ls >/dev/null 2>&1 && break; sleep 0.1; done
aws --endpoint-url "$S3S" s3 mb s3://bench >/dev/null
fi
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$WORK/restic-cache"

RECIPIENT="$(python3 "$HERE/age_keygen.py" "$WORK/identity.txt")"

# measure NAME CMD: runs CMD under /usr/bin/time -v; records wall seconds, CPU seconds (user +
# system of the command's whole process tree: pg_dump, the compressors, the uploader — not the
# PostgreSQL backend, not the S3 server) and peak RSS (KiB, the largest single process of the
# tree, as getrusage(RUSAGE_CHILDREN) reports).
declare -A WALL RSS CPU
measure() {
  local name="$1"; shift
  sync
  /usr/bin/time -v -o "$WORK/time.$name" bash -c "$*" >"$WORK/out.$name" 2>"$WORK/err.$name" || {
    echo "bench: $name failed:" >&2; tail -20 "$WORK/err.$name" >&2; exit 1; }
  local wall rss
  wall="$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/time.$name" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')"
  rss="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.$name")"
  cpu="$(awk -F': ' '/User time \(seconds\)|System time \(seconds\)/ {s += $2} END {print s}' "$WORK/time.$name")"
  WALL[$name]="$wall"; RSS[$name]="$rss"; CPU[$name]="$cpu"
  printf 'bench: %-22s %8.2f s  %7.2f CPU s  %7.1f MiB\n' "$name" "$wall" "$cpu" "$(echo "$rss/1024" | bc -l)" >&2
}

ratio() { echo "scale=2; $1 / $2" | bc -l; }
mib() { echo "scale=1; $1 / 1024" | bc -l; }

mkdir -p "$(dirname "$OUT")"
: >"$OUT"
if [ -n "$SIZES" ]; then
  {
    echo "| size | db size | raw dump | stored (zstd+age) | pipeline | wall s | × raw dump | MiB/s of raw dump | client CPU s/GiB | peak RSS MiB |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
  } >>"$OUT"
fi

for size in $SIZES; do
  case "$size" in
    tiny)  SCALE=1;  RANDOM_ROWS=10000 ;;
    small) SCALE=8;  RANDOM_ROWS=170000 ;;
    large) SCALE=34; RANDOM_ROWS=680000 ;;
    *) echo "bench: unknown size $size (tiny|small|large)" >&2; exit 1 ;;
  esac
  DB="bench_$size"
  echo "bench: generating $DB (pgbench scale $SCALE + $RANDOM_ROWS random-text rows)" >&2
  createdb "$DB"
  pgbench -i -q -s "$SCALE" "$DB" >/dev/null 2>&1
  psql -X -q -d "$DB" -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION pgcrypto;
CREATE TABLE random_text (id bigint PRIMARY KEY, body text NOT NULL);
INSERT INTO random_text SELECT g, encode(gen_random_bytes(750), 'base64') FROM generate_series(1, $RANDOM_ROWS) g;
VACUUM ANALYZE;
SQL
  DBSIZE="$(psql -X -At -d "$DB" -c "SELECT pg_size_pretty(pg_database_size(current_database()))")"

  measure "raw_$size"   "pg_dump -Fc -Z0 -d $DB > /dev/null"
  measure "ours_$size"  "'$DG' agent backup --engine postgres --uri postgresql://postgres@127.0.0.1:$PGPORT_/$DB --to s3://bench/ours --run-id $size --parallelism 1 --recipient $RECIPIENT --s3-endpoint $ENDPOINT --s3-path-style --termination-log $WORK/termination.log"
  measure "ours_s3s_$size" "'$DG' agent backup --engine postgres --uri postgresql://postgres@127.0.0.1:$PGPORT_/$DB --to s3://bench/ours --run-id $size --parallelism 1 --recipient $RECIPIENT --s3-endpoint $S3S --s3-path-style --termination-log $WORK/termination.log"
  measure "file_$size"  "'$DG' agent backup --engine postgres --uri postgresql://postgres@127.0.0.1:$PGPORT_/$DB --to file://$WORK/files --run-id $size --parallelism 1 --recipient $RECIPIENT --termination-log $WORK/termination.log"
  rm -rf "$WORK/files"
  measure "gzip_$size"  "pg_dump -Fc -Z0 -d $DB | gzip | aws --endpoint-url $ENDPOINT s3 cp - s3://bench/gzip/$size.dump.gz"
  aws --endpoint-url "$ENDPOINT" s3 rm --quiet --recursive s3://bench/gzip/
  measure "zstd_$size"  "pg_dump -Fc -Z0 -d $DB | zstd -3 -T0 -q | aws --endpoint-url $ENDPOINT s3 cp - s3://bench/zstd/$size.dump.zst"
  aws --endpoint-url "$ENDPOINT" s3 rm --quiet --recursive s3://bench/zstd/
  # Disk space is scarce on shared machines: objects no later step reads are removed at once.
  measure "gzip_s3s_$size" "pg_dump -Fc -Z0 -d $DB | gzip | aws --endpoint-url $S3S s3 cp - s3://bench/gzip/$size.dump.gz"
  rm -rf "$WORK/s3s/bench/gzip"
  measure "zstd_s3s_$size" "pg_dump -Fc -Z0 -d $DB | zstd -3 -T0 -q | aws --endpoint-url $S3S s3 cp - s3://bench/zstd/$size.dump.zst"
  rm -rf "$WORK/s3s/bench/zstd"
  # K8up's way: restic reads the dump on stdin (content-defined chunks, zstd, AES-256 + Poly1305,
  # a repository per size so the second size does not dedup against the first).
  restic -q -r "s3:$S3S/bench/restic-$size" init >/dev/null
  measure "restic_s3s_$size" "pg_dump -Fc -Z0 -d $DB | restic -q -r s3:$S3S/bench/restic-$size backup --stdin --stdin-filename $DB.dump"
  rm -rf "$WORK/s3s/bench/restic-$size" "$WORK/restic-cache"
  measure "raw2_$size"  "pg_dump -Fc -Z0 -d $DB > /dev/null"

  RAWBYTES="$(python3 -c "import json,sys; print(json.loads(open('$WORK/out.ours_$size').read().splitlines()[-1])['rawBytes'])")"
  STORED="$(python3 -c "import json,sys; print(json.loads(open('$WORK/out.ours_$size').read().splitlines()[-1])['sizeBytes'])")"

  # Restore: pg_restore from a local uncompressed file vs ours from S3.
  pg_dump -Fc -Z0 -d "$DB" -f "$WORK/local.dump"
  createdb "${DB}_local"
  measure "pgrestore_$size" "pg_restore -d ${DB}_local '$WORK/local.dump'"
  rm -f "$WORK/local.dump"
  dropdb "${DB}_local"
  measure "ours_restore_$size" "'$DG' agent restore --engine postgres --uri postgresql://postgres@127.0.0.1:$PGPORT_/${DB}_ours --from s3://bench/ours/$size/manifest.json --identity-file '$WORK/identity.txt' --create-database --s3-endpoint $ENDPOINT --s3-path-style --termination-log $WORK/termination.log"
  [ "$(psql -X -At -d "${DB}_ours" -c 'SELECT count(*) FROM random_text')" = "$RANDOM_ROWS" ] || { echo "bench: restored row count differs" >&2; exit 1; }
  dropdb "${DB}_ours"
  measure "ours_restore_s3s_$size" "'$DG' agent restore --engine postgres --uri postgresql://postgres@127.0.0.1:$PGPORT_/${DB}_s3s --from s3://bench/ours/$size/manifest.json --identity-file '$WORK/identity.txt' --create-database --s3-endpoint $S3S --s3-path-style --termination-log $WORK/termination.log"
  [ "$(psql -X -At -d "${DB}_s3s" -c 'SELECT count(*) FROM random_text')" = "$RANDOM_ROWS" ] || { echo "bench: restored row count differs (s3s-fs)" >&2; exit 1; }
  dropdb "${DB}_s3s"
  # How the agent confirmed its uploads on each server.
  CONF_MOTO="$(python3 -c "import json; print(json.loads(open('$WORK/out.ours_$size').read().splitlines()[-1])['artifacts'][0].get('confirmedBy','?'))")"
  CONF_S3S="$(python3 -c "import json; print(json.loads(open('$WORK/out.ours_s3s_$size').read().splitlines()[-1])['artifacts'][0].get('confirmedBy','?'))")"

  RAWAVG="$(echo "(${WALL[raw_$size]} + ${WALL[raw2_$size]}) / 2" | bc -l)"
  row() { # name label baseline
    printf '| %s | %s | %s MiB | %s MiB | %s | %.2f | %s | %.0f | %.2f | %s |\n' "$size" "$DBSIZE" "$(echo "scale=0; $RAWBYTES/1048576" | bc)" \
      "$(echo "scale=0; $STORED/1048576" | bc)" "$2" "${WALL[$1]}" "$(ratio "${WALL[$1]}" "$3")×" \
      "$(echo "$RAWBYTES / 1048576 / ${WALL[$1]}" | bc -l)" "$(echo "${CPU[$1]} * 1073741824 / $RAWBYTES" | bc -l)" "$(mib "${RSS[$1]}")" >>"$OUT"
  }
  row "raw_$size"  '(a) `pg_dump -Fc -Z0 > /dev/null` (1st run)' "$RAWAVG"
  row "raw2_$size" '(a) `pg_dump -Fc -Z0 > /dev/null` (2nd run)' "$RAWAVG"
  row "ours_s3s_$size" "(b) **\`dataguardian agent backup\` → s3s-fs, zstd:3 + age** (confirmed by $CONF_S3S)" "$RAWAVG"
  row "ours_$size" "(b) \`dataguardian agent backup\` → moto, zstd:3 + age (confirmed by $CONF_MOTO)" "$RAWAVG"
  row "file_$size" '(g) `dataguardian agent backup` → local file (fsync), zstd:3 + age' "$RAWAVG"
  row "zstd_s3s_$size" '(d) `pg_dump \| zstd -3 -T0 \| aws s3 cp -` → s3s-fs' "$RAWAVG"
  row "zstd_$size" '(d) `pg_dump \| zstd -3 -T0 \| aws s3 cp -` → moto' "$RAWAVG"
  row "restic_s3s_$size" '(h) `pg_dump \| restic backup --stdin` → s3s-fs (K8up)' "$RAWAVG"
  row "gzip_s3s_$size" '(c) `pg_dump \| gzip \| aws s3 cp -` → s3s-fs' "$RAWAVG"
  row "gzip_$size" '(c) `pg_dump \| gzip \| aws s3 cp -` → moto' "$RAWAVG"
  row "pgrestore_$size" '(e) `pg_restore -d` from a local -Z0 file (restore limit)' "${WALL[pgrestore_$size]}"
  row "ours_restore_s3s_$size" '(f) **`dataguardian agent restore` ← s3s-fs, zstd + age**' "${WALL[pgrestore_$size]}"
  row "ours_restore_$size" '(f) `dataguardian agent restore` ← moto, zstd + age' "${WALL[pgrestore_$size]}"
  echo "bench: $size: ours(s3s-fs)/raw = $(ratio "${WALL[ours_s3s_$size]}" "$RAWAVG")×, ours/zstd pipeline (s3s-fs) = $(ratio "${WALL[ours_s3s_$size]}" "${WALL[zstd_s3s_$size]}")×, ours/restic = $(ratio "${WALL[ours_s3s_$size]}" "${WALL[restic_s3s_$size]}")×, ours/gzip (s3s-fs) = $(ratio "${WALL[ours_s3s_$size]}" "${WALL[gzip_s3s_$size]}")×, restore ours(s3s-fs)/pg_restore = $(ratio "${WALL[ours_restore_s3s_$size]}" "${WALL[pgrestore_$size]}")×, compression $(ratio "$RAWBYTES" "$STORED")×" >&2
  dropdb "$DB"
  rm -rf "$WORK/s3s/bench/ours/$size"
done

# The parallel layout: one database of PAR_TABLES tables, PAR_MIB MiB in all, backed up and
# restored with 1 (single stream), 2 and 4 jobs, to a local file (the S3 server out of the way)
# and to s3s-fs (multipart uploads, streamed downloads).
if [ -n "$PARALLEL" ]; then
  DB=bench_parallel
  ROWS_PER_TABLE=$(( PAR_MIB * 1048576 / PAR_TABLES / 760 ))
  echo "bench: generating $DB ($PAR_TABLES tables of $ROWS_PER_TABLE rows, ~$PAR_MIB MiB)" >&2
  createdb "$DB"
  psql -X -q -d "$DB" -v ON_ERROR_STOP=1 -c "CREATE EXTENSION pgcrypto"
  for t in $(seq -w 1 "$PAR_TABLES"); do
    # Half random base64 (incompressible), half repeated hex: the dump compresses about 2x.
    psql -X -q -d "$DB" -v ON_ERROR_STOP=1 -c "CREATE TABLE t$t (id bigint PRIMARY KEY, n int NOT NULL, body text NOT NULL); INSERT INTO t$t SELECT g, g % 1000, encode(gen_random_bytes(300), 'base64') || repeat(md5(g::text), 10) FROM generate_series(1, $ROWS_PER_TABLE) g; CREATE INDEX t${t}_n ON t$t (n);"
  done
  psql -X -q -d "$DB" -c "VACUUM ANALYZE"
  DBSIZE="$(psql -X -At -d "$DB" -c "SELECT pg_size_pretty(pg_database_size(current_database()))")"
  TOTAL_ROWS=$(( ROWS_PER_TABLE * PAR_TABLES ))
  {
    echo
    echo "| database | sink | jobs | layout | backup s | backup × 1 job | backup client CPU s/GiB | backup peak RSS MiB | restore s | restore speed-up over 1 job | restore client CPU s/GiB | restore peak RSS MiB | artifacts |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  } >>"$OUT"
  for sink in $PAR_SINKS; do
    case "$sink" in
      file) TO="file://$WORK/par"; S3ARGS="" ;;
      s3s)  TO="s3://bench/par"; S3ARGS="--s3-endpoint $S3S --s3-path-style" ;;
      *) echo "bench: unknown parallel sink $sink (file|s3s)" >&2; exit 1 ;;
    esac
    for j in $PARALLEL; do
      measure "par_backup_${sink}_$j" "'$DG' agent backup --engine postgres --uri postgresql://postgres@127.0.0.1:$PGPORT_/$DB --to $TO --run-id j$j --parallelism $j --parallel-min-bytes 0 --recipient $RECIPIENT $S3ARGS --termination-log $WORK/termination.log"
      measure "par_restore_${sink}_$j" "'$DG' agent restore --engine postgres --uri postgresql://postgres@127.0.0.1:$PGPORT_/${DB}_r$j --from $TO/j$j/manifest.json --identity-file '$WORK/identity.txt' --create-database --parallelism $j $S3ARGS --termination-log $WORK/termination.log"
      got="$(for t in $(seq -w 1 "$PAR_TABLES"); do psql -X -At -d "${DB}_r$j" -c "SELECT count(*) FROM t$t"; done | paste -sd+ | bc)"
      [ "$got" = "$TOTAL_ROWS" ] || { echo "bench: restored $got rows of $TOTAL_ROWS ($sink, $j jobs)" >&2; exit 1; }
      dropdb "${DB}_r$j"
      SUMMARY="$WORK/out.par_backup_${sink}_$j"
      ARTS="$(python3 -c "import json; print(len(json.loads(open('$SUMMARY').read().splitlines()[-1])['artifacts']))")"
      PRAW="$(python3 -c "import json; print(json.loads(open('$SUMMARY').read().splitlines()[-1])['rawBytes'])")"
      LAYOUT="single stream"; [ "$ARTS" -gt 1 ] && LAYOUT="parallel"
      first="${PARALLEL%% *}"
      printf '| %s, %s tables | %s | %s | %s | %.2f | %s | %.2f | %s | %.2f | %s× | %.2f | %s | %s |\n' "$DBSIZE" "$PAR_TABLES" "$sink" "$j" "$LAYOUT" \
        "${WALL[par_backup_${sink}_$j]}" "$(ratio "${WALL[par_backup_${sink}_$j]}" "${WALL[par_backup_${sink}_1]:-${WALL[par_backup_${sink}_$first]}}")×" \
        "$(echo "${CPU[par_backup_${sink}_$j]} * 1073741824 / $PRAW" | bc -l)" "$(mib "${RSS[par_backup_${sink}_$j]}")" \
        "${WALL[par_restore_${sink}_$j]}" "$(ratio "${WALL[par_restore_${sink}_1]:-${WALL[par_restore_${sink}_$first]}}" "${WALL[par_restore_${sink}_$j]}")" \
        "$(echo "${CPU[par_restore_${sink}_$j]} * 1073741824 / $PRAW" | bc -l)" "$(mib "${RSS[par_restore_${sink}_$j]}")" "$ARTS" >>"$OUT"
      rm -rf "$WORK/par/j$j" "$WORK/s3s/bench/par/j$j"
    done
  done
  echo "bench: parallel: $(for sink in $PAR_SINKS; do for j in $PARALLEL; do printf '%s, %s jobs: backup %.2f s, restore %.2f s; ' "$sink" "$j" "${WALL[par_backup_${sink}_$j]}" "${WALL[par_restore_${sink}_$j]}"; done; done)" >&2
  dropdb "$DB"
fi

# MariaDB: one database of MY_TABLES tables, MY_MIB MiB of rows in all, on a server of its own
# (loopback TCP, a password user), backed up to a local file and restored (staged, the default)
# with 1 (the single stream), 2 and 4 jobs.
if [ -n "$MARIADB" ]; then
  MYDIR="$WORK/mariadb"
  MY_PORT="$(free_port)"
  MY_SERVER="$(command -v mariadbd || echo /usr/sbin/mariadbd)"
  mkdir -p "$MYDIR/tmp" && chown -R mysql "$MYDIR"
  mariadb-install-db --no-defaults --datadir="$MYDIR/data" --user=mysql --auth-root-authentication-method=socket \
    --skip-test-db --skip-name-resolve >"$MYDIR/install.log" 2>&1
  "$MY_SERVER" --no-defaults --user=mysql --datadir="$MYDIR/data" --socket="$MYDIR/sock" --pid-file="$MYDIR/pid" \
    --tmpdir="$MYDIR/tmp" --bind-address=127.0.0.1 --port="$MY_PORT" --skip-name-resolve --skip-log-bin \
    --performance-schema=OFF --innodb-buffer-pool-size=512M --innodb-log-file-size=256M \
    --innodb-flush-log-at-trx-commit=2 --innodb-doublewrite=0 --character-set-server=utf8mb4 \
    >"$MYDIR/server.log" 2>&1 &
  MY_PID=$!
  for _ in $(seq 1 300); do mariadb --no-defaults --socket="$MYDIR/sock" -u root -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
  my() { mariadb --no-defaults --socket="$MYDIR/sock" -u root --batch --skip-column-names "$@"; }
  my -e "CREATE USER bench@'127.0.0.1' IDENTIFIED BY 'bench'; GRANT ALL ON *.* TO bench@'127.0.0.1'"
  # The agent refuses a password on its command line: it comes from DG_PASSWORD.
  MY_URI="mysql://bench@127.0.0.1:$MY_PORT"
  export DG_PASSWORD=bench
  MDB=bench_mariadb
  MY_ROWS=$(( MY_MIB * 1048576 / MY_TABLES / 760 ))
  echo "bench: generating MariaDB $MDB ($MY_TABLES tables of $MY_ROWS rows, ~$MY_MIB MiB)" >&2
  my -e "CREATE DATABASE $MDB"
  for t in $(seq -w 1 "$MY_TABLES"); do
    # Half random base64 (incompressible), half repeated hex: the dump compresses about 2x.
    my -D "$MDB" -e "CREATE TABLE t$t (id BIGINT PRIMARY KEY, n INT NOT NULL, body TEXT NOT NULL, KEY t${t}_n (n)) ENGINE=InnoDB; INSERT INTO t$t SELECT seq, seq % 1000, CONCAT(TO_BASE64(RANDOM_BYTES(300)), REPEAT(MD5(seq), 10)) FROM seq_1_to_$MY_ROWS;"
  done
  MY_SIZE="$(my -e "SELECT CONCAT(ROUND(SUM(data_length + index_length) / 1048576), ' MiB') FROM information_schema.tables WHERE table_schema = '$MDB'")"
  MY_TOTAL=$(( MY_ROWS * MY_TABLES ))
  MY_VERSION="$(my -e 'SELECT VERSION()')"
  {
    echo
    echo "| MariaDB database | jobs | layout | backup s | backup × 1 job | restore s | restore speed-up over 1 job | artifacts | raw dump MiB | backup peak RSS MiB | restore peak RSS MiB |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
  } >>"$OUT"
  for j in $MARIADB; do
    measure "my_backup_$j" "'$DG' agent backup --engine mysql --uri $MY_URI/$MDB --to file://$WORK/my --run-id j$j --parallelism $j --parallel-min-bytes 0 --recipient $RECIPIENT --termination-log $WORK/termination.log"
    measure "my_restore_$j" "'$DG' agent restore --engine mysql --uri $MY_URI/${MDB}_r$j --from file://$WORK/my/j$j/manifest.json --identity-file '$WORK/identity.txt' --create-database --parallelism $j --termination-log $WORK/termination.log"
    got="$(for t in $(seq -w 1 "$MY_TABLES"); do my -D "${MDB}_r$j" -e "SELECT COUNT(*) FROM t$t"; done | paste -sd+ | bc)"
    [ "$got" = "$MY_TOTAL" ] || { echo "bench: MariaDB restored $got rows of $MY_TOTAL ($j jobs)" >&2; exit 1; }
    my -e "DROP DATABASE ${MDB}_r$j"
    ARTS="$(python3 -c "import json; print(len(json.load(open('$WORK/my/j$j/manifest.json'))['artifacts']))")"
    VERSION="$(python3 -c "import json; print(json.load(open('$WORK/my/j$j/manifest.json'))['formatVersion'])")"
    RAW="$(python3 -c "import json; print(round(sum(a['rawBytes'] for a in json.load(open('$WORK/my/j$j/manifest.json'))['artifacts']) / 1048576))")"
    LAYOUT="single stream"; [ "$VERSION" = 3 ] && LAYOUT="parallel"
    printf '| %s, %s tables (%s) | %s | %s | %.2f | %s | %.2f | %s× | %s | %s | %s | %s |\n' "$MY_SIZE" "$MY_TABLES" "$MY_VERSION" "$j" "$LAYOUT" \
      "${WALL[my_backup_$j]}" "$(ratio "${WALL[my_backup_$j]}" "${WALL[my_backup_1]:-${WALL[my_backup_$j]}}")×" \
      "${WALL[my_restore_$j]}" "$(ratio "${WALL[my_restore_1]:-${WALL[my_restore_$j]}}" "${WALL[my_restore_$j]}")" "$ARTS" "$RAW" \
      "$(mib "${RSS[my_backup_$j]}")" "$(mib "${RSS[my_restore_$j]}")" >>"$OUT"
    rm -rf "$WORK/my/j$j"
  done
  echo "bench: MariaDB: $(for j in $MARIADB; do printf '%s jobs: backup %.2f s, restore %.2f s; ' "$j" "${WALL[my_backup_$j]}" "${WALL[my_restore_$j]}"; done)" >&2
fi

echo >&2
cat "$OUT"
