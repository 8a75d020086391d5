"""What the benchmark's scripts share: commands run with their output in the
log and their processes sampled (wall time, peak RSS, the plugin's CPU), one
Plakar environment per package, the clusters' commands run as the server's
user, and small helpers for the figures.

Both scripts run under bench/run.sh, which exports BENCH_WORK, BENCH_PLAKAR
and the libpq variables (PGHOST, PGUSER, PGPASSWORD) of the clusters.
"""

import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

WORK = os.environ["BENCH_WORK"]
PLAKAR = os.environ.get("BENCH_PLAKAR", "")
LOG = os.path.join(WORK, "bench.log")

# The 1-minute load average after each measured command, for the report.
loads = []


def note_load():
    loads.append(os.getloadavg()[0])



def tail_log(n=40):
    with open(LOG, errors="replace") as f:
        return "".join(f.readlines()[-n:])



def children_of(root):
    """Every process under `root`, with its command name, from /proc."""
    parents, comms = {}, {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        close = stat.rfind(")")
        comms[int(pid)] = stat[stat.find("(") + 1:close]
        parents[int(pid)] = int(stat[close + 2:].split()[1])
    found, todo = {}, [root]
    while todo:
        p = todo.pop()
        for c, pp in parents.items():
            if pp == p and c not in found:
                found[c] = comms[c]
                todo.append(c)
    return found


def read_status(pid):
    """(VmHWM KiB, CPU seconds) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            hwm = next((int(l.split()[1]) for l in f if l.startswith("VmHWM:")), 0)
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rfind(")") + 2:].split()
        tick = os.sysconf("SC_CLK_TCK")
        return hwm, (int(fields[11]) + int(fields[12])) / tick
    except (OSError, ValueError, StopIteration, IndexError):
        return None


def comm_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return stat[stat.find("(") + 1:stat.rfind(")")]
    except OSError:
        return None


class Sampler:
    """Follows the processes under a command: the peak RSS (VmHWM, the
    largest seen) of plakar and of the plugin, and the plugin's CPU time as
    last seen (it may miss the last few milliseconds;
    drive gives the exact figure). The process tree is read again every
    0.25 s, the processes of interest every 0.05 s, so that the sampling
    itself costs little CPU."""

    def __init__(self, proc, plugin_comms):
        self.proc = proc
        self.plugin_comms = plugin_comms
        self.plakar = {}
        self.plugin = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        watched = {}
        tick = 0
        while not self.done.is_set():
            if tick % 5 == 0:
                tree = children_of(self.proc.pid)
                tree[self.proc.pid] = comm_of(self.proc.pid)
                watched = {pid: comm for pid, comm in tree.items()
                           if comm == "plakar" or comm in self.plugin_comms}
            for pid, comm in watched.items():
                s = read_status(pid)
                if s:
                    # A process caught as it exits shows no VmHWM: keep the
                    # largest figures seen, not the last.
                    seen = self.plakar if comm == "plakar" else self.plugin
                    before = seen.get(pid, (0, 0.0))
                    seen[pid] = (max(before[0], s[0]), max(before[1], s[1]))
            tick += 1
            self.done.wait(0.05)

    def stop(self):
        self.done.set()
        self.thread.join()
        return {
            "plakar_rss_kib": max((s[0] for s in self.plakar.values()), default=None),
            "plugin_rss_kib": max((s[0] for s in self.plugin.values()), default=None),
            "plugin_cpu_sampled": sum(s[1] for s in self.plugin.values()) if self.plugin else None,
            "plakar_cpu_sampled": sum(s[1] for s in self.plakar.values()) if self.plakar else None,
        }


def run(cmd, env=None, stdout=subprocess.DEVNULL, plugin_comms=frozenset(), shell=False):
    """Runs a command, returns {'wall': seconds, ...sampled figures}; fails loudly."""
    with open(LOG, "ab") as log:
        log.write(f"$ {cmd if shell else ' '.join(cmd)}\n".encode())
        log.flush()
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=stdout, stderr=log, env=env, shell=shell,
                             executable="/bin/bash" if shell else None)
        sampler = Sampler(p, plugin_comms)
        p.wait()
        wall = time.perf_counter() - t
        sampled = sampler.stop()
    if p.returncode != 0:
        sys.stderr.write(tail_log())
        raise SystemExit(f"bench: {cmd} failed with {p.returncode}")
    note_load()
    return {"wall": wall, **sampled}



def quiet(cmd, env=None):
    """Runs a setup command (not measured), returns its stdout."""
    with open(LOG, "ab") as log:
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, env=env)
    if p.returncode != 0:
        sys.stderr.write(tail_log())
        raise SystemExit(f"bench: {' '.join(cmd)} failed with {p.returncode}")
    return p.stdout.decode()



def psql(port, db, sql):
    out = subprocess.run(
        ["psql", "-p", str(port), "-d", db, "-AtXq", "-v", "ON_ERROR_STOP=1", "-c", sql],
        check=True, stdout=subprocess.PIPE,
        env={**os.environ, "PGOPTIONS": "-c client_min_messages=warning"})
    return out.stdout.decode().strip()



def du(path):
    return int(subprocess.run(["du", "-sb", path], check=True, stdout=subprocess.PIPE)
               .stdout.split()[0])


def med(xs):
    return statistics.median(xs)



def mib(n):
    return n / (1 << 20)



class Env:
    """One user's Plakar: its own XDG directories (Plakar v1.1.0 does not pass
    -cachedir to its cache process), with one package installed."""

    def __init__(self, name, ptar):
        self.dir = os.path.join(WORK, f"env-{name}")
        os.makedirs(self.dir, exist_ok=True)
        self.env = {
            "PATH": os.environ["PATH"],
            "LANG": "C.UTF-8",
            "HOME": self.dir,
            "XDG_CONFIG_HOME": os.path.join(self.dir, "config"),
            "XDG_CACHE_HOME": os.path.join(self.dir, "cache"),
            "XDG_DATA_HOME": os.path.join(self.dir, "data"),
            "PGPASSWORD": os.environ["PGPASSWORD"],
            "PGHOST": "127.0.0.1",
            "PGUSER": "postgres",
        }
        self.stores = 0
        quiet([PLAKAR, "-disable-security-check"], env=self.env)
        quiet([PLAKAR, "pkg", "add", ptar], env=self.env)

    def plakar(self, *args):
        return [PLAKAR, *args]

    def add(self, kind, name, location, *options):
        quiet([PLAKAR, kind, "add", name, location, *options], env=self.env)

    def new_store(self):
        self.stores += 1
        path = os.path.join(self.dir, f"store{self.stores}")
        shutil.rmtree(path, ignore_errors=True)
        quiet([PLAKAR, "at", path, "create", "-plaintext"], env=self.env)
        return path

    def snapshots(self, store):
        out = quiet([PLAKAR, "at", store, "ls"], env=self.env)
        return [line.split()[1] for line in out.splitlines() if line.strip()]


def as_server(*cmd):
    """A command run as the server's user when the benchmark runs as root."""
    if os.getuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return list(cmd)


def give_to_server(path):
    if os.getuid() == 0:
        subprocess.run(["chown", "-R", "postgres:", path], check=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fmt(xs, unit="s"):
    """The median, and the range."""
    return f"{med(xs):.2f} {unit} ({min(xs):.2f}–{max(xs):.2f})"


def write_section(path, lines):
    """A script's section of BENCHMARKS.md, for run.sh to put in place."""
    with open(path, "w") as f:
        f.write("\n".join(lines))
