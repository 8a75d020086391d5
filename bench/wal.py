#!/usr/bin/env python3
"""Point-in-time recovery in `make bench`: what one WAL archive run costs
against the WAL pgbench writes at full speed in a minute, and what a restore
to the latest moment through the WAL snapshots costs against restoring the
base backup and letting PostgreSQL replay the same WAL from a local
directory. All through the real `plakar`.

Run by bench/run.sh after bench/physical.py, on the physical benchmark's
cluster; writes bench/wal.md, which run.sh appends to BENCHMARKS.md.
"""

import glob
import os
import shutil
import socket
import subprocess
import sys
import time

from harness import PLAKAR, Env, du, med, psql, quiet, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = max(3, int(os.environ.get("BENCH_RUNS", "3")))
PASSWORD = os.environ["PGPASSWORD"]
PTAR = os.environ.get("BENCH_PTAR", "")
PG_BIN = os.environ.get("BENCH_PG_BIN", "/usr/lib/postgresql/15/bin")
PLUGIN_COMMS = {"postgresql"}
LOAD_SECONDS = int(os.environ.get("BENCH_WAL_LOAD_SECONDS", "60"))


def say(msg):
    print(f"[wal {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def mib(n):
    return f"{n / 1048576:.1f} MiB"


def fmt(xs, unit="s"):
    return f"{med(xs):.2f} {unit} ({min(xs):.2f}–{max(xs):.2f})"


def lsn(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def as_server(*cmd):
    if os.getuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return list(cmd)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def give_to_server(path):
    if os.getuid() == 0:
        subprocess.run(["chown", "-R", "postgres:", path], check=True)


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
    return seconds


def main():
    port = int(os.environ["BENCH_PHYS_PORT"])
    db = os.environ["BENCH_PHYS_DB"]
    out_path = os.path.join(ROOT, "bench", "wal.md")
    if not PLAKAR:
        with open(out_path, "w") as f:
            f.write("## Point-in-time recovery\n\nNot measured: no `plakar` binary was found.\n")
        return
    started = time.time()
    pk = Env("wal", PTAR)
    version = quiet(pk.plakar("version"), env=pk.env).strip()
    pk.add("source", "mybin", f"postgres+bin://postgres:{PASSWORD}@127.0.0.1:{port}")
    pk.add("source", "mywal", f"postgres+wal://postgres:{PASSWORD}@127.0.0.1:{port}")
    store = pk.new_store()
    archive = ("at", store, "backup", "-tag", "wal", "-no-progress", "@mywal")

    say("first archive run (creates the slot), then the base backup")
    quiet(pk.plakar(*archive), env=pk.env)
    quiet(pk.plakar("at", store, "backup", "-no-progress", "@mybin"), env=pk.env)
    base = pk.snapshots(store)[0]
    quiet(pk.plakar(*archive), env=pk.env)

    wal_per_min, walls, cpus, rsss, stored = [], [], [], [], []
    for i in range(RUNS):
        say(f"run {i + 1} of {RUNS}: pgbench at full speed for {LOAD_SECONDS} s, then one archive run")
        before = lsn(psql(port, "postgres", "SELECT pg_current_wal_lsn()"))
        subprocess.run(["pgbench", "-p", str(port), "-c", "4", "-j", "2", "-T", str(LOAD_SECONDS),
                        "-n", db], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        after = lsn(psql(port, "postgres", "SELECT pg_current_wal_lsn()"))
        wal = after - before
        wal_per_min.append(wal / LOAD_SECONDS * 60 / 1048576)
        size_before = du(store)
        m = run(pk.plakar(*archive), env=pk.env, plugin_comms=PLUGIN_COMMS)
        walls.append(m["wall"])
        cpus.append(m["plugin_cpu_sampled"] or 0.0)
        rsss.append((m["plugin_rss_kib"] or 0) / 1024)
        stored.append((du(store) - size_before) / (wal / (1 << 30)))
    quiet(pk.plakar(*archive), env=pk.env)
    wal_snaps = [s for s in pk.snapshots(store) if s != base]

    restore_times, local_times, recover_via, recover_local = [], [], [], []
    for i in range(RUNS):
        say(f"restore {i + 1} of {RUNS}: to the latest through {len(wal_snaps)} WAL snapshots")
        target = os.path.join(pk.dir, f"latest-{i}")
        pk.add("destination", f"latest{i}", f"postgres+bin://{target}", "owner=postgres")
        t = time.perf_counter()
        quiet(pk.plakar("at", store, "restore", "-to", f"@latest{i}", "-o", "recovery_target=latest", base),
              env=pk.env)
        for snap in reversed(wal_snaps):
            quiet(pk.plakar("at", store, "restore", "-to", f"@latest{i}", snap), env=pk.env)
        plakar_part = time.perf_counter() - t
        # The same WAL, kept for the comparison before the server uses it.
        local_wal = os.path.join(pk.dir, f"wal-{i}")
        shutil.copytree(os.path.join(target, "pg_wal", "plakar"), local_wal)
        replay = recover(target, os.path.join(pk.dir, f"sock-latest-{i}"))
        restore_times.append(plakar_part + replay)
        recover_via.append(replay)
        shutil.rmtree(target)

        say(f"restore {i + 1} of {RUNS}: the base backup, then PostgreSQL replaying from a local directory")
        target = os.path.join(pk.dir, f"local-{i}")
        pk.add("destination", f"local{i}", f"postgres+bin://{target}", "owner=postgres")
        t = time.perf_counter()
        quiet(pk.plakar("at", store, "restore", "-to", f"@local{i}", base), env=pk.env)
        plakar_part = time.perf_counter() - t
        give_to_server(local_wal)
        with open(os.path.join(target, "postgresql.auto.conf"), "a") as f:
            f.write(f"restore_command = 'cp {local_wal}/%f \"%p\"'\n")
        open(os.path.join(target, "recovery.signal"), "w").close()
        for partial in glob.glob(os.path.join(local_wal, "*.partial")):
            os.remove(partial)
        replay = recover(target, os.path.join(pk.dir, f"sock-local-{i}"))
        local_times.append(plakar_part + replay)
        recover_local.append(replay)
        shutil.rmtree(target)
        shutil.rmtree(local_wal)

    ratio = med(restore_times) / med(local_times)
    lines = [
        "## Point-in-time recovery",
        "",
        f"Measured by `bench/wal.py` through the real plakar ({version}) on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, on the physical "
        f"benchmark's cluster (`{db}`), {RUNS} runs, medians with the range.",
        "",
        f"pgbench at full speed on this machine (4 clients, 2 threads, {LOAD_SECONDS} s, "
        f"`synchronous_commit=off`) writes {fmt(wal_per_min, 'MiB')} of WAL per minute. "
        "One archive run after such a minute, with the server idle:",
        "",
        "| | median (range) |",
        "|---|---|",
        f"| wall time of `plakar backup @mywal` | {fmt(walls)} |",
        f"| plugin CPU | {fmt(cpus)} |",
        f"| plugin peak RSS | {fmt(rsss, 'MiB')} |",
        f"| store bytes per GiB of WAL | {fmt([s / 1048576 for s in stored], 'MiB')} |",
        "",
        f"A run a minute keeps up: a minute of WAL at full speed is archived in "
        f"{med(walls):.1f} s.",
        "",
        f"Restore to the latest moment through {len(wal_snaps)} WAL snapshots (the base "
        "restore with `recovery_target=latest`, one `plakar restore` per WAL snapshot, then "
        "`pg_ctl start` until the server has promoted), against the base restore plus "
        "PostgreSQL replaying the same WAL from a local directory (`restore_command = 'cp "
        "DIR/%f %p'`):",
        "",
        "| | total | of which the server's replay |",
        "|---|---|---|",
        f"| through the WAL snapshots | {fmt(restore_times)} | {fmt(recover_via)} |",
        f"| base restore + local WAL | {fmt(local_times)} | {fmt(recover_local)} |",
        "",
        f"Ratio: {ratio:.2f} (target: at most 1.10).",
        "",
    ]
    with open(out_path, "w") as f:
        f.write("\n".join(lines))
    say(f"wrote {out_path}")


if __name__ == "__main__":
    main()
