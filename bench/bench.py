#!/usr/bin/env python3
"""Measurements and report for `make bench`; started by bench/run.sh, which has
already started the clusters, generated the data and, when a `plakar` binary
was found, built this package and set up the Plakar environments (see the
environment below).

Writes BENCHMARKS.md and bench/scaling.png at the root of the tree.

Every case is what a user runs: `plakar backup @src` and `plakar restore -to
@dst` through the real plakar, against the hand-made pipe (`pg_dump | plakar
backup stdin://`, `plakar -quiet restore -to stdout:// | pg_restore`),
PostgreSQL's own tools, and the other PostgreSQL integration when its package
is given. examples/drive (the project's stand-in for Plakar) is used only for
what plakar cannot show: the plugin's own CPU time, read from /proc once it
has exited. Without plakar, drive stands in for it throughout, and the report
says so.
"""

import datetime
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time

from harness import LOG, PLAKAR, WORK, Env, du, loads, med, mib, note_load, psql, quiet, run, tail_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = int(os.environ["BENCH_PORT"])
CLUSTER_PORT = int(os.environ["BENCH_CLUSTER_PORT"])
SIZES = [int(s) for s in os.environ["BENCH_SIZES"].split()]
SCALE = int(os.environ["BENCH_SCALE"])
RUNS = int(os.environ["BENCH_RUNS"])
PG_BIN = os.environ["BENCH_PG_BIN"]
PTAR = os.environ.get("BENCH_PTAR", "")
PEER_PTAR = os.environ.get("BENCH_PEER_PTAR", "")
OWN_ADDR = os.environ.get("BENCH_OWN_ADDR", "")
BASELINE = os.environ.get("BENCH_BASELINE_BIN", "")
BASELINE_NAME = os.environ.get("BENCH_BASELINE", "")
PLUGIN = os.path.join(WORK, "postgresql")
DRIVE = os.path.join(WORK, "drive")
PASSWORD = os.environ["PGPASSWORD"]
GIB = float(1 << 30)

# The processes of each kind, by the name the kernel gives them (15 characters).
PLUGIN_COMMS = {"postgresql"}
PEER_COMMS = {"postgresqlImpor", "postgresqlExpor"}

def say(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- Running and sampling -------------------------------------------------


def rotated(cases, round_):
    """The cases of a round, in an order of their own: the first round in
    the listed order, each later one shuffled (seeded by the round, so a rerun
    measures in the same orders). A case then neither always runs at the same
    place nor always follows the same other one, so that what the previous
    case leaves behind (dirty pages, autovacuum) weighs on all alike; a plain
    rotation would keep every case's predecessor."""
    order = list(cases)
    if round_:
        random.Random(round_).shuffle(order)
    return order


def uri(port, db="", host="127.0.0.1"):
    return f"postgres://postgres:{PASSWORD}@{host}:{port}/{db}"


def fresh(db):
    quiet(["dropdb", "-p", str(PORT), "--if-exists", db])
    quiet(["createdb", "-p", str(PORT), db])


def settle():
    """Lets each restore start from a server with no dirty pages left by the
    previous one (not measured)."""
    psql(PORT, "postgres", "CHECKPOINT")
    os.sync()


def drop(db):
    quiet(["dropdb", "-p", str(PORT), "--if-exists", db])


def fmt(xs):
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{med(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})"


def check_restored(src, dst):
    q = ("SELECT (SELECT count(*) FROM pgbench_accounts) || '/' || (SELECT count(*) FROM documents)"
         " || '/' || (SELECT count(*) FROM events)")
    a, b = psql(PORT, src, q), psql(PORT, dst, q)
    if a != b:
        raise SystemExit(f"bench: {dst} does not match {src}: {b} != {a}")


# --- Plakar environments ----------------------------------------------------


def drop_store(path):
    shutil.rmtree(path, ignore_errors=True)


# --- drive, for the plugin's own CPU -----------------------------------------


def drive(plugin, *args):
    """Runs examples/drive; returns its JSON report."""
    cmd = [DRIVE, args[0], "--plugin", plugin, *args[1:]]
    with open(LOG, "ab") as log:
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log)
    report = None
    for line in p.stdout.decode().splitlines():
        if line.startswith("{"):
            report = json.loads(line)
    if p.returncode != 0 or report is None:
        sys.stderr.write(tail_log())
        raise SystemExit(f"bench: drive {' '.join(args)} failed: {report}")
    note_load()
    return report


def cpu_of(report):
    return (report.get("cpu_user_seconds") or 0.0) + (report.get("cpu_system_seconds") or 0.0)


def measure_cpu(db):
    """The plugin's own CPU seconds per GiB, backup and restore, through drive,
    for this build and (with BENCH_BASELINE) an older one, runs interleaved."""
    plugins = [("current", PLUGIN)] + ([("baseline", BASELINE)] if BASELINE else [])
    snap = os.path.join(WORK, f"drive_snap_{db}")
    shutil.rmtree(snap, ignore_errors=True)
    kept = drive(PLUGIN, "backup", "--out", snap, f"location={uri(PORT, db)}")
    dump_bytes = sum(kept["bytes"].values())
    r = {name: {"backup_cpu": [], "backup_wall": [], "backup_rss": [], "restore_cpu": [],
                "restore_wall": [], "restore_rss": []} for name, _ in plugins}
    target = f"cpu_{db}"
    for i in range(RUNS):
        for name, plugin in plugins:
            rep = drive(plugin, "backup", "--out", "/dev/null", f"location={uri(PORT, db)}")
            r[name]["backup_cpu"].append(cpu_of(rep) / (rep["total_bytes"] / GIB))
            r[name]["backup_wall"].append(rep["wall_seconds"])
            r[name]["backup_rss"].append(rep["peak_rss_kib"])
        for name, plugin in plugins:
            fresh(target)
            rep = drive(plugin, "restore", "--from", snap, f"location={uri(PORT, target)}", "analyze=false")
            r[name]["restore_cpu"].append(cpu_of(rep) / (dump_bytes / GIB))
            r[name]["restore_wall"].append(rep["wall_seconds"])
            r[name]["restore_rss"].append(rep["peak_rss_kib"])
            if i == 0:
                check_restored(db, target)
    drop(target)
    shutil.rmtree(snap, ignore_errors=True)
    return {"bytes": dump_bytes, **r}


# --- The cases ------------------------------------------------------------------


def measure_size(scale, full, ours, peer):
    """Backups and restores of one database, every peer interleaved."""
    db = f"bench_s{scale}"
    r = {"scale": scale, "db_bytes": int(psql(PORT, db, f"SELECT pg_database_size('{db}')"))}
    dump_file = os.path.join(WORK, f"{db}.dump")
    quiet(["pg_dump", "-p", str(PORT), "-Fc", "-Z0", "-f", dump_file, db])
    r["pg_dump_bytes"] = os.path.getsize(dump_file)
    say(f"{db}: {mib(r['db_bytes']):.0f} MiB on disk, {mib(r['pg_dump_bytes']):.0f} MiB dump; backups")

    ours.add("source", f"src_{db}", uri(PORT, db))
    if peer:
        peer.add("source", f"src_{db}", uri(PORT, db))
    cases = {k: [] for k in ("pg_dump", "pipe", "ours", "peer")}
    stores = {}
    order = [("pg_dump", None), ("pipe", ours), ("ours", ours), ("peer", peer)]
    for i in range(RUNS):
        last = i == RUNS - 1
        for key, env in rotated(order, i):
            if key == "pg_dump":
                cases["pg_dump"].append(run(["bash", "-c", f"pg_dump -p {PORT} -Fc -Z0 {db} > /dev/null"]))
                continue
            if env is None:
                continue
            store = env.new_store()
            if key == "pipe":
                m = run(f"set -o pipefail; pg_dump -p {PORT} -Fc -Z0 {db} | {PLAKAR} at {store} backup stdin:///{db}.dump",
                        env=env.env, shell=True)
            else:
                m = run(env.plakar("at", store, "backup", f"@src_{db}"), env=env.env,
                        plugin_comms=PLUGIN_COMMS if key == "ours" else PEER_COMMS)
            m["store_bytes"] = du(store)
            cases[key].append(m)
            if last:
                stores[key] = (env, store)
            else:
                drop_store(store)
    r["backup"] = cases

    if full:
        say(f"{db}: what a second backup adds, unchanged and after a local 1% change")
        second = {}
        for key, (env, store) in stores.items():
            second[key] = {"first": du(store)}
        for change in ("unchanged", "changed"):
            if change == "changed":
                rows = int(psql(PORT, db, "SELECT count(*) FROM pgbench_accounts"))
                psql(PORT, db, f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= {rows // 100}")
                psql(PORT, db, "CHECKPOINT")
            for key, (env, store) in stores.items():
                before = du(store)
                if key == "pipe":
                    run(f"set -o pipefail; pg_dump -p {PORT} -Fc -Z0 {db} | {PLAKAR} at {store} backup stdin:///{db}.dump",
                        env=env.env, shell=True)
                else:
                    run(env.plakar("at", store, "backup", f"@src_{db}"), env=env.env)
                second[key][change] = du(store) - before
        r["second"] = second

    say(f"{db}: restores (analyze=false)")
    target = f"restore_{db}"
    snaps = {key: env.snapshots(store)[-1] for key, (env, store) in stores.items()}
    ours.add("destination", f"dst_{db}", uri(PORT, target), "analyze=false")
    restore_cases = [("pg_restore", None), ("pipe", ours), ("ours", ours)]
    if peer:
        # The other integration applies its globals file unless told not to;
        # this package does not by default (restore_globals=false).
        peer.add("destination", f"dst_{db}", uri(PORT, target), "no_globals=true")
        restore_cases.append(("peer", peer))
    if full:
        ours.add("destination", f"dst_{db}_j2", uri(PORT, target), "analyze=false", "jobs=2")
        restore_cases += [("pg_restore_j2", None), ("ours_j2", ours)]
        if OWN_ADDR:
            ours.add("destination", f"dst_{db}_j2_remote", uri(PORT, target, OWN_ADDR), "analyze=false", "jobs=2")
            restore_cases.append(("ours_j2_remote", ours))
    res = {k: [] for k, _ in restore_cases}
    for i in range(RUNS):
        for key, env in rotated(restore_cases, i):
            fresh(target)
            settle()
            if key == "pg_restore":
                m = run(["pg_restore", "-p", str(PORT), "-d", target, dump_file])
            elif key == "pg_restore_j2":
                m = run(["pg_restore", "-p", str(PORT), "-j", "2", "-d", target, dump_file])
            elif key == "pipe":
                store = stores["pipe"][1]
                m = run(f"set -o pipefail; {PLAKAR} -quiet at {store} restore -to stdout:// {snaps['pipe']}:/{db}.dump"
                        f" | pg_restore -p {PORT} -d {target}", env=env.env, shell=True)
            else:
                store_key = "peer" if key == "peer" else "ours"
                dest = {"ours": f"dst_{db}", "peer": f"dst_{db}", "ours_j2": f"dst_{db}_j2",
                        "ours_j2_remote": f"dst_{db}_j2_remote"}[key]
                m = run(env.plakar("at", stores[store_key][1], "restore", "-to", f"@{dest}", snaps[store_key]),
                        env=env.env, plugin_comms=PEER_COMMS if key == "peer" else PLUGIN_COMMS)
            res[key].append(m)
            if len(res[key]) == 1:
                check_restored(db, target)
    r["restore"] = res
    drop(target)
    for env, store in stores.values():
        drop_store(store)
    os.remove(dump_file)
    return r


def measure_cluster(ours, peer):
    say("20-database cluster: pg_dumpall, split_databases=true, the other integration (plakar -cpu 2)")
    dbs = psql(CLUSTER_PORT, "postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'app_%'")
    size = int(psql(CLUSTER_PORT, "postgres", "SELECT sum(pg_database_size(datname)) FROM pg_database"))
    ours.add("source", "cluster_split", uri(CLUSTER_PORT), "split_databases=true")
    if peer:
        peer.add("source", "cluster_all", uri(CLUSTER_PORT))
    c = {"databases": int(dbs), "bytes": size, "pg_dumpall": [], "ours": [], "peer": []}
    order = [("pg_dumpall", None, None), ("ours", ours, "cluster_split"), ("peer", peer, "cluster_all")]
    for i in range(RUNS):
        for key, env, source in rotated(order, i):
            if key == "pg_dumpall":
                c["pg_dumpall"].append(run(["bash", "-c", f"pg_dumpall -p {CLUSTER_PORT} > /dev/null"]))
                continue
            if env is None:
                continue
            store = env.new_store()
            m = run(env.plakar("-cpu", "2", "at", store, "backup", f"@{source}"), env=env.env,
                    plugin_comms=PLUGIN_COMMS if key == "ours" else PEER_COMMS)
            m["files"] = len(quiet(env.plakar("at", store, "ls", f"{env.snapshots(store)[-1]}:/"),
                                   env=env.env).splitlines())
            c[key].append(m)
            drop_store(store)
    return c


# --- Without plakar: drive stands in ------------------------------------------


def measure_size_drive(scale, full):
    db = f"bench_s{scale}"
    r = {"scale": scale, "db_bytes": int(psql(PORT, db, f"SELECT pg_database_size('{db}')"))}
    dump_file = os.path.join(WORK, f"{db}.dump")
    quiet(["pg_dump", "-p", str(PORT), "-Fc", "-Z0", "-f", dump_file, db])
    r["pg_dump_bytes"] = os.path.getsize(dump_file)
    say(f"{db}: backups and restores through drive (no plakar)")
    snap = os.path.join(WORK, f"snap_{db}")
    drive(PLUGIN, "backup", "--out", snap, f"location={uri(PORT, db)}")
    back = {"pg_dump": [], "ours": []}
    for _ in range(RUNS):
        back["pg_dump"].append(run(["bash", "-c", f"pg_dump -p {PORT} -Fc -Z0 {db} > /dev/null"]))
        rep = drive(PLUGIN, "backup", "--out", "/dev/null", f"location={uri(PORT, db)}")
        back["ours"].append({"wall": rep["wall_seconds"], "plugin_rss_kib": rep["peak_rss_kib"]})
    r["backup"] = back
    target = f"restore_{db}"
    res = {"pg_restore": [], "ours": []}
    for i in range(RUNS):
        fresh(target)
        res["pg_restore"].append(run(["pg_restore", "-p", str(PORT), "-d", target, dump_file]))
        fresh(target)
        rep = drive(PLUGIN, "restore", "--from", snap, f"location={uri(PORT, target)}", "analyze=false")
        res["ours"].append({"wall": rep["wall_seconds"], "plugin_rss_kib": rep["peak_rss_kib"]})
        if i == 0:
            check_restored(db, target)
    r["restore"] = res
    drop(target)
    shutil.rmtree(snap, ignore_errors=True)
    os.remove(dump_file)
    return r


# --- Report -----------------------------------------------------------------------


def cmd_out(cmd):
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              check=True).stdout.decode().strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001 - only for the report
        return f"unknown ({e})"


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {"nproc": os.cpu_count(), "memory": f"{mem_kib / (1 << 20):.1f} GiB", "cpu": cpu,
            "kernel": platform.release()}


def versions():
    head = cmd_out(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--", "src", "examples"]).returncode
    v = {
        "PostgreSQL server": cmd_out([os.path.join(PG_BIN, "postgres"), "--version"]),
        "pg_dump": cmd_out(["pg_dump", "--version"]),
        "plakar": cmd_out([PLAKAR, "version"]) + f" ({PLAKAR})" if PLAKAR else "not found",
        "rustc": cmd_out(["rustc", "--version"]),
        "plugin": cmd_out([PLUGIN, "--version"])
        + f" (git {head}{', with local changes to src/' if dirty else ''})",
    }
    if PEER_PTAR:
        v["the other integration"] = os.path.basename(PEER_PTAR)
    if BASELINE:
        v["baseline plugin (CPU only)"] = BASELINE_NAME or BASELINE
    return v


def plot(results, have_plakar, have_peer):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [mib(r["db_bytes"]) for r in results]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    back = [("pg_dump", "pg_dump -Fc -Z0 > /dev/null", "tab:gray", ":")]
    rest = [("pg_restore", "pg_restore from a local file", "tab:gray", ":")]
    if have_plakar:
        back += [("pipe", "pg_dump | plakar backup stdin://", "tab:blue", "--")]
        rest += [("pipe", "plakar restore -to stdout:// | pg_restore", "tab:blue", "--")]
    back += [("ours", "this package" + ("" if have_plakar else " (drive)"), "tab:red", "-")]
    rest += [("ours", "this package" + ("" if have_plakar else " (drive)"), "tab:red", "-")]
    if have_peer:
        back += [("peer", "the other integration", "tab:green", "-.")]
        rest += [("peer", "the other integration", "tab:green", "-.")]
    for ax, series, what, title in ((a, back, "backup", "Backup"), (b, rest, "restore", "Restore (analyze=false)")):
        for key, label, color, style in series:
            ys = [med([m["wall"] for m in r[what][key]]) for r in results]
            ax.plot(xs, ys, style, marker="o", color=color, label=label)
        ax.set_xlabel("database size on disk (MiB)")
        ax.set_ylabel("wall time, median (s)")
        ax.set_title(title + (" through plakar" if have_plakar else ""))
        ax.grid(True, alpha=0.3)
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(ROOT, "bench", "scaling.png"), dpi=110)


def walls(ms):
    return [m["wall"] for m in ms]


def ratio(a, b):
    return med(walls(a)) / med(walls(b))


def peak(ms, key):
    vals = [m.get(key) for m in ms if m.get(key)]
    return f"{max(vals) / 1024:.1f} MiB" if vals else "–"


def verdict(ok):
    return "met" if ok else "**missed**"


def report(results, cluster, cpu, info, started, elapsed, load_start):
    full = results[-1]
    have_plakar = bool(PLAKAR)
    have_peer = have_plakar and bool(full["backup"].get("peer"))
    m, v = info["machine"], info["versions"]
    L = []
    add = L.append
    add("# Benchmarks\n")
    add("Produced by `make bench` (`bench/run.sh`, `bench/bench.py`), "
        f"on {started:%Y-%m-%d %H:%M} UTC, measuring for {elapsed / 60:.1f} minutes (after the data generation), "
        f"with `BENCH_SCALE={SCALE}` and `BENCH_RUNS={RUNS}`. Every time is the median of the runs, with the range "
        "(min–max) in brackets, in wall seconds; the peers of a case run one after the other in each round "
        "(interleaved), so that whatever else loads the machine weighs on all of them, in an order shuffled "
        "anew each round (seeded), so that no case always follows the same other; each restore starts after "
        "a `CHECKPOINT` and a `sync`, so that none pays for the dirty pages of the one before.\n")
    if have_plakar:
        add("Everything runs through the real `plakar` (the version below): `plakar at STORE backup @src` and "
            "`plakar at STORE restore -to @dst SNAP`, each backup into a new store, this package installed with "
            "`plakar pkg add` in a Plakar environment of its own (`XDG_CONFIG_HOME`, `XDG_CACHE_HOME`, "
            "`XDG_DATA_HOME`, `HOME`), default options. The peers: the hand-made pipe "
            "(`pg_dump -Fc -Z0 DB | plakar at STORE backup stdin:///DB.dump`, and "
            "`plakar -quiet at STORE restore -to stdout:// SNAP:/DB.dump | pg_restore -d NEWDB`), PostgreSQL's own "
            "tools, and " + ("the other PostgreSQL integration for Plakar (`" + os.path.basename(PEER_PTAR)
                             + "`, installed in a Plakar environment of its own since it claims the same `postgres` "
                             "protocol; its restores run with `no_globals=true`, as this package does not apply "
                             "`/globals.sql` by default)" if have_peer else
                             "not the other integration (no `BENCH_PEER_PTAR` given)") + ". "
            "Restores run with `analyze=false` (this package's default runs ANALYZE afterwards) into a new "
            "database each time. `examples/drive` (the project's stand-in for Plakar) is used only for the "
            "plugin's own CPU time, which it reads from /proc once the plugin has exited.\n")
    else:
        add("**No `plakar` was found** (`$PLAKAR`, `plakar` on `$PATH`, `$(go env GOPATH)/bin/plakar`): "
            "`examples/drive` stands in for it, and the hand-made pipe, the other integration and the store "
            "sizes are not measured.\n")
    add("## Machine\n")
    add("| | |\n|---|---|")
    add(f"| CPUs (nproc) | {m['nproc']} |")
    add(f"| Memory | {m['memory']} |")
    add(f"| CPU model | {m['cpu']} |")
    add(f"| Kernel | {m['kernel']} |")
    add(f"| Load average (1 min) | {load_start:.2f} at the start; {min(loads):.2f}–{max(loads):.2f} during the runs |")
    add("")
    add("**Noise.** The machine is shared: other test suites ran while this benchmark ran (the load average "
        "above, on 2 CPUs, says how much). The server, the client tools, Plakar and the plugin share the same "
        "CPUs, so differences of a few per cent between two figures are within the noise; the ranges show "
        "the spread.\n")
    add("## Versions\n")
    add("| | |\n|---|---|")
    for k, val in v.items():
        add(f"| {k} | {val} |")
    add("")
    add("The clusters are throw-away PostgreSQL 15 servers (scram-sha-256, `fsync=off`, `shared_buffers=256MB`, "
        "`maintenance_work_mem=256MB`) started by `bench/run.sh` and removed at the end. Each database is "
        "`pgbench -i -s N` (with foreign keys) plus three wide tables: `customers` (text, jsonb, unique index), "
        "`documents` (text, jsonb, bytea, three secondary indexes, foreign keys) and `events` (jsonb, two "
        "indexes, a foreign key).\n")
    add("| Database | pgbench scale | Size on disk | `pg_dump -Fc -Z0` |")
    add("|---|---|---|---|")
    for r in results:
        add(f"| bench_s{r['scale']} | {r['scale']} | {mib(r['db_bytes']):.0f} MiB | {mib(r['pg_dump_bytes']):.0f} MiB |")
    add("")

    b, rs = full["backup"], full["restore"]
    add(f"## Targets (bench_s{full['scale']}, {mib(full['db_bytes']):.0f} MiB on disk)\n")
    add("| Target | Figure | Status |")
    add("|---|---|---|")
    if have_plakar:
        x = ratio(b["ours"], b["pipe"])
        add(f"| backup at most 1.05× the hand-made pipe | {med(walls(b['ours'])):.2f} s against "
            f"{med(walls(b['pipe'])):.2f} s: {x:.3f}× | {verdict(x <= 1.05)} |")
        if have_peer:
            x = ratio(b["ours"], b["peer"])
            add(f"| backup faster than the other integration | {med(walls(b['ours'])):.2f} s against "
                f"{med(walls(b['peer'])):.2f} s: {x:.3f}× | {verdict(x < 1)} |")
        x = ratio(rs["ours"], rs["pg_restore"])
        add(f"| restore (default, `analyze=false`) at most 1.15× `pg_restore` from a local file | "
            f"{med(walls(rs['ours'])):.2f} s against {med(walls(rs['pg_restore'])):.2f} s: {x:.3f}× | {verdict(x <= 1.15)} |")
        x = ratio(rs["ours"], rs["pipe"])
        add(f"| restore faster than the pipe | {med(walls(rs['ours'])):.2f} s against {med(walls(rs['pipe'])):.2f} s: "
            f"{x:.3f}× | {verdict(x < 1)} |")
        if have_peer:
            x = ratio(rs["ours"], rs["peer"])
            add(f"| restore faster than the other integration | {med(walls(rs['ours'])):.2f} s against "
                f"{med(walls(rs['peer'])):.2f} s: {x:.3f}× | {verdict(x < 1)} |")
        x = ratio(rs["ours_j2"], rs["ours"])
        add(f"| restore with `jobs=2` never slower than the default | {med(walls(rs['ours_j2'])):.2f} s against "
            f"{med(walls(rs['ours'])):.2f} s: {x:.3f}×; the server is local and this machine has {m['nproc']} CPUs, "
            "so the plugin streams the dump exactly as without `jobs` | "
            f"{verdict(x <= 1.03)} (the same path: met when the median is within 3%) |")
        if have_peer:
            x = med(walls(cluster["peer"])) / med(walls(cluster["ours"]))
            add(f"| 20-database cluster, `split_databases=true`, `plakar -cpu 2`: at least 1.15× faster than the "
                f"other integration | {med(walls(cluster['ours'])):.2f} s against {med(walls(cluster['peer'])):.2f} s: "
                f"{x:.2f}× faster | {verdict(x >= 1.15)} |")
    rss = []
    for r in results:
        for case in ("backup", "restore"):
            for key, ms in r[case].items():
                if key.startswith("ours"):
                    rss += [mm["plugin_rss_kib"] for mm in ms if mm.get("plugin_rss_kib")]
    rss += [mm["plugin_rss_kib"] for mm in cluster.get("ours", []) if mm.get("plugin_rss_kib")]
    if rss:
        add(f"| plugin peak RSS under 40 MiB in every case | at most {max(rss) / 1024:.1f} MiB | {verdict(max(rss) < 40 * 1024)} |")
    if cpu and "baseline" in cpu:
        now, before = med(cpu["current"]["backup_cpu"]), med(cpu["baseline"]["backup_cpu"])
        add(f"| plugin CPU per GiB backed up halved | {now:.2f} s/GiB against {before:.2f} s/GiB for "
            f"{BASELINE_NAME or 'the baseline'}: {now / before:.2f}× | {verdict(now <= before / 2)} |")
    add("")

    if have_plakar:
        add(f"## Backup of one database (bench_s{full['scale']})\n")
        add("| Measurement | Time (s) | ratio to the pipe | plugin peak RSS | plakar peak RSS | store after the backup |")
        add("|---|---|---|---|---|---|")
        rows = [("PostgreSQL alone: `pg_dump -Fc -Z0 DB > /dev/null`", "pg_dump"),
                ("the pipe: `pg_dump -Fc -Z0 DB \\| plakar backup stdin:///DB.dump`", "pipe"),
                ("this package: `plakar backup @src`", "ours")]
        if have_peer:
            rows.append(("the other integration: `plakar backup @src`", "peer"))
        for label, key in rows:
            ms = b[key]
            store = f"{mib(med([mm['store_bytes'] for mm in ms])):.1f} MiB" if ms and "store_bytes" in ms[0] else ""
            add(f"| {label} | {fmt(walls(ms))} | {ratio(ms, b['pipe']):.3f} | {peak(ms, 'plugin_rss_kib') if key in ('ours', 'peer') else ''} "
                f"| {peak(ms, 'plakar_rss_kib') if key != 'pg_dump' else ''} | {store} |")
        add("")
        add("This package's backup also holds `/manifest.json` and `/globals.sql` (`pg_dumpall --globals-only`), "
            "and its time includes collecting them.\n")
        sec = full.get("second", {})
        if sec:
            add("### Store bytes\n")
            add("What the store holds after a first backup (`du -sb`), and what a second backup into the same store "
                "adds: right away with nothing changed (Plakar's own per-snapshot bytes), then after a local 1% "
                "change (`UPDATE` of the first 1% of `pgbench_accounts`' rows).\n")
            add("| | first backup | second, unchanged, adds | second, after the 1% change, adds |")
            add("|---|---|---|---|")
            names = {"pipe": "the pipe", "ours": "this package", "peer": "the other integration"}
            for key in ("pipe", "ours", "peer"):
                if key in sec:
                    s = sec[key]
                    add(f"| {names[key]} | {mib(s['first']):.1f} MiB | {mib(s['unchanged']):.2f} MiB "
                        f"| {mib(s['changed']):.2f} MiB ({s['changed'] / s['first']:.1%} of the first) |")
            add("")
        add(f"## Restore of one database (bench_s{full['scale']}, `analyze=false`)\n")
        add("| Measurement | Time (s) | ratio to `pg_restore` | ratio to the pipe | plugin peak RSS | plakar peak RSS |")
        add("|---|---|---|---|---|---|")
        rows = [("PostgreSQL alone: `pg_restore -d NEWDB` from a local file", "pg_restore"),
                ("the pipe: `plakar -quiet restore -to stdout:// \\| pg_restore -d NEWDB`", "pipe"),
                ("this package: `plakar restore -to @dst`", "ours")]
        if have_peer:
            rows.append(("the other integration: `plakar restore -to @dst`", "peer"))
        rows += [("PostgreSQL alone, parallel: `pg_restore -j 2 -d NEWDB` from a local file", "pg_restore_j2"),
                 ("this package, `jobs=2`, server on 127.0.0.1 (streamed: see below)", "ours_j2")]
        if "ours_j2_remote" in rs:
            rows.append((f"this package, `jobs=2`, server reached as {OWN_ADDR} (this machine's own address: "
                         "the plugin copies the dump, then `pg_restore -j 2`)", "ours_j2_remote"))
        for label, key in rows:
            ms = rs[key]
            add(f"| {label} | {fmt(walls(ms))} | {ratio(ms, rs['pg_restore']):.3f} | {ratio(ms, rs['pipe']):.3f} "
                f"| {peak(ms, 'plugin_rss_kib') if key.startswith(('ours', 'peer')) else ''} "
                f"| {peak(ms, 'plakar_rss_kib') if key not in ('pg_restore', 'pg_restore_j2') else ''} |")
        add("")
        add("Peak RSS is the process's VmHWM, sampled every 50 ms, the largest over the runs: of the plugin "
            "process (not its pg_dump or pg_restore), and of the `plakar` process.\n")

        if cluster:
            add(f"## Whole cluster: {cluster['databases']} small databases, `plakar -cpu 2`\n")
            add(f"{cluster['databases']} databases, each a copy of a scale-1 database built the same way; "
                f"{mib(cluster['bytes']):.0f} MiB on disk in all. This package with `split_databases=true` (one "
                "`/<db>.dump` per database, two dumps at once by default); the other integration with no database "
                "in the URI (one dump per database).\n")
            add("| Measurement | Time (s) | files | plugin peak RSS |")
            add("|---|---|---|---|")
            add(f"| `pg_dumpall > /dev/null` | {fmt(walls(cluster['pg_dumpall']))} | | |")
            add(f"| this package | {fmt(walls(cluster['ours']))} | {cluster['ours'][0]['files']} | {peak(cluster['ours'], 'plugin_rss_kib')} |")
            if have_peer:
                add(f"| the other integration | {fmt(walls(cluster['peer']))} | {cluster['peer'][0]['files']} | {peak(cluster['peer'], 'plugin_rss_kib')} |")
            add("")

    if have_plakar:
        add(f"## Ratios, pair by pair (bench_s{full['scale']})\n")
        add("Medians divided: the row's time over the column's; below 1, the row is faster.\n")
        names = {"pg_dump": "PostgreSQL alone", "pg_restore": "PostgreSQL alone", "pipe": "the pipe",
                 "ours": "this package", "peer": "the other integration"}
        for what, ms, alone in (("Backup", b, "pg_dump"), ("Restore", rs, "pg_restore")):
            keys = [alone, "pipe", "ours"] + (["peer"] if have_peer else [])
            add(f"| {what} | " + " | ".join(f"/ {names[k]}" for k in keys) + " |")
            add("|---|" + "---|" * len(keys))
            for row in keys[1:]:
                add(f"| {names[row]} | " + " | ".join(
                    "" if col == row else f"{ratio(ms[row], ms[col]):.3f}" for col in keys) + " |")
            add("")

    if cpu:
        add(f"## The plugin's own CPU (bench_s{full['scale']}, {mib(cpu['bytes']):.0f} MiB dump)\n")
        add("CPU seconds (user + system) of the plugin process itself, not its pg_dump or pg_restore, per GiB "
            "of dump moved, through `examples/drive` (which plays Plakar's part over the plugin's pipes and "
            "reads the figure from /proc once the plugin has exited; Plakar cannot show it). Backup into "
            "/dev/null; restore from files into a new database, `analyze=false`.\n")
        add("| Build | backup, CPU s/GiB | restore, CPU s/GiB | backup wall (s) | restore wall (s) | peak RSS backup / restore |")
        add("|---|---|---|---|---|---|")
        for name in ("baseline", "current"):
            if name in cpu:
                c = cpu[name]
                label = f"before this work ({BASELINE_NAME})" if name == "baseline" else "this build"
                add(f"| {label} | {fmt(c['backup_cpu'])} | {fmt(c['restore_cpu'])} | {fmt(c['backup_wall'])} "
                    f"| {fmt(c['restore_wall'])} | {max(c['backup_rss']) / 1024:.1f} / {max(c['restore_rss']) / 1024:.1f} MiB |")
        add("")
        if have_plakar:
            sampled = [mm["plugin_cpu_sampled"] / (full["pg_dump_bytes"] / GIB)
                       for mm in b["ours"] if mm.get("plugin_cpu_sampled")]
            if sampled:
                add(f"Under `plakar backup` (sampled from /proc every 50 ms, so it may miss the last "
                    f"milliseconds): {fmt(sampled)} s/GiB.\n")

    add("## Scaling\n")
    add("![Backup and restore time against database size](bench/scaling.png)\n")
    cols = ["pg_dump", "pipe", "ours", "peer"] if have_plakar else ["pg_dump", "ours"]
    rcols = ["pg_restore", "pipe", "ours", "peer"] if have_plakar else ["pg_restore", "ours"]
    cols = [c for c in cols if c != "peer" or have_peer]
    rcols = [c for c in rcols if c != "peer" or have_peer]
    names = {"pg_dump": "`pg_dump`", "pg_restore": "`pg_restore`", "pipe": "pipe", "ours": "this package",
             "peer": "other integration"}
    add("| Database | Size | " + " | ".join(f"backup: {names[c]}" for c in cols) + " | "
        + " | ".join(f"restore: {names[c]}" for c in rcols) + " |")
    add("|---|---|" + "---|" * (len(cols) + len(rcols)))
    for r in results:
        add(f"| bench_s{r['scale']} | {mib(r['db_bytes']):.0f} MiB | "
            + " | ".join(f"{med(walls(r['backup'][c])):.2f}" for c in cols) + " | "
            + " | ".join(f"{med(walls(r['restore'][c])):.2f}" for c in rcols) + " |")
    add("")
    with open(os.path.join(ROOT, "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(L))
    with open(os.path.join(WORK, "..", f"plakar-bench-{started:%Y%m%d%H%M%S}.json"), "w") as f:
        json.dump({"results": results, "cluster": cluster, "cpu": cpu, "info": info, "loads": loads}, f, indent=1)


def main():
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    info = {"machine": machine(), "versions": versions()}
    if PLAKAR:
        ours = Env("ours", PTAR)
        peer = Env("peer", PEER_PTAR) if PEER_PTAR else None
        results = [measure_size(s, s == max(SIZES), ours, peer) for s in sorted(SIZES)]
        cluster = measure_cluster(ours, peer)
    else:
        results = [measure_size_drive(s, s == max(SIZES)) for s in sorted(SIZES)]
        cluster = {}
    say("the plugin's own CPU, through drive")
    cpu = measure_cpu(f"bench_s{max(SIZES)}")
    plot(results, bool(PLAKAR), bool(PLAKAR and PEER_PTAR))
    report(results, cluster, cpu, info, started, time.perf_counter() - t0, load_start)


if __name__ == "__main__":
    main()
