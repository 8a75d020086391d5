#!/usr/bin/env python3
"""Physical backups in `make bench`: the benchmark database's cluster backed up
with `postgres+bin://` and restored into a data directory, side by side with
the logical backup and restore of the same database, all through the real
`plakar`. Also the store bytes a second physical backup adds after a 1% change
of one table, and the plugin's peak memory on two cluster sizes.

Run by bench/run.sh after bench/bench.py, with the clusters, the plakar binary and
this package's .ptar in BENCH_* variables; writes bench/physical.md, which
run.sh appends to BENCHMARKS.md.
"""

import json
import os
import shutil
import sys
import time

from harness import PLAKAR, Env, du, med, psql, quiet, run, write_section

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = max(3, int(os.environ.get("BENCH_RUNS", "3")))
PASSWORD = os.environ["PGPASSWORD"]
PTAR = os.environ.get("BENCH_PTAR", "")
PLUGIN_COMMS = {"postgresql"}


def say(msg):
    print(f"[physical {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def mib(n):
    return f"{n / 1048576:.1f} MiB"


def fmt(xs):
    return f"{med(xs):.2f} s ({min(xs):.2f}–{max(xs):.2f})"


def timed(env, *args):
    """Wall seconds of one plakar command and the plugin's peak RSS (KiB) during it."""
    m = run(env.plakar(*args), env=env.env, plugin_comms=PLUGIN_COMMS)
    return m["wall"], m["plugin_rss_kib"] or 0


def main():
    port = int(os.environ["BENCH_PHYS_PORT"])
    small_port = int(os.environ["BENCH_CLUSTER_PORT"])
    db = os.environ["BENCH_PHYS_DB"]
    out_path = os.path.join(ROOT, "bench", "physical.md")
    if not PLAKAR:
        say("no plakar found: the physical figures need it")
        write_section(out_path, ["## Physical backups", "",
                                 "Not measured: no `plakar` binary was found ($PLAKAR, `plakar` "
                                 "on $PATH, $(go env GOPATH)/bin/plakar).", ""])
        return
    started = time.time()
    load_start = os.getloadavg()[0]
    cluster_bytes = int(psql(port, "postgres", "SELECT sum(pg_database_size(oid)) FROM pg_database"))
    db_bytes = int(psql(port, "postgres", f"SELECT pg_database_size('{db}')"))
    small_bytes = int(psql(small_port, "postgres", "SELECT sum(pg_database_size(oid)) FROM pg_database"))
    pk = Env("physical", PTAR)
    version = quiet(pk.plakar("version"), env=pk.env).strip()
    logical_uri = f"postgres://postgres:{PASSWORD}@127.0.0.1:{port}/{db}"
    physical_uri = f"postgres+bin://postgres:{PASSWORD}@127.0.0.1:{port}"
    pk.add("source", "logical", logical_uri)
    pk.add("source", "physical", physical_uri)
    pk.add("source", "small", f"postgres+bin://postgres:{PASSWORD}@127.0.0.1:{small_port}")

    times = {"logical backup": [], "physical backup": [], "logical restore": [], "physical restore": []}
    rss = {}
    for round_ in range(RUNS):
        say(f"run {round_ + 1} of {RUNS}: backups")
        for kind in ("logical", "physical"):
            store = os.path.join(pk.dir, f"{kind}-{round_}")
            quiet(pk.plakar("at", store, "create", "-plaintext"), env=pk.env)
            wall, peak = timed(pk, "at", store, "backup", f"@{kind}")
            times[f"{kind} backup"].append(wall)
            rss[f"{kind} backup"] = max(rss.get(f"{kind} backup", 0), peak)
        say(f"run {round_ + 1} of {RUNS}: restores")
        logical_store = os.path.join(pk.dir, f"logical-{round_}")
        snap = pk.snapshots(logical_store)[-1]
        psql(port, "postgres", "DROP DATABASE IF EXISTS bench_restored")
        pk.add("destination", f"ldst{round_}",
               f"postgres://postgres:{PASSWORD}@127.0.0.1:{port}/bench_restored", "create_db=true", "analyze=false")
        wall, peak = timed(pk, "at", logical_store, "restore", "-to", f"@ldst{round_}", snap)
        times["logical restore"].append(wall)
        rss["logical restore"] = max(rss.get("logical restore", 0), peak)
        psql(port, "postgres", "DROP DATABASE bench_restored")

        physical_store = os.path.join(pk.dir, f"physical-{round_}")
        snap = pk.snapshots(physical_store)[-1]
        target = os.path.join(pk.dir, f"restored-{round_}")
        pk.add("destination", f"pdst{round_}", f"postgres+bin://{target}")
        wall, peak = timed(pk, "at", physical_store, "restore", "-to", f"@pdst{round_}", snap)
        times["physical restore"].append(wall)
        rss["physical restore"] = max(rss.get("physical restore", 0), peak)
        shutil.rmtree(target)

    say("deduplication: a second physical backup after a 1% change of pgbench_accounts")
    store = os.path.join(pk.dir, "physical-0")
    first = du(store)
    accounts = int(psql(port, db, "SELECT count(*) FROM pgbench_accounts"))
    changed = accounts // 100
    psql(port, db, f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= {changed}")
    psql(port, "postgres", "CHECKPOINT")
    before = du(store)
    quiet(pk.plakar("at", store, "backup", "@physical"), env=pk.env)
    after_change = du(store)
    quiet(pk.plakar("at", store, "backup", "@physical"), env=pk.env)
    after_same = du(store)
    added_changed = after_change - before
    added_same = after_same - after_change

    say("memory on the small cluster")
    small_store = os.path.join(pk.dir, "small")
    quiet(pk.plakar("at", small_store, "create", "-plaintext"), env=pk.env)
    _, small_rss = timed(pk, "at", small_store, "backup", "@small")

    load = os.getloadavg()[0]
    lines = [
        "## Physical backups",
        "",
        f"Measured by `bench/physical.py` through the real plakar ({version}) on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, {RUNS} runs interleaved, "
        "medians with the range; times are wall seconds of the whole `plakar` command. "
        f"Load average (1 min): {load_start:.2f} at the start, {load:.2f} at the end.",
        "",
        f"The cluster holds the benchmark database `{db}` ({mib(db_bytes)}) among "
        f"{mib(cluster_bytes)} in all: the physical backup copies the whole cluster (its indexes "
        "and free space included), the logical one dumps the one database. Both sources have "
        "their defaults: the physical one takes the direct copy here (`copy=auto`, Plakar on the "
        "database host; the stream is measured beside it in the direct copy's section), with "
        "plakar's default `-cpu`.",
        "",
        "| | time | plugin peak RSS |",
        "|---|---|---|",
    ]
    for case in ("logical backup", "physical backup", "logical restore", "physical restore"):
        note = {
            "logical restore": " (`create_db=true analyze=false`)",
            "physical restore": " (files written, then `pg_verifybackup`)",
        }.get(case, "")
        lines.append(f"| {case}{note} | {fmt(times[case])} | {rss[case] / 1024:.1f} MiB |")
    ratio = med(times["logical restore"]) / med(times["physical restore"])
    lines += [
        "",
        f"The physical restore is {ratio:.2f}× as fast as the logical one here, verification "
        "included, and the restored cluster needs no ANALYZE nor index build: it starts with `pg_ctl`.",
        "",
        "Store bytes (`du` of the store):",
        "",
        "| | bytes | share of the first |",
        "|---|---|---|",
        f"| first physical backup | {mib(first)} | 100% |",
        f"| second, after updating 1% of `pgbench_accounts` ({changed} rows, a contiguous range) | "
        f"+{mib(added_changed)} | {100 * added_changed / first:.1f}% |",
        f"| third, nothing changed (what any snapshot costs: Plakar's own indexes, the new WAL "
        f"segment, backup_manifest) | +{mib(added_same)} | {100 * added_same / first:.1f}% |",
        "",
        f"Plugin peak RSS of a physical backup: {rss['physical backup'] / 1024:.1f} MiB for "
        f"{mib(cluster_bytes)}, {small_rss / 1024:.1f} MiB for {mib(small_bytes)}. What it holds "
        "does not grow with the data: a few 1 MiB chunks in flight towards Plakar per file read at "
        "once, and about a hundred bytes per file of the cluster (its plan; backup_manifest is "
        "written into a temporary file); see the direct copy's section for a cluster of many files.",
        "",
    ]
    write_section(out_path, lines)
    say(f"wrote {out_path}")
    json.dump({"times": times, "rss_kib": rss, "store": [first, added_changed, added_same]},
              sys.stderr)
    sys.stderr.write("\n")


if __name__ == "__main__":
    main()
