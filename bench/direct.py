#!/usr/bin/env python3
"""The direct copy in `make bench`: physical backups read from the data
directory itself (`copy=direct`), through the real `plakar`, side by side in
one run with pgBackRest (Debian's package, lz4, `process-max` equal to
Plakar's `-cpu`), with `plakar backup` of the same files as a plain directory
(Plakar's own filesystem importer, what Plakar itself costs) and with the
pg_basebackup stream (`copy=stream`).

On a cluster of its own, `pgbench -i --partitions=8` (the data spread over
several files), archived by pgBackRest (`archive_command`), so that its
backups are the ones a DBA would take:

1. full backups with `-cpu 1` and `-cpu 2` (pgBackRest `--type=full` with
   `process-max` 1 and 2), wall time, CPU of the whole command, of which the
   plugin's, and the plugin's peak RSS;
2. a second backup after one partition of pgbench_accounts changed, against
   pgBackRest `--type=incr`; a third with nothing changed;
3. restores into an empty directory with the same cores;
4. the plugin's peak RSS on a cluster of tens of thousands of files.

Run by bench/run.sh (or alone with BENCH_ONLY=direct); writes
bench/direct.md, which run.sh puts into BENCHMARKS.md.
"""

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time

from harness import (
    LOG, PLAKAR, WORK, Env, as_server, du, fmt, free_port, give_to_server, med, psql, quiet,
    run, write_section)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = max(3, int(os.environ.get("BENCH_RUNS", "3")))
PASSWORD = os.environ["PGPASSWORD"]
PTAR = os.environ.get("BENCH_PTAR", "")
PG_BIN = os.environ.get("BENCH_PG_BIN", "/usr/lib/postgresql/15/bin")
SCALE = int(os.environ.get("BENCH_DIRECT_SCALE", os.environ.get("BENCH_PHYS_SCALE", "65")))
MANY_TABLES = int(os.environ.get("BENCH_DIRECT_TABLES", "20000"))
PLUGIN_COMMS = {"postgresql"}
CPUS = (1, 2)


def say(msg):
    print(f"[direct {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Cluster:
    """A throw-away PostgreSQL 15 cluster archived by pgBackRest."""

    def __init__(self, name):
        self.home = os.path.join(WORK, name)
        os.makedirs(self.home, exist_ok=True)
        with open(os.path.join(self.home, "pw"), "w") as f:
            f.write(PASSWORD)
        self.data = os.path.join(self.home, "data")
        self.conf = os.path.join(self.home, "pgbackrest.conf")
        self.repo = os.path.join(self.home, "repo")
        os.makedirs(os.path.join(self.home, "pgbackrest-log"), exist_ok=True)
        os.makedirs(self.repo, exist_ok=True)
        give_to_server(self.home)
        subprocess.run(as_server(f"{PG_BIN}/initdb", "-D", self.data, "-U", "postgres",
                                 "--auth=scram-sha-256", "--encoding=UTF8",
                                 "--locale=C.UTF-8", "--no-sync", f"--pwfile={self.home}/pw"),
                       check=True, stdout=subprocess.DEVNULL)
        self.port = free_port()
        with open(self.conf, "w") as f:
            f.write(f"[global]\nrepo1-path={self.repo}\nrepo1-retention-full=1000\n"
                    "compress-type=lz4\nstart-fast=y\nlog-level-console=warn\n"
                    f"log-level-file=off\nlog-path={self.home}/pgbackrest-log\n"
                    f"lock-path={self.home}/pgbackrest-log\n"
                    f"[bench]\npg1-path={self.data}\npg1-port={self.port}\n"
                    f"pg1-socket-path={self.home}\npg1-user=postgres\n")
        # The same settings as the benchmark's other clusters (bench/run.sh),
        # and the archiving pgBackRest's backups rely on.
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.home}'\nfsync = off\n"
                    "synchronous_commit = off\nfull_page_writes = off\nmax_connections = 50\n"
                    "shared_buffers = 256MB\nmaintenance_work_mem = 256MB\nmax_wal_size = 8GB\n"
                    "checkpoint_timeout = 30min\narchive_mode = on\n"
                    f"archive_command = 'pgbackrest --config={self.conf} --stanza=bench archive-push %p'\n")
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all postgres peer\nhost all all 127.0.0.1/32 scram-sha-256\n"
                    "host replication all 127.0.0.1/32 scram-sha-256\n")
        give_to_server(self.home)
        subprocess.run(as_server(f"{PG_BIN}/pg_ctl", "-D", self.data, "-l",
                                 f"{self.home}/log", "-w", "start"),
                       check=True, stdout=subprocess.DEVNULL)
        self.pgbackrest("stanza-create")

    def pgbackrest(self, *args):
        return quiet(as_server("pgbackrest", f"--config={self.conf}", "--stanza=bench", *args))

    def pgbackrest_cmd(self, *args):
        return as_server("pgbackrest", f"--config={self.conf}", "--stanza=bench", *args)

    def labels(self):
        info = json.loads(self.pgbackrest("info", "--output=json"))
        return [b["label"] for b in info[0]["backup"]]

    def stop(self):
        subprocess.run(as_server(f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", "immediate",
                                 "-w", "stop"), check=False, stdout=subprocess.DEVNULL)


def measured(cmd, env=None):
    """Wall seconds, CPU seconds of the whole command, the plugin's CPU and
    peak RSS (MiB). A plakar command's CPU is plakar's and the plugin's, as
    sampled from /proc (plakar does not always wait for its plugin, so the
    plugin may be missing from its resource usage); pgBackRest's is that of
    its processes, which it waits for."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = run(cmd, env=env, plugin_comms=PLUGIN_COMMS)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    plugin = m["plugin_cpu_sampled"] or 0.0
    if m["plakar_cpu_sampled"] is not None:
        cpu = m["plakar_cpu_sampled"] + plugin
    else:
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": m["wall"], "cpu": cpu, "plugin_cpu": plugin,
            "plugin_rss": (m["plugin_rss_kib"] or 0) / 1024}


def last_summary():
    """The plugin's own account of its last direct copy, from the log."""
    with open(LOG, errors="replace") as f:
        lines = [l for l in f if "direct copy: Plakar read" in l]
    if not lines:
        return None
    m = re.search(r"read (\d+) files \((\d+) MiB\) and stored (\d+) unchanged", lines[-1])
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def plain_copy(data, into):
    """The files a direct copy reads, as a plain directory: the data
    directory without what PostgreSQL's backups leave out (pg_wal's segments,
    postmaster.pid, the contents of the temporary directories)."""
    emptied = {"pg_wal", "pg_stat_tmp", "pg_replslot", "pg_dynshmem", "pg_notify",
               "pg_serial", "pg_snapshots", "pg_subtrans"}

    def ignore(directory, names):
        if os.path.basename(directory) in emptied and os.path.dirname(directory) == data:
            return [n for n in names if not os.path.isdir(os.path.join(directory, n))]
        if directory == data:
            return [n for n in names if n in ("postmaster.pid", "postmaster.opts")]
        return []

    shutil.copytree(data, into, symlinks=True, ignore=ignore)


def main():
    out_path = os.path.join(ROOT, "bench", "direct.md")
    if not PLAKAR:
        write_section(out_path, ["## Direct copy", "",
                                 "Not measured: no `plakar` binary was found.", ""])
        return
    if not shutil.which("pgbackrest"):
        raise SystemExit("bench: pgbackrest is not installed (`make setup` installs it)")
    started = time.time()
    say(f"a cluster of pgbench -i -s {SCALE} --partitions=8, archived by pgBackRest")
    c = Cluster("direct")
    try:
        report(c, out_path, started)
    finally:
        c.stop()


def report(c, out_path, started):
    subprocess.run(["pgbench", "-p", str(c.port), "-i", "-q", "-s", str(SCALE), "--partitions=8",
                    "postgres"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    psql(c.port, "postgres", "VACUUM ANALYZE")
    psql(c.port, "postgres", "CHECKPOINT")
    db_bytes = int(psql(c.port, "postgres", "SELECT sum(pg_database_size(oid)) FROM pg_database"))
    files = sum(len(fs) for _, _, fs in os.walk(os.path.join(c.data, "base")))
    pgbackrest_version = quiet(["pgbackrest", "version"]).strip()
    # pgBackRest's backups need the archive working: check it once.
    c.pgbackrest("check")

    pk = Env("direct", PTAR)
    version = quiet([PLAKAR, "version"], env=pk.env).strip()
    uri = f"postgres+bin://postgres:{PASSWORD}@127.0.0.1:{c.port}"
    pk.add("source", "direct", uri, "copy=direct")
    pk.add("source", "stream", uri, "copy=stream")
    plain = os.path.join(WORK, "direct-plain")
    plain_copy(c.data, plain)
    plain_bytes = du(plain)

    def plakar(cpu, *args):
        return [PLAKAR, "-cpu", str(cpu), *args]

    full = {(k, n): [] for k in ("direct", "plain", "stream", "pgbackrest") for n in CPUS}
    second = {"direct": [], "pgbackrest": []}
    unchanged, unchanged_read = [], []
    second_read = []
    restore = {(k, n): [] for k in ("direct", "pgbackrest") for n in CPUS}
    stored = {"direct": [], "pgbackrest": []}
    rss = []
    partition_bytes = 0
    for r in range(RUNS):
        say(f"round {r + 1} of {RUNS}: full backups, -cpu and process-max 1 and 2")
        stores = {}
        for n in CPUS:
            for kind in ("direct", "plain", "stream"):
                store = pk.new_store()
                source = plain if kind == "plain" else f"@{kind}"
                os.sync()
                m = measured(plakar(n, "at", store, "backup", "-no-progress", source), env=pk.env)
                full[(kind, n)].append(m)
                if kind == "direct":
                    rss.append(m["plugin_rss"])
                    stores[n] = store
                    if n == CPUS[-1]:
                        stored["direct"].append(du(store))
                else:
                    shutil.rmtree(store)
            os.sync()
            m = measured(c.pgbackrest_cmd("backup", "--type=full", f"--process-max={n}"))
            full[("pgbackrest", n)].append(m)
        label_full = c.labels()[-1]
        stored["pgbackrest"].append(
            du(os.path.join(c.repo, "backup", "bench", label_full)))

        n = CPUS[-1]
        say(f"round {r + 1} of {RUNS}: nothing changed, a second backup")
        # The last change is a minute old or more (the data's load, the
        # previous round's UPDATE): nothing is inside the margin.
        os.sync()
        m = measured(plakar(n, "at", stores[n], "backup", "-no-progress", "@direct"), env=pk.env)
        unchanged.append(m)
        unchanged_read.append(last_summary())
        say(f"  read, MiB, carried: {unchanged_read[-1]}")

        say(f"round {r + 1} of {RUNS}: one partition changed, a third backup")
        partition = 1 + r % 8
        partition_bytes = int(psql(c.port, "postgres",
                                   f"SELECT pg_total_relation_size('pgbench_accounts_{partition}')"))
        psql(c.port, "postgres",
             f"UPDATE pgbench_accounts_{partition} SET abalance = abalance + 1")
        # What autovacuum (and autoanalyze) would do a minute later, inside the next round's
        # "nothing changed" (on 2026-12-06 it rewrote the partition there).
        psql(c.port, "postgres", f"VACUUM ANALYZE pgbench_accounts_{partition}")
        psql(c.port, "postgres", "CHECKPOINT")
        os.sync()
        m = measured(plakar(n, "at", stores[n], "backup", "-no-progress", "@direct"), env=pk.env)
        second["direct"].append(m)
        second_read.append(last_summary())
        say(f"  read, MiB, carried: {second_read[-1]}")
        os.sync()
        m = measured(c.pgbackrest_cmd("backup", "--type=incr", f"--process-max={n}"))
        second["pgbackrest"].append(m)

        say(f"round {r + 1} of {RUNS}: restores of the full backups")
        for n in CPUS:
            snap = pk.snapshots(stores[n])[-1]
            target = os.path.join(WORK, f"restored-{r}-{n}")
            pk.add("destination", f"dst{r}{n}", f"postgres+bin://{target}")
            os.sync()
            m = measured(plakar(n, "at", stores[n], "restore", "-to", f"@dst{r}{n}", snap),
                         env=pk.env)
            restore[("direct", n)].append(m)
            shutil.rmtree(target)
            target = os.path.join(WORK, f"restored-pgbackrest-{r}-{n}")
            os.makedirs(target, mode=0o700)
            give_to_server(target)
            os.sync()
            m = measured(c.pgbackrest_cmd("restore", f"--pg1-path={target}",
                                          f"--set={label_full}", f"--process-max={n}"))
            restore[("pgbackrest", n)].append(m)
            shutil.rmtree(target)
        for n in CPUS:
            shutil.rmtree(stores[n])

    say(f"memory: a database of {MANY_TABLES} tables")
    psql(c.port, "postgres", "CREATE DATABASE many")
    # A thousand tables a transaction: one transaction of them all would
    # outgrow max_locks_per_transaction.
    for first in range(1, MANY_TABLES + 1, 1000):
        last = min(first + 999, MANY_TABLES)
        psql(c.port, "many",
             f"DO $$ BEGIN FOR i IN {first}..{last} LOOP "
             "EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, v text)', i); END LOOP; END $$")
    psql(c.port, "postgres", "CHECKPOINT")
    many_files = sum(len(fs) for _, _, fs in os.walk(os.path.join(c.data, "base")))
    store = pk.new_store()
    many = measured(plakar(CPUS[-1], "at", store, "backup", "-no-progress", "@direct"), env=pk.env)
    # And the next backup, which carries them and lists the checksums kept.
    time.sleep(3)
    many_next = measured(plakar(CPUS[-1], "at", store, "backup", "-no-progress", "@direct"),
                         env=pk.env)
    many["next_wall"] = many_next["wall"]
    many["next_rss"] = many_next["plugin_rss"]
    shutil.rmtree(store)

    write(out_path, started, version, pgbackrest_version, db_bytes, files, plain_bytes,
          partition_bytes, full, second, second_read, unchanged, unchanged_read, restore,
          stored, rss, many, many_files)


def write(out_path, started, version, pgbackrest_version, db_bytes, files, plain_bytes,
          partition_bytes, full, second, second_read, unchanged, unchanged_read, restore,
          stored, rss, many, many_files):
    def walls(ms):
        return [m["wall"] for m in ms]

    def cpu(ms):
        return f"{med([m['cpu'] for m in ms]):.2f} s"

    def plugin(ms):
        return f"{med([m['plugin_cpu'] for m in ms]):.2f} s"

    def paired(a, b):
        """Each round's ratio of a to b (their runs follow one another, so
        a slow stretch of the shared machine weighs on both), the median
        and the range."""
        rs = [x["wall"] / y["wall"] for x, y in zip(a, b)]
        return f"{med(rs):.2f}× ({min(rs):.2f}–{max(rs):.2f})"

    lo, hi = CPUS
    w = {k: med(walls(v)) for k, v in full.items()}
    names = {
        "direct": "this package, `copy=direct`",
        "plain": "Plakar's filesystem importer, the same files as a plain directory",
        "stream": "this package, `copy=stream` (pg_basebackup's stream)",
        "pgbackrest": "pgBackRest `--type=full`, lz4",
    }
    lines = [
        "## Direct copy",
        "",
        f"Measured by `bench/direct.py` through the real plakar ({version}) and {pgbackrest_version} "
        f"(Debian's package) on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
        f"{RUNS} rounds; medians with the range, wall seconds of the whole command. Plakar's "
        f"`-cpu` and pgBackRest's `process-max` are given in each row; the machine has "
        f"{os.cpu_count()} CPUs. The cluster: `pgbench -i -s {SCALE} --partitions=8` "
        f"({db_bytes / 1048576:.0f} MiB in all, {files} files under base/), archived by pgBackRest "
        "(`archive_command`), the other settings as the benchmark's clusters. Each full backup "
        "goes into a new store (pgBackRest: a new full backup in its repository); the page cache "
        "holds the cluster throughout and every command starts after a `sync`. CPU is that of "
        "the whole command (plakar and the plugin, sampled from /proc every 50 ms; pgBackRest's "
        "processes), the plugin's share beside it.",
        "",
        "### Full backup",
        "",
        f"| | `-cpu`/`process-max` {lo} | CPU | of which the plugin | `-cpu`/`process-max` {hi} | CPU | of which the plugin | speed-up {lo} → {hi} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind in ("direct", "plain", "stream", "pgbackrest"):
        a, b = full[(kind, lo)], full[(kind, hi)]
        pa = plugin(a) if kind in ("direct", "stream") else ""
        pb = plugin(b) if kind in ("direct", "stream") else ""
        lines.append(f"| {names[kind]} | {fmt(walls(a))} | {cpu(a)} | {pa} | {fmt(walls(b))} | "
                     f"{cpu(b)} | {pb} | {w[(kind, lo)] / w[(kind, hi)]:.2f}× |")
    lines += [
        "",
        f"Ratios with the same cores: the direct copy to pgBackRest {w[('direct', lo)] / w[('pgbackrest', lo)]:.2f}× "
        f"(`-cpu {lo}`) and {w[('direct', hi)] / w[('pgbackrest', hi)]:.2f}× (`-cpu {hi}`); to Plakar's "
        f"filesystem importer on the same files {w[('direct', lo)] / w[('plain', lo)]:.2f}× and "
        f"{w[('direct', hi)] / w[('plain', hi)]:.2f}×; to the stream {w[('direct', lo)] / w[('stream', lo)]:.2f}× "
        f"and {w[('direct', hi)] / w[('stream', hi)]:.2f}×. The plain directory holds "
        f"{plain_bytes / 1048576:.0f} MiB.",
        "",
        "Round by round (the median of each round's ratio, and their range): the direct copy to "
        f"pgBackRest {paired(full[('direct', lo)], full[('pgbackrest', lo)])} with `-cpu {lo}` and "
        f"{paired(full[('direct', hi)], full[('pgbackrest', hi)])} with `-cpu {hi}`; to Plakar's "
        f"filesystem importer {paired(full[('direct', lo)], full[('plain', lo)])} and "
        f"{paired(full[('direct', hi)], full[('plain', hi)])}; the direct copy's speed-up from "
        f"`-cpu {lo}` to `-cpu {hi}` {paired(full[('direct', lo)], full[('direct', hi)])}, the "
        f"importer's {paired(full[('plain', lo)], full[('plain', hi)])}.",
        "",
        f"Store bytes of a full backup: this package {med(stored['direct']) / 1048576:.1f} MiB, "
        f"pgBackRest {med(stored['pgbackrest']) / 1048576:.1f} MiB.",
        "",
        "### Second backups",
        "",
        f"With `-cpu {hi}` and `process-max={hi}`, into the store of the full backup: first with "
        "nothing changed since it (the last change a minute old or more), then after `UPDATE` of "
        f"every row of one partition of pgbench_accounts ({partition_bytes / 1048576:.0f} MiB "
        "with its index before it, another each round), a `VACUUM ANALYZE` of it (which autovacuum would "
        "otherwise run in the next round) and a `CHECKPOINT`, against pgBackRest's "
        "`--type=incr` on its full backup. The files read are those `backup_manifest` lists "
        "(the WAL segments besides):",
        "",
        "| | time | CPU | files the plugin read (MiB), carried unread |",
        "|---|---|---|---|",
    ]

    def read(xs):
        xs = [x for x in xs if x]
        if not xs:
            return ""
        x = sorted(xs)[len(xs) // 2]
        return f"{x[0]} ({x[1]} MiB), {x[2]}"

    lines += [
        f"| this package, nothing changed | {fmt(walls(unchanged))} | {cpu(unchanged)} | {read(unchanged_read)} |",
        f"| this package, one partition changed | {fmt(walls(second['direct']))} | {cpu(second['direct'])} | {read(second_read)} |",
        f"| pgBackRest `--type=incr`, one partition changed | {fmt(walls(second['pgbackrest']))} | {cpu(second['pgbackrest'])} | |",
        "",
        f"Ratios: one partition changed, this package to pgBackRest's incr "
        f"{med(walls(second['direct'])) / med(walls(second['pgbackrest'])):.2f}×; nothing changed, "
        f"to the full backup with the same `-cpu` {med(walls(unchanged)) / w[('direct', hi)]:.2f}×. "
        f"Round by round: {paired(second['direct'], second['pgbackrest'])} and "
        f"{paired(unchanged, full[('direct', hi)])}.",
        "",
        "### Restore into an empty directory",
        "",
        "The full backup; this package's restore writes the files, checks them with "
        "`pg_verifybackup` and flushes them to disk (its defaults); pgBackRest's checks each "
        "file's checksum as it writes it and syncs it.",
        "",
        f"| | `-cpu`/`process-max` {lo} | CPU | `-cpu`/`process-max` {hi} | CPU |",
        "|---|---|---|---|---|",
    ]
    for kind, name in (("direct", "this package (`postgres+bin:///DIR`)"),
                       ("pgbackrest", "pgBackRest `restore`")):
        a, b = restore[(kind, lo)], restore[(kind, hi)]
        lines.append(f"| {name} | {fmt(walls(a))} | {cpu(a)} | {fmt(walls(b))} | {cpu(b)} |")
    rl = med(walls(restore[("direct", lo)])) / med(walls(restore[("pgbackrest", lo)]))
    rh = med(walls(restore[("direct", hi)])) / med(walls(restore[("pgbackrest", hi)]))
    lines += [
        "",
        f"Ratios to pgBackRest with the same cores: {rl:.2f}× ({lo}), {rh:.2f}× ({hi}); round by "
        f"round {paired(restore[('direct', lo)], restore[('pgbackrest', lo)])} and "
        f"{paired(restore[('direct', hi)], restore[('pgbackrest', hi)])}.",
        "",
        "### Memory",
        "",
        f"Plugin peak RSS over the full backups: {max(rss):.1f} MiB. On the same cluster with a "
        f"database of {MANY_TABLES} more tables ({many_files} files under base/), a full backup "
        f"with `-cpu {hi}` takes {many['wall']:.2f} s and the plugin's peak RSS is "
        f"{many['plugin_rss']:.1f} MiB; the next one, which Plakar stores unread but for the "
        f"files written since, takes {many['next_wall']:.2f} s and {many['next_rss']:.1f} MiB.",
        "",
    ]
    write_section(out_path, lines)
    say(f"wrote {out_path}")
    json.dump({"full": {f"{k[0]}-{k[1]}": v for k, v in full.items()}, "second": second,
               "unchanged": unchanged, "restore": {f"{k[0]}-{k[1]}": v for k, v in restore.items()},
               "stored": stored, "rss": rss, "many": many}, sys.stderr)
    sys.stderr.write("\n")


if __name__ == "__main__":
    main()
