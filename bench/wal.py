#!/usr/bin/env python3
"""Point-in-time recovery in `make bench`, through the real `plakar`, with a
physical source that archives its WAL (`archive_wal=true`):

1. What a run costs as its snapshot grows: runs one after the other on a
   cluster made with 1 MiB WAL segments, with WAL written between runs so
   that the snapshot holds about 1k, 10k or 50k segments since its base, the
   wall time of each run and the store bytes the runs add.
2. Keeping up: one run after a minute of pgbench at full speed on the
   physical benchmark's cluster (time, plugin CPU and peak RSS, store bytes
   per GiB of WAL).
3. Restoring to the latest moment: one `plakar restore` of the latest
   snapshot then the server's replay, with and without the final flush to
   disk, against the earlier design as its README ran it (the base snapshot
   through the destination, one `plakar restore` per run's WAL, the replay
   from that directory), against the same below its least (the base's files
   as plain files, the WAL fetched once), and against the plain base files
   with the WAL already local; in rounds, each in an order of its own.

Run by bench/run.sh after bench/physical.py; writes bench/wal.md, which
run.sh appends to BENCHMARKS.md.
"""

import json
import os
import random
import shutil
import subprocess
import sys
import time

from harness import (
    PLAKAR, WORK, Env, as_server, du, fmt, free_port, give_to_server, med, psql, quiet, run,
    write_section)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = max(3, int(os.environ.get("BENCH_RUNS", "3")))
PASSWORD = os.environ["PGPASSWORD"]
PTAR = os.environ.get("BENCH_PTAR", "")
PG_BIN = os.environ.get("BENCH_PG_BIN", "/usr/lib/postgresql/15/bin")
PLUGIN_COMMS = {"postgresql"}
LOAD_SECONDS = int(os.environ.get("BENCH_WAL_LOAD_SECONDS", "60"))
# Runs of the cost curve: (segments held at the end, runs).
CURVE = [
    (1000, int(os.environ.get("BENCH_CURVE_RUNS", "1500"))),
    (10000, int(os.environ.get("BENCH_CURVE_RUNS_10K", "300"))),
    (50000, int(os.environ.get("BENCH_CURVE_RUNS_50K", "300"))),
]
CPU = os.environ.get("BENCH_CPU", "")
# Rounds of the restore cases, each round in an order of its own (seeded):
# the server's replay of the same WAL moves by seconds from one start to
# the next here, so that three rounds could not tell the cases apart.
RESTORE_ROUNDS = max(3, int(os.environ.get("BENCH_RESTORE_ROUNDS", "7")))


def say(msg):
    print(f"[wal {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def lsn(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def plakar(pk, *args):
    """plakar with the benchmark's -cpu, if one is set."""
    cpu = ["-cpu", CPU] if CPU else []
    return [PLAKAR, *cpu, *args]


def start_small_cluster(name):
    """A throw-away cluster with 1 MiB WAL segments: many segments for little WAL."""
    home = os.path.join(WORK, name)
    os.makedirs(home, exist_ok=True)
    with open(os.path.join(home, "pw"), "w") as f:
        f.write(PASSWORD)
    give_to_server(home)
    data = os.path.join(home, "data")
    subprocess.run(as_server(f"{PG_BIN}/initdb", "-D", data, "-U", "postgres",
                             "--auth=scram-sha-256", "--wal-segsize=1", "--no-sync",
                             f"--pwfile={home}/pw"), check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write(f"listen_addresses = '127.0.0.1'\nport = {port}\n"
                f"unix_socket_directories = '{home}'\nmax_wal_size = 256MB\nmin_wal_size = 8MB\n")
    with open(os.path.join(data, "pg_hba.conf"), "w") as f:
        f.write("local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n"
                "host replication all 127.0.0.1/32 scram-sha-256\n")
    subprocess.run(as_server(f"{PG_BIN}/pg_ctl", "-D", data, "-l", f"{home}/log", "-w", "start"),
                   check=True, stdout=subprocess.DEVNULL)
    return data, port


def stop_cluster(data):
    subprocess.run(as_server(f"{PG_BIN}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"),
                   check=False, stdout=subprocess.DEVNULL)


def recover(data, sockdir):
    """Starts the recovered directory and waits until it has promoted; the
    seconds from start to promotion. Stops it afterwards."""
    port = free_port()
    os.makedirs(sockdir, exist_ok=True)
    give_to_server(sockdir)
    with open(os.path.join(data, "postgresql.auto.conf"), "a") as f:
        f.write(f"port = {port}\nunix_socket_directories = '{sockdir}'\n"
                "listen_addresses = '127.0.0.1'\n")
    give_to_server(data)
    t = time.perf_counter()
    subprocess.run(as_server(f"{PG_BIN}/pg_ctl", "-D", data, "-l", f"{sockdir}/log", "-w",
                             "-t", "3600", "start"), check=True, stdout=subprocess.DEVNULL)
    while psql(port, "postgres", "SELECT pg_is_in_recovery()") != "f":
        time.sleep(0.05)
    seconds = time.perf_counter() - t
    subprocess.run(as_server(f"{PG_BIN}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"),
                   check=True, stdout=subprocess.DEVNULL)
    keep = os.environ.get("BENCH_KEEP_LOGS")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(f"{sockdir}/log", os.path.join(keep, os.path.basename(sockdir) + ".log"))
        shutil.copy(os.path.join(data, "postgresql.auto.conf"),
                    os.path.join(keep, os.path.basename(sockdir) + ".auto.conf"))
    return seconds


def curve(segments, runs):
    """`runs` runs on a fresh 1 MiB-segment cluster, `segments` segments in
    all: each run's wall time, and the store bytes every tenth of the runs added."""
    data, port = start_small_cluster(f"curve-{segments}")
    try:
        subprocess.run(["pgbench", "-p", str(port), "-i", "-q", "-s", "2", "postgres"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        psql(port, "postgres", "CREATE TABLE tick (n int)")
        pk = Env(f"curve-{segments}", PTAR)
        pk.add("source", "mypg", f"postgres+bin://postgres:{PASSWORD}@127.0.0.1:{port}",
               "archive_wal=true", "base_max_age=30d")
        store = pk.new_store()
        backup = plakar(pk, "at", store, "backup", "-no-progress", "@mypg")
        quiet(backup, env=pk.env)
        per_run = max(1, round(segments / runs))
        walls, cpus, added, files = [], [], [], 0
        # Plakar's own cost of a run in this store: a tiny directory backed up
        # with its filesystem importer, first and last.
        tiny = os.path.join(WORK, f"tiny-{segments}")
        os.makedirs(tiny, exist_ok=True)
        with open(os.path.join(tiny, "f"), "w") as f:
            f.write("x")
        plain = plakar(pk, "at", store, "backup", "-no-progress", tiny)
        plain_first = med([run(plain, env=pk.env)["wall"] for _ in range(3)])
        step = max(1, runs // 10)
        size = du(store)
        for i in range(runs):
            psql(port, "postgres",
                 f"DO $$ BEGIN FOR i IN 1..{per_run} LOOP INSERT INTO tick VALUES (i); "
                 "PERFORM pg_switch_wal(); END LOOP; END $$")
            m = run(backup, env=pk.env, plugin_comms=PLUGIN_COMMS)
            walls.append(m["wall"])
            cpus.append(m["plugin_cpu_sampled"] or 0.0)
            if (i + 1) % step == 0:
                now = du(store)
                added.append((now - size) / step)
                size = now
            if (i + 1) % 100 == 0:
                say(f"{segments} segments: run {i + 1} of {runs}, {m['wall']:.2f} s")
        latest = pk.snapshots(store)[0]
        plain_last = med([run(plain, env=pk.env)["wall"] for _ in range(3)])
        chain = json.loads(quiet(plakar(pk, "at", store, "cat", f"{latest}:/.chain.json"),
                                 env=pk.env))
        held = (lsn(chain["stop_lsn"]) - lsn(chain["bases"][0]["start_lsn"])) // (1 << 20)
        files = len(quiet(plakar(pk, "at", store, "ls", "-recursive", f"{latest}:/"),
                          env=pk.env).splitlines())
        return {"walls": walls, "cpus": cpus, "added": added, "held": held, "records": files,
                "pieces": len(chain["pieces"]), "plain": (plain_first, plain_last)}
    finally:
        stop_cluster(data)


def keep_up_and_restore(port, db, pk, store):
    """Part 2 and 3 on the physical benchmark's cluster."""
    backup = plakar(pk, "at", store, "backup", "-no-progress", "@mypg")
    say("first run: the base backup")
    quiet(backup, env=pk.env)
    wal_per_min, walls, cpus, rsss, stored = [], [], [], [], []
    for i in range(RUNS):
        say(f"run {i + 1} of {RUNS}: pgbench at full speed for {LOAD_SECONDS} s, then one run")
        before = lsn(psql(port, "postgres", "SELECT pg_current_wal_lsn()"))
        subprocess.run(["pgbench", "-p", str(port), "-c", "4", "-j", "2", "-T", str(LOAD_SECONDS),
                        "-n", db], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        after = lsn(psql(port, "postgres", "SELECT pg_current_wal_lsn()"))
        wal = after - before
        wal_per_min.append(wal / LOAD_SECONDS * 60 / 1048576)
        size_before = du(store)
        m = run(backup, env=pk.env, plugin_comms=PLUGIN_COMMS)
        walls.append(m["wall"])
        cpus.append(m["plugin_cpu_sampled"] or 0.0)
        rsss.append((m["plugin_rss_kib"] or 0) / 1024)
        stored.append((du(store) - size_before) / (wal / (1 << 30)))
    snapshots = pk.snapshots(store)
    latest, base_run = snapshots[0], snapshots[-1]
    chain = json.loads(quiet(plakar(pk, "at", store, "cat", f"{latest}:/.chain.json"), env=pk.env))
    base_id = chain["bases"][-1]["id"]
    wal_bytes = lsn(chain["stop_lsn"]) - lsn(chain["bases"][-1]["start_lsn"])
    # The WAL each run after the base added: what the earlier design kept
    # as one WAL snapshot per run (a run here streams more than 16 MiB, so
    # its WAL is one piece of its own; the first may start before the base
    # run's stop, when it streamed that run's short piece again). Record
    # names as `Piece::path` in src/physical/chain.rs gives them.
    base_stop = lsn(json.loads(quiet(plakar(pk, "at", store, "cat", f"{base_run}:/.chain.json"),
                                     env=pk.env))["stop_lsn"])
    run_pieces = [f"/wal/{p['timeline']:08X}-{lsn(p['from']):016X}-{lsn(p['to']):016X}"
                  for p in chain["pieces"] if lsn(p["to"]) > base_stop]

    # The same WAL as segment files, for the cases that replay it from a
    # local directory: put back once by the destination, outside the rounds.
    master_wal = os.path.join(pk.dir, "wal-segments")
    prepared = os.path.join(pk.dir, "prepared")
    pk.add("destination", "prep", f"postgres+bin://{prepared}", "owner=postgres", "sync=false")
    quiet(plakar(pk, "at", store, "restore", "-to", "@prep", latest), env=pk.env)
    shutil.copytree(os.path.join(prepared, "pg_wal"), master_wal,
                    ignore=shutil.ignore_patterns("archive_status"))
    shutil.rmtree(prepared)

    def local_copy(i, case):
        wal = os.path.join(pk.dir, f"wal-{case}-{i}")
        shutil.copytree(master_wal, wal)
        give_to_server(wal)
        return wal

    def replay_from(data, wal, i, case):
        with open(os.path.join(data, "postgresql.auto.conf"), "a") as f:
            f.write(f"restore_command = 'cp {wal}/%f \"%p\"'\n")
        open(os.path.join(data, "recovery.signal"), "w").close()
        # Every replay starts with nothing left to write back: the copies
        # made before it would otherwise weigh on this replay alone.
        os.sync()
        return recover(data, os.path.join(pk.dir, f"sock-{case}-{i}"))

    def one_command(i, sync):
        target = os.path.join(pk.dir, f"latest-{sync}-{i}")
        pk.add("destination", f"l{sync}{i}", f"postgres+bin://{target}", "owner=postgres",
               f"sync={sync}")
        t = time.perf_counter()
        quiet(plakar(pk, "at", store, "restore", "-to", f"@l{sync}{i}", latest), env=pk.env)
        part = time.perf_counter() - t
        os.sync()
        replay = recover(target, os.path.join(pk.dir, f"sock-{sync}-{i}"))
        shutil.rmtree(target)
        return part, replay

    def base_files_local_wal(i):
        wal = local_copy(i, "local")
        target = os.path.join(pk.dir, f"local-{i}")
        t = time.perf_counter()
        quiet(plakar(pk, "at", store, "restore", "-to", target, f"{latest}:/bases/{base_id}"),
              env=pk.env)
        part = time.perf_counter() - t
        # Plakar's own restore keeps the path: the data directory is below.
        inner = os.path.join(target, "bases", base_id)
        data = inner if os.path.isdir(inner) else target
        os.chmod(data, 0o700)
        replay = replay_from(data, wal, i, "local")
        shutil.rmtree(target)
        shutil.rmtree(wal)
        return part, replay

    def earlier_as_run(i):
        # The earlier design as its README ran it: the base snapshot
        # restored through the destination (here the base run's snapshot,
        # with `sync=false`: the earlier destination flushed nothing), then
        # one `plakar restore` of each later run's WAL into a directory,
        # then the server replaying from that directory. The pieces are
        # this design's records, not the segment files the earlier WAL
        # snapshots held: the replay reads the same WAL as segments.
        wal = local_copy(i, "earlier")
        target = os.path.join(pk.dir, f"earlier-{i}")
        pk.add("destination", f"e{i}", f"postgres+bin://{target}", "owner=postgres", "sync=false")
        fetched = os.path.join(pk.dir, f"loop-{i}")
        t = time.perf_counter()
        quiet(plakar(pk, "at", store, "restore", "-to", f"@e{i}", base_run), env=pk.env)
        for piece in run_pieces:
            quiet(plakar(pk, "at", store, "restore", "-to", fetched, f"{latest}:{piece}"),
                  env=pk.env)
        part = time.perf_counter() - t
        shutil.rmtree(fetched)
        replay = replay_from(target, wal, i, "earlier")
        shutil.rmtree(target)
        shutil.rmtree(wal)
        return part, replay

    def fetch_only(i):
        # The earlier design below its least: the same WAL fetched by a
        # single `plakar restore` rather than one per run, added to the
        # base-files case.
        fetched = os.path.join(pk.dir, f"fetched-{i}")
        t = time.perf_counter()
        quiet(plakar(pk, "at", store, "restore", "-to", fetched, f"{latest}:/wal"), env=pk.env)
        part = time.perf_counter() - t
        shutil.rmtree(fetched)
        return part, 0.0

    cases = {
        "synced": lambda i: one_command(i, "true"),
        "unsynced": lambda i: one_command(i, "false"),
        "local": base_files_local_wal,
        "earlier": earlier_as_run,
        "fetch": fetch_only,
    }
    parts = {name: [] for name in cases}
    replays = {name: [] for name in cases}
    for i in range(RESTORE_ROUNDS):
        order = list(cases)
        random.Random(i).shuffle(order)
        say(f"restore round {i + 1} of {RESTORE_ROUNDS}: {', '.join(order)}")
        for name in order:
            part, replay = cases[name](i)
            parts[name].append(part)
            replays[name].append(replay)
    shutil.rmtree(master_wal)
    return {
        "wal_per_min": wal_per_min, "walls": walls, "cpus": cpus, "rsss": rsss,
        "stored": stored, "parts": parts, "replays": replays,
        "wal_mib": wal_bytes / 1048576, "loop": len(run_pieces),
    }


def main():
    out_path = os.path.join(ROOT, "bench", "wal.md")
    if not PLAKAR:
        write_section(out_path, ["## Point-in-time recovery", "",
                                 "Not measured: no `plakar` binary was found.", ""])
        return
    started = time.time()
    probe = Env("wal-version", PTAR)
    version = quiet([PLAKAR, "version"], env=probe.env).strip()
    cpu_note = f"`plakar -cpu {CPU}`" if CPU else f"plakar's default `-cpu` ({max(1, os.cpu_count() - 1)} here)"

    curves = []
    for segments, runs in CURVE:
        if runs <= 0:
            continue
        say(f"cost curve: {runs} runs, {segments} segments of 1 MiB in all")
        curves.append((segments, runs, curve(segments, runs)))

    port = int(os.environ["BENCH_PHYS_PORT"])
    db = os.environ["BENCH_PHYS_DB"]
    pk = Env("wal", PTAR)
    pk.add("source", "mypg", f"postgres+bin://postgres:{PASSWORD}@127.0.0.1:{port}",
           "archive_wal=true")
    store = pk.new_store()
    r = keep_up_and_restore(port, db, pk, store)

    P, R = r["parts"], r["replays"]
    # The earlier design below its least: the plain base files, the WAL
    # fetched once, the local replay (the same round's figures).
    P["least"] = [a + b for a, b in zip(P["local"], P["fetch"])]
    R["least"] = R["local"]
    total = {k: [a + b for a, b in zip(P[k], R[k])] for k in P if k != "fetch"}

    def row(label, k):
        return f"| {label} | {fmt(total[k])} | {fmt(P[k])} | {fmt(R[k])} |"

    def ratio(k, of, to):
        return med(of[k]) / med(of[to])
    lines = [
        "## Point-in-time recovery",
        "",
        f"Measured by `bench/wal.py` through the real plakar ({version}), {cpu_note}, on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, with a physical source "
        "that archives its WAL (`archive_wal=true`).",
        "",
        "### What a run costs as its snapshot grows",
        "",
        "Runs one after the other on a cluster made with 1 MiB WAL segments (`initdb "
        "--wal-segsize=1`, pgbench scale 2), the WAL written between runs (rows and "
        "`pg_switch_wal()`) so that the last snapshot holds the segments below since its "
        "base. Wall time of `plakar backup @mypg` (one run), by position in the series:",
        "",
        "| segments since the base | runs | records in the last snapshot | first 10 runs after the base | runs at 50% | last 10 runs | last ÷ first | plugin CPU, first → last | Plakar alone (a 1-file directory), first → last | store bytes a run adds (median) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for segments, runs, c in curves:
        w, cpu = c["walls"], c["cpus"]
        first, last = med(w[:10]), med(w[-10:])
        mid = med(w[len(w) // 2 - 5:len(w) // 2 + 5])
        lines.append(
            f"| {c['held']} | {runs} | {c['records']} ({c['pieces']} pieces of WAL) | {first:.2f} s | "
            f"{mid:.2f} s | {last:.2f} s | {last / first:.2f} | "
            f"{med(cpu[:10]):.3f} s → {med(cpu[-10:]):.3f} s | "
            f"{c['plain'][0]:.2f} s → {c['plain'][1]:.2f} s | {med(c['added']) / 1024:.1f} KiB |")
    lines += [
        "",
        "### Keeping up with pgbench at full speed",
        "",
        f"On the physical benchmark's cluster (`{db}`), {RUNS} runs, medians with the range. "
        f"pgbench (4 clients, 2 threads, {LOAD_SECONDS} s) writes "
        f"{fmt(r['wal_per_min'], 'MiB')} of WAL per minute; one run after such a minute:",
        "",
        "| | median (range) |",
        "|---|---|",
        f"| wall time of `plakar backup @mypg` | {fmt(r['walls'])} |",
        f"| plugin CPU | {fmt(r['cpus'])} |",
        f"| plugin peak RSS | {fmt(r['rsss'], 'MiB')} |",
        f"| store bytes per GiB of WAL | {fmt([s / 1048576 for s in r['stored']], 'MiB')} |",
        "",
        "### Restoring to the latest moment",
        "",
        f"The latest snapshot (its base and {r['wal_mib']:.0f} MiB of WAL, {r['loop']} runs "
        "after the base) restored with one `plakar restore` into an empty directory (the WAL "
        "into `pg_wal/`, which the server reads in place), then "
        "`pg_ctl start` until the server has promoted; against the earlier design as its "
        "README ran it (the base snapshot restored through the destination, with `sync=false` "
        "since the earlier destination flushed nothing, then one `plakar restore` of each "
        "run's WAL into a directory, and the server replaying from that directory with "
        "`restore_command = 'cp DIR/%f %p'`), against the same below its least (the base "
        "backup's files restored by Plakar as plain files, `plakar restore -to DIR "
        "SNAP:/bases/<id>`, which gives no recovery settings, owner or verification, and the "
        "WAL fetched by a single `plakar restore`), and against the plain base files with the "
        f"WAL already local. {RESTORE_ROUNDS} rounds, each in an order of its own (seeded), "
        "every replay after a `sync`; medians with the range:",
        "",
        "| | total | the restore | the server's replay |",
        "|---|---|---|---|",
        row("one `plakar restore` (flushed to disk, the default)", "synced"),
        row("one `plakar restore` with `sync=false`", "unsynced"),
        row(f"the earlier design as its README ran it ({r['loop']} `plakar restore` of WAL)",
            "earlier"),
        row("the earlier design below its least", "least"),
        row("base files + WAL already local", "local"),
        "",
        f"Ratio to the earlier design as its README ran it: {ratio('synced', total, 'earlier'):.2f} "
        f"({ratio('unsynced', total, 'earlier'):.2f} with `sync=false`, on its terms); of the "
        f"restores alone, before the replay: {ratio('synced', P, 'earlier'):.2f} "
        f"({ratio('unsynced', P, 'earlier'):.2f}). The flush to disk costs "
        f"{med(P['synced']) - med(P['unsynced']):.2f} s of the restore. "
        f"Ratio to the earlier design below its least: {ratio('synced', total, 'least'):.2f}; "
        f"to base files + WAL already local: {ratio('synced', total, 'local'):.2f}.",
        "",
    ]
    write_section(out_path, lines)
    say(f"wrote {out_path}")


if __name__ == "__main__":
    main()
