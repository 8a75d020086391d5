#!/usr/bin/env python3
"""Physical backups in `make bench`: the benchmark database's cluster backed up
with `postgres+bin://` and restored into a data directory, side by side with
the logical backup and restore of the same database, all through the real
`plakar`. Also the store bytes a second physical backup adds after a 1% change
of one table, and the plugin's peak memory on two cluster sizes.

Run by bench/run.sh, which starts the clusters and passes them in BENCH_*
variables; writes bench/physical.md, which run.sh appends to BENCHMARKS.md.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = max(3, int(os.environ.get("BENCH_RUNS", "3")))
PASSWORD = "bench"
PG_BIN = os.environ["BENCH_PG_BIN"]


def say(msg):
    print(f"[physical {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def find_plakar():
    """As the tests find it: $PLAKAR, `plakar` on PATH, $(go env GOPATH)/bin/plakar."""
    if os.environ.get("PLAKAR"):
        return os.environ["PLAKAR"]
    found = shutil.which("plakar")
    if found:
        return found
    try:
        gopath = subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
    path = os.path.join(gopath, "bin", "plakar")
    return path if os.access(path, os.X_OK) else None


class Plakar:
    """One throw-away Plakar environment with this package installed."""

    def __init__(self, binary, ptar, work):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="plakar-env-", dir=work)
        self.env = {
            "PATH": os.environ["PATH"],
            "LANG": "C.UTF-8",
            "HOME": self.dir,
            "XDG_CONFIG_HOME": os.path.join(self.dir, "config"),
            "XDG_CACHE_HOME": os.path.join(self.dir, "cache"),
            "XDG_DATA_HOME": os.path.join(self.dir, "data"),
        }
        self.run("-disable-security-check")
        self.run("pkg", "add", ptar)

    def run(self, *args, check=True):
        out = subprocess.run([self.binary, *args], env=self.env, cwd=self.dir,
                             stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if check and out.returncode != 0:
            raise SystemExit(f"plakar {' '.join(args)} failed:\n{out.stdout}{out.stderr}")
        return out

    def timed(self, *args):
        """Wall seconds of one plakar command and the plugin's peak RSS (KiB) during it."""
        watcher = PeakRss()
        watcher.start()
        start = time.monotonic()
        self.run(*args)
        wall = time.monotonic() - start
        return wall, watcher.stop()


class PeakRss(threading.Thread):
    """Polls the plugin processes' VmHWM (their own peak RSS) while a command runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        argv = f.read().split(b"\0")
                    if not argv[0].endswith(b"/postgresql") or len(argv) < 2:
                        continue
                    with open(f"/proc/{pid}/status") as f:
                        for line in f:
                            if line.startswith("VmHWM:"):
                                self.peak = max(self.peak, int(line.split()[1]))
                except OSError:
                    continue
            time.sleep(0.05)

    def stop(self):
        self.done.set()
        self.join()
        return self.peak


def psql(port, db, sql):
    out = subprocess.run([os.path.join(PG_BIN, "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                          "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", db, "-c", sql],
                         env={**os.environ, "PGPASSWORD": PASSWORD}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def du(path):
    total = 0
    for base, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(base, name)).st_size
            except OSError:
                pass
    return total


def mib(n):
    return f"{n / 1048576:.1f} MiB"


def med(xs):
    return statistics.median(xs)


def fmt(xs):
    return f"{med(xs):.2f} s ({min(xs):.2f}–{max(xs):.2f})"


def main():
    work = os.environ["BENCH_WORK"]
    port = int(os.environ["BENCH_PHYS_PORT"])
    small_port = int(os.environ["BENCH_CLUSTER_PORT"])
    db = os.environ["BENCH_PHYS_DB"]
    out_path = os.path.join(ROOT, "bench", "physical.md")
    binary = find_plakar()
    if binary is None:
        say("no plakar found: the physical figures need it")
        with open(out_path, "w") as f:
            f.write("## Physical backups\n\nNot measured: no `plakar` binary was found "
                    "($PLAKAR, `plakar` on $PATH, $(go env GOPATH)/bin/plakar).\n")
        return
    say("packaging the plugin")
    subprocess.run(["make", "-s", "package", f"PLAKAR={binary}"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL,
                   env={**os.environ, "XDG_CONFIG_HOME": os.path.join(work, "pkgcfg"),
                        "XDG_CACHE_HOME": os.path.join(work, "pkgcache"),
                        "XDG_DATA_HOME": os.path.join(work, "pkgdata")})
    ptar = next(os.path.join(ROOT, f) for f in os.listdir(ROOT)
                if f.startswith("postgresql_v") and f.endswith(".ptar"))

    started = time.time()
    load_start = os.getloadavg()[0]
    cluster_bytes = int(psql(port, "postgres", "SELECT sum(pg_database_size(oid)) FROM pg_database"))
    db_bytes = int(psql(port, "postgres", f"SELECT pg_database_size('{db}')"))
    small_bytes = int(psql(small_port, "postgres", "SELECT sum(pg_database_size(oid)) FROM pg_database"))
    pk = Plakar(binary, ptar, work)
    version = pk.run("version").stdout.strip()
    logical_uri = f"postgres://postgres:{PASSWORD}@127.0.0.1:{port}/{db}"
    physical_uri = f"postgres+bin://postgres:{PASSWORD}@127.0.0.1:{port}"
    pk.run("source", "add", "logical", logical_uri)
    pk.run("source", "add", "physical", physical_uri)
    pk.run("source", "add", "small", f"postgres+bin://postgres:{PASSWORD}@127.0.0.1:{small_port}")

    times = {"logical backup": [], "physical backup": [], "logical restore": [], "physical restore": []}
    rss = {}
    for run in range(RUNS):
        say(f"run {run + 1} of {RUNS}: backups")
        for kind in ("logical", "physical"):
            store = os.path.join(pk.dir, f"{kind}-{run}")
            pk.run("at", store, "create", "-plaintext")
            wall, peak = pk.timed("at", store, "backup", f"@{kind}")
            times[f"{kind} backup"].append(wall)
            rss[f"{kind} backup"] = max(rss.get(f"{kind} backup", 0), peak)
        say(f"run {run + 1} of {RUNS}: restores")
        logical_store = os.path.join(pk.dir, f"logical-{run}")
        snap = pk.run("at", logical_store, "ls").stdout.split()[1]
        psql(port, "postgres", "DROP DATABASE IF EXISTS bench_restored")
        pk.run("destination", "add", f"ldst{run}",
               f"postgres://postgres:{PASSWORD}@127.0.0.1:{port}/bench_restored", "create_db=true", "analyze=false")
        wall, peak = pk.timed("at", logical_store, "restore", "-to", f"@ldst{run}", snap)
        times["logical restore"].append(wall)
        rss["logical restore"] = max(rss.get("logical restore", 0), peak)
        psql(port, "postgres", "DROP DATABASE bench_restored")

        physical_store = os.path.join(pk.dir, f"physical-{run}")
        snap = pk.run("at", physical_store, "ls").stdout.split()[1]
        target = os.path.join(pk.dir, f"restored-{run}")
        pk.run("destination", "add", f"pdst{run}", f"postgres+bin://{target}")
        wall, peak = pk.timed("at", physical_store, "restore", "-to", f"@pdst{run}", snap)
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
    pk.run("at", store, "backup", "@physical")
    after_change = du(store)
    pk.run("at", store, "backup", "@physical")
    after_same = du(store)
    added_changed = after_change - before
    added_same = after_same - after_change

    say("memory on the small cluster")
    small_store = os.path.join(pk.dir, "small")
    pk.run("at", small_store, "create", "-plaintext")
    _, small_rss = pk.timed("at", small_store, "backup", "@small")

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
        "and free space included), the logical one dumps the one database.",
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
        f"{mib(cluster_bytes)}, {small_rss / 1024:.1f} MiB for {mib(small_bytes)}. What it holds is "
        "bounded whatever the cluster's size: a few 1 MiB chunks in flight towards Plakar, and "
        "PostgreSQL's backup_manifest (about 100 bytes per file).",
        "",
    ]
    with open(out_path, "w") as f:
        f.write("\n".join(lines))
    say(f"wrote {out_path}")
    json.dump({"times": times, "rss_kib": rss, "store": [first, added_changed, added_same]},
              sys.stderr)


if __name__ == "__main__":
    main()
