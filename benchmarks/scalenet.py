"""The network and process plumbing of bench_scale.py: one network namespace per Ray node, each linked to a hub
by a veth pair with a tc tbf rate cap in both directions and, for S3 traffic only, an NFQUEUE delay (wan.py's
daemon); the S3 servers in the hub; CPU accounting of every process inside these namespaces. Every name and
address is this module's own (`dthscale-*`, 10.93.0.0/16), so it never touches another benchmark's links."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procstats import machine_busy_s, proc_cpu_s  # noqa: E402, F401 - re-exported to bench_scale

from dth_ray.locals3 import stop_process  # noqa: E402

HERE = Path(__file__).resolve().parent

HUB = "dthscale-hub"
SERVER_IP = "10.93.255.1"
QUEUE = 7193
MTU = 64000
PIDFILE = Path("/run/dthscale-delayd.pid")
RAY_TMP = Path("/tmp/dthscale-ray")  # short: Ray's unix socket paths must stay under 108 bytes


def node_ns(i: int) -> str:
    return f"dthscale-n{i}"


def node_ip(i: int) -> str:
    return f"10.93.{i}.2"


def hub_ip(i: int) -> str:
    return f"10.93.{i}.1"


def hub_if(i: int) -> str:
    return f"dthsc{i}h"


def node_if(i: int) -> str:
    return f"dthsc{i}n"

# ---------------------------------------------------------------- shell

def sh(*cmd: str, check: bool = True, netns: str | None = None) -> subprocess.CompletedProcess:
    full = (["ip", "netns", "exec", netns] if netns else []) + list(cmd)
    proc = subprocess.run(full, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def ns_pids(ns: str) -> list[int]:
    out = sh("ip", "netns", "pids", ns, check=False).stdout.split()
    return [int(p) for p in out if p.isdigit()]


def kill_ns(ns: str, grace_s: float = 5.0) -> None:
    """End every process inside namespace `ns` (all of them started by this module): TERM, then KILL."""
    pids = ns_pids(ns)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and ns_pids(ns):
        time.sleep(0.2)
    for pid in ns_pids(ns):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def existing_namespaces() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout.split("\n")
    return [line.split()[0] for line in out if line.strip().startswith("dthscale-")]


def down() -> None:
    """Remove everything this module creates (idempotent): processes in its namespaces, the namespaces (their
    veths, qdiscs and iptables rules go with them), the delay daemon, Ray's temp folder."""
    if PIDFILE.exists():
        with contextlib.suppress(ValueError, OSError):
            pid = int(PIDFILE.read_text().strip())
            if b"delayd" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGTERM)
        PIDFILE.unlink(missing_ok=True)
    spaces = existing_namespaces()
    for ns in sorted(spaces, key=lambda s: s == HUB):  # nodes first, the hub (servers, daemon) last
        kill_ns(ns)
    for ns in spaces:
        sh("ip", "netns", "del", ns, check=False)
    shutil.rmtree(RAY_TMP, ignore_errors=True)


# ---------------------------------------------------------------- links

class Links:
    """The hub and `count` node namespaces (0 = head), each linked to the hub by a capped, delayed veth."""

    def __init__(self, count: int, rate_mb: float, rtt_ms: float):
        self.count, self.rate_mb, self.rtt_ms = count, rate_mb, rtt_ms
        self.daemon: subprocess.Popen | None = None
        self.measured_rtt_ms: float | None = None

    def up(self) -> None:
        down()
        sh("ip", "netns", "add", HUB)
        sh("ip", "link", "set", "lo", "up", netns=HUB)
        sh("ip", "addr", "add", f"{SERVER_IP}/32", "dev", "lo", netns=HUB)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=HUB)
        rate = f"{self.rate_mb * 8:g}mbit"
        for i in range(self.count):
            ns = node_ns(i)
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", hub_if(i), "netns", HUB, "type", "veth", "peer", "name", node_if(i), "netns", ns)
            sh("ip", "addr", "add", f"{hub_ip(i)}/24", "dev", hub_if(i), netns=HUB)
            sh("ip", "addr", "add", f"{node_ip(i)}/24", "dev", node_if(i), netns=ns)
            for space, ifname in ((HUB, hub_if(i)), (ns, node_if(i))):
                sh("ip", "link", "set", ifname, "mtu", str(MTU), "up", netns=space)
                # The cap: rate, a burst of a few packets, at most ~100 ms queued (then tail drop).
                sh("tc", "qdisc", "replace", "dev", ifname, "root", "tbf", "rate", rate, "burst", "256kb",
                   "latency", "100ms", netns=space)
            sh("ip", "link", "set", "lo", "up", netns=ns)
            sh("ip", "route", "add", "default", "via", hub_ip(i), netns=ns)
        if self.rtt_ms > 0:
            self.daemon = subprocess.Popen(
                ["ip", "netns", "exec", HUB, sys.executable, str(HERE / "wan.py"), "delayd", "--queue", str(QUEUE),
                 "--delay-ms", str(self.rtt_ms / 2)], stdin=subprocess.DEVNULL, start_new_session=True)
            PIDFILE.write_text(str(self.daemon.pid))
            time.sleep(0.5)
            if self.daemon.poll() is not None:
                raise RuntimeError(f"delay daemon exited with {self.daemon.returncode}")
            # S3 traffic only: packets to the servers (INPUT) and from them (OUTPUT), each delayed RTT/2.
            sh("iptables", "-A", "INPUT", "-d", SERVER_IP, "!", "-i", "lo", "-j", "NFQUEUE", "--queue-num",
               str(QUEUE), netns=HUB)
            sh("iptables", "-A", "OUTPUT", "-s", SERVER_IP, "!", "-o", "lo", "-j", "NFQUEUE", "--queue-num",
               str(QUEUE), netns=HUB)
        self.measured_rtt_ms = self.verify()

    def verify(self) -> float:
        """Smallest TCP connect time (a refused connect: one RTT) from the last node to the server address."""
        code = ("import socket,time\nbest=9e9\nfor _ in range(5):\n s=socket.socket();s.settimeout(3);t=time.monotonic()\n"
                f" try: s.connect(('{SERVER_IP}',9))\n except ConnectionRefusedError: pass\n"
                " best=min(best,(time.monotonic()-t)*1000);s.close()\nprint(round(best,1))")
        out = sh(sys.executable, "-c", code, netns=node_ns(self.count - 1)).stdout.strip()
        return float(out)

    def counters(self) -> dict[int, tuple[int, int]]:
        """Per node: bytes the hub sent to it and received from it (its link's two directions)."""
        out = {}
        for i in range(self.count):
            base = f"/sys/class/net/{hub_if(i)}/statistics/"
            tx = sh("cat", base + "tx_bytes", base + "rx_bytes", netns=HUB).stdout.split()
            out[i] = (int(tx[0]), int(tx[1]))
        return out

    def describe(self) -> dict:
        return {"rate_mb_per_s_each_way": self.rate_mb, "rtt_ms": self.rtt_ms, "measured_rtt_ms": self.measured_rtt_ms,
                "shaping": f"tc tbf rate {self.rate_mb * 8:g}mbit burst 256kb latency 100ms on both ends of each "
                           "node's veth", "mtu": MTU,
                "delay": f"iptables NFQUEUE in {HUB} (INPUT to / OUTPUT from {SERVER_IP}), wan.py delayd holding "
                         f"{self.rtt_ms / 2:g} ms each way; S3 traffic only"}


class HubServer:
    """`rclone serve s3` inside the hub on SERVER_IP:port over a directory."""

    def __init__(self, root: Path, port: int, access_key: str, secret_key: str):
        self.root, self.port = root, port
        self.access_key_id, self.secret_access_key = access_key, secret_key
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{SERVER_IP}:{self.port}"

    def start(self) -> HubServer:
        from dth_ray.locals3 import rclone_binary

        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", HUB, rclone_binary(), "serve", "s3", str(self.root), "--addr",
             f"{SERVER_IP}:{self.port}", "--auth-key", f"{self.access_key_id},{self.secret_access_key}",
             "--log-level", "ERROR"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(100):
            if self.proc.poll() is not None:
                raise RuntimeError("rclone serve s3 exited in the hub")
            probe = sh("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2",
                       f"http://{SERVER_IP}:{self.port}/", check=False, netns=HUB)
            if probe.stdout.strip() not in ("", "000"):
                return self
            time.sleep(0.1)
        raise RuntimeError("rclone serve s3 did not answer in the hub")

    def stop(self) -> None:
        stop_process(self.proc, 10)
        self.proc = None

    def cpu_s(self) -> float:
        return proc_cpu_s(self.proc.pid) if self.proc else 0.0


class OwnCpu(threading.Thread):
    """CPU seconds of every process inside this module's namespaces (Ray nodes, driver, servers, delay daemon),
    per namespace: each pid's utime + stime, kept as the largest value seen (sampled every `interval_s`, so a
    process that exits is undercounted by at most one interval); what was spent before start() is excluded."""

    def __init__(self, interval_s: float = 0.25):
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.spaces = {os.stat(f"/run/netns/{ns}").st_ino: ns for ns in existing_namespaces()}
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}  # pid -> (namespace:comm, largest CPU seen)
        self._halt = threading.Event()
        self.sample(baseline=True)

    def sample(self, baseline: bool = False) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                inode = os.stat(f"/proc/{pid}/ns/net").st_ino
            except OSError:
                continue
            ns = self.spaces.get(inode)
            if ns is None:
                continue
            cpu = proc_cpu_s(pid)
            if baseline:
                self.first[pid] = cpu
            if pid not in self.last:
                try:
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                except OSError:
                    continue
                self.last[pid] = (f"{ns.removeprefix('dthscale-')}:{comm}", cpu)
            self.last[pid] = (self.last[pid][0], max(cpu, self.last[pid][1]))

    def run(self) -> None:
        while not self._halt.wait(self.interval_s):
            self.sample()

    def stop(self) -> dict[str, float]:
        """CPU seconds since start per namespace and process name (`n1:raylet`, `hub:rclone`, `n0:dth-ray`, ...;
        n0 is the head, hub holds the servers and the delay daemon)."""
        self._halt.set()
        self.join()
        self.sample()
        out: dict[str, float] = {}
        for pid, (name, cpu) in self.last.items():
            out[name] = out.get(name, 0.0) + cpu - self.first.get(pid, 0.0)
        return {k: round(v, 2) for k, v in sorted(out.items()) if round(v, 2) > 0}


def link_ceiling(directory: Path, key: str, size: int, nodes: int) -> dict:
    """What the links carry with no dth-ray: every worker node GETs `key` (`size` bytes, a file under
    `directory`) at once with curl from a plain HTTP server beside the S3 servers (same address, so the same
    delay); aggregate MB/s."""
    server = subprocess.Popen(["ip", "netns", "exec", HUB, sys.executable, "-m", "http.server", "9009", "--bind",
                               SERVER_IP, "--directory", str(directory)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(1.0)
        t0 = time.monotonic()
        curls = [subprocess.Popen(["ip", "netns", "exec", node_ns(i), "curl", "-s", "-o", "/dev/null", "--max-time",
                                   "120", "-w", "%{size_download}", f"http://{SERVER_IP}:9009/{key}"],
                                  stdout=subprocess.PIPE, text=True) for i in range(1, nodes + 1)]
        got = sum(int((c.communicate()[0] or "0").strip() or 0) for c in curls)
        wall = time.monotonic() - t0
    finally:
        server.terminate()
        server.wait(10)
    return {"nodes": nodes, "object_bytes": size, "bytes": got, "wall_s": round(wall, 2),
            "mb_per_s": round(got / wall / 1e6, 2), "complete": got == nodes * size,
            "load_avg": [round(x, 2) for x in os.getloadavg()]}
