"""An emulated long-distance link (RTT, random loss, per-route congestion control) without netem.

This kernel has no netem qdisc, so (see ../shared/TESTING.md):
- delay: iptables NFQUEUE rules hand every packet crossing the link to a small userspace daemon
  (`python wan.py delayd`, PyPI NetfilterQueue) that releases it RTT/2 later (each direction, so RTT total);
- loss: iptables `-m statistic --mode random --probability P -j DROP` (each direction, so ~P per packet);
- congestion control: `ip route replace ... congctl bbr|cubic` on both ends' routes (the netns sysctl refuses
  cubic; a per-route setting works).

Topology (three network namespaces' worth of routing, root namespace's iptables untouched):

    root ns (client, local dst server)  10.77.0.1 --veth-- 10.77.0.2  dthwan-mid  10.77.1.1 --veth-- 10.77.1.2  dthwan-far
                                                                   (FORWARD: DROP p, NFQUEUE; delayd)          (source server)

Loss and delay are applied in the middle namespace's FORWARD chain (so packets are dropped "on the wire", not
on a sender's OUTPUT path, where TCP would see a local error rather than a loss). Offloads (TSO/GSO/GRO) are off
on every veth, so loss and delay apply per packet. Teardown deletes both namespaces (their iptables rules, veths
and routes go with them) and kills the daemon; it is idempotent and also runs on error and on SIGTERM/SIGINT.

Needs root, Debian packages iptables, ethtool, libnetfilter-queue-dev (to build NetfilterQueue), PyPI
NetfilterQueue in the venv. CLI:

    python benchmarks/wan.py up --rtt-ms 50 --loss 0.01 --cc bbr      # leaves the link up (for manual tests)
    python benchmarks/wan.py down                                     # removes everything this module creates
    python benchmarks/wan.py probe --rtt-ms 50 --loss 0.01 --cc bbr,cubic --mib 64   # one GET per cc, then down
    python benchmarks/wan.py preflight                                # what is missing here, if anything
    python benchmarks/wan.py deps                                     # install it (root; apt-get, pip)
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

MID, FAR = "dthwan-mid", "dthwan-far"
HOST_IF, MIDH_IF, MIDF_IF, FAR_IF = "dthw-h", "dthw-mh", "dthw-mf", "dthw-f"
HOST_IP, MIDH_IP, MIDF_IP, FAR_IP = "10.77.0.1", "10.77.0.2", "10.77.1.1", "10.77.1.2"
HOST_NET, FAR_NET = "10.77.0.0/24", "10.77.1.0/24"
QUEUE = 7077
PIDFILE = Path("/run/dthwan-delayd.pid")
HERE = Path(__file__).resolve().parent


def sh(*cmd: str, check: bool = True, netns: str | None = None) -> subprocess.CompletedProcess:
    full = (["ip", "netns", "exec", netns] if netns else []) + list(cmd)
    proc = subprocess.run(full, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def preflight() -> list[str]:
    """What is missing on this machine (empty if the emulation can run)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (network namespaces, iptables)")
    for tool in ("ip", "iptables", "ethtool"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            problems.append(f"{tool} not found (apt-get install iptables ethtool iproute2)")
    try:
        import netfilterqueue  # noqa: F401
    except ImportError:
        problems.append("PyPI NetfilterQueue missing (apt-get install libnetfilter-queue-dev; pip install NetfilterQueue)")
    available = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
    for cc in ("bbr", "cubic"):
        if cc not in available:
            subprocess.run(["modprobe", f"tcp_{cc}"], capture_output=True)
    available = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
    problems += [f"congestion control {cc} unavailable (modprobe tcp_{cc} failed)"
                 for cc in ("bbr", "cubic") if cc not in available]
    return problems


def deps() -> int:
    """Install what the emulation needs if it is missing (`make bench` runs this; root on Debian): the apt
    packages iptables, ethtool, iproute2, libnetfilter-queue-dev and build-essential (to build
    NetfilterQueue), then PyPI NetfilterQueue into this interpreter's environment. Returns 0 when
    preflight() passes afterwards."""
    problems = preflight()
    if not problems:
        print("wan deps: all present")
        return 0
    if os.geteuid() != 0:
        print("wan deps: not root, cannot install: " + "; ".join(problems), file=sys.stderr)
        return 1
    tools_missing = any("not found" in p for p in problems)
    nfq_missing = any("NetfilterQueue" in p for p in problems)
    if tools_missing or nfq_missing:
        packages = ["iptables", "ethtool", "iproute2", "libnetfilter-queue-dev", "build-essential"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if subprocess.run(["apt-get", "install", "-y", "-q", *packages], env=env).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env)
            subprocess.run(["apt-get", "install", "-y", "-q", *packages], env=env)
    if nfq_missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "NetfilterQueue"])
    problems = preflight()
    print("wan deps: " + ("ready" if not problems else "still missing: " + "; ".join(problems)))
    return 0 if not problems else 1


# ---------------------------------------------------------------- the delay daemon

def delayd(queue: int, delay_ms: float) -> None:
    """Hold every queued packet `delay_ms`, then accept it; order is kept (constant delay, FIFO)."""
    from netfilterqueue import COPY_META, NetfilterQueue

    delay = delay_ms / 1000.0
    held: list = []  # (due, seq, packet)
    seq = 0

    def on_packet(pkt) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(held, (time.monotonic() + delay, seq, pkt))

    nfq = NetfilterQueue()
    nfq.bind(queue, on_packet, max_len=100_000, mode=COPY_META, range=0)
    fd = nfq.get_fd()
    stop = False

    def halt(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, halt)
    signal.signal(signal.SIGINT, halt)
    try:
        while not stop:
            now = time.monotonic()
            while held and held[0][0] <= now:
                heapq.heappop(held)[2].accept()
            timeout = max(0.0, held[0][0] - now) if held else 0.5
            try:
                ready, _, _ = select.select([fd], [], [], timeout)
            except InterruptedError:
                continue
            if ready:
                nfq.run(block=False)
    finally:
        for _, _, pkt in held:
            with contextlib.suppress(Exception):  # shutting down
                pkt.accept()
        nfq.unbind()


# ---------------------------------------------------------------- link up / down

class Wan:
    """Context manager: the emulated link is up inside `with`, and torn down on exit, error or signal."""

    def __init__(self, rtt_ms: float, loss: float = 0.0, cc: str = "bbr"):
        self.rtt_ms, self.loss, self.cc = rtt_ms, loss, cc
        self.daemon: subprocess.Popen | None = None

    def __enter__(self) -> Wan:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> None:
        problems = preflight()
        if problems:
            raise RuntimeError("WAN emulation cannot run here: " + "; ".join(problems))
        down()  # leftovers of an earlier run
        sh("ip", "netns", "add", MID)
        sh("ip", "netns", "add", FAR)
        sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", MIDH_IF)
        sh("ip", "link", "set", MIDH_IF, "netns", MID)
        sh("ip", "link", "add", MIDF_IF, "netns", MID, "type", "veth", "peer", "name", FAR_IF, "netns", FAR)
        sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", HOST_IF)
        sh("ip", "link", "set", HOST_IF, "up")
        for ns, ifname, addr in ((MID, MIDH_IF, MIDH_IP), (MID, MIDF_IF, MIDF_IP), (FAR, FAR_IF, FAR_IP)):
            sh("ip", "addr", "add", f"{addr}/24", "dev", ifname, netns=ns)
            sh("ip", "link", "set", ifname, "up", netns=ns)
            sh("ip", "link", "set", "lo", "up", netns=ns)
        for ns, ifname in ((None, HOST_IF), (MID, MIDH_IF), (MID, MIDF_IF), (FAR, FAR_IF)):
            sh("ethtool", "-K", ifname, "tso", "off", "gso", "off", "gro", "off", check=False, netns=ns)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=MID)
        self.set_cc(self.cc)
        # Loss first (dropped packets are not delayed), then the delay queue; both directions.
        for src_if, dst_if in ((MIDF_IF, MIDH_IF), (MIDH_IF, MIDF_IF)):
            if self.loss > 0:
                sh("iptables", "-A", "FORWARD", "-i", src_if, "-o", dst_if, "-m", "statistic", "--mode", "random",
                   "--probability", f"{self.loss}", "-j", "DROP", netns=MID)
            if self.rtt_ms > 0:
                sh("iptables", "-A", "FORWARD", "-i", src_if, "-o", dst_if, "-j", "NFQUEUE",
                   "--queue-num", str(QUEUE), netns=MID)
        if self.rtt_ms > 0:
            self.daemon = subprocess.Popen(
                ["ip", "netns", "exec", MID, sys.executable, str(Path(__file__).resolve()), "delayd",
                 "--queue", str(QUEUE), "--delay-ms", str(self.rtt_ms / 2)],
                stdin=subprocess.DEVNULL, start_new_session=True)
            PIDFILE.write_text(str(self.daemon.pid))
            time.sleep(0.5)
            if self.daemon.poll() is not None:
                raise RuntimeError(f"delay daemon exited with {self.daemon.returncode}")
        self.verify()

    def set_cc(self, cc: str) -> None:
        """Congestion control on both ends' routes across the link (the far end sends the GET data)."""
        self.cc = cc
        sh("ip", "route", "replace", FAR_NET, "via", MIDH_IP, "dev", HOST_IF, "congctl", cc)
        sh("ip", "route", "replace", "default", "via", MIDF_IP, "dev", FAR_IF, "congctl", cc, netns=FAR)
        sh("ip", "route", "replace", HOST_NET, "via", MIDF_IP, "dev", FAR_IF, "congctl", cc, netns=FAR)

    def verify(self) -> float:
        """Time TCP connects to a closed port across the link (the RST comes back after one RTT); returns the
        smallest (ms). Fails if nothing comes back at all (the link does not pass traffic)."""
        import socket

        rtts = []
        for _ in range(5):
            with socket.socket() as sock:
                sock.settimeout(3.0)
                t0 = time.monotonic()
                try:
                    sock.connect((FAR_IP, 9))
                except ConnectionRefusedError:
                    rtts.append((time.monotonic() - t0) * 1000)
                except OSError:
                    pass
                else:
                    rtts.append((time.monotonic() - t0) * 1000)
        if not rtts:
            raise RuntimeError("no answer across the emulated link")
        self.measured_rtt_ms = round(min(rtts), 1)
        return self.measured_rtt_ms

    def down(self) -> None:
        from dth_ray.locals3 import stop_process  # here: the delay daemon runs this file without dth_ray

        stop_process(self.daemon, 5)
        self.daemon = None
        down()

    def describe(self) -> dict:
        return {"rtt_ms": self.rtt_ms, "loss": self.loss, "cc": self.cc,
                "measured_rtt_ms": getattr(self, "measured_rtt_ms", None),
                "loss_rule": "iptables -m statistic --mode random in mid-ns FORWARD, each direction",
                "delay": f"NFQUEUE daemon, {self.rtt_ms / 2:g} ms each direction"}


def down() -> None:
    """Remove everything `Wan.up` creates, whatever state it was left in (idempotent)."""
    if PIDFILE.exists():
        try:
            pid = int(PIDFILE.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}").exists() else b""
            if b"delayd" in cmdline:
                os.kill(pid, signal.SIGTERM)
                for _ in range(50):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.1)
                else:
                    os.kill(pid, signal.SIGKILL)
        except (ValueError, OSError):
            pass
        PIDFILE.unlink(missing_ok=True)
    for ns in (FAR, MID):
        # Processes still inside a namespace (a server left over) would keep its veths alive.
        pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pid), signal.SIGKILL)
        sh("ip", "netns", "del", ns, check=False)
    sh("ip", "link", "del", HOST_IF, check=False)  # normally gone with its peer; routes go with it


# ---------------------------------------------------------------- probe: one big GET per congestion control

def probe(rtt_ms: float, loss: float, ccs: list[str], mib: int) -> list[dict]:
    """Serve one `mib` MiB file over plain HTTP in the far namespace and time one curl GET of it per cc."""
    import tempfile

    out = []
    with tempfile.TemporaryDirectory(prefix="dthwan-probe-") as tmp:
        (Path(tmp) / "blob.bin").write_bytes(os.urandom(mib * 1024 * 1024))
        with Wan(rtt_ms, loss, ccs[0]) as wan:
            server = subprocess.Popen(["ip", "netns", "exec", FAR, sys.executable, "-m", "http.server", "8077",
                                       "--bind", FAR_IP, "--directory", tmp],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                time.sleep(1.0)
                for cc in ccs:
                    wan.set_cc(cc)
                    t0 = time.monotonic()
                    res = subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", "30", "-w",
                                          "%{size_download} %{http_code}", f"http://{FAR_IP}:8077/blob.bin"],
                                         capture_output=True, text=True, check=False)
                    wall = time.monotonic() - t0
                    size, code = (res.stdout.split() + ["0", "0"])[:2]
                    row = {"rtt_ms": rtt_ms, "loss": loss, "cc": cc, "bytes": int(size), "http": code,
                           "wall_s": round(wall, 2), "mb_per_s": round(int(size) / wall / 1e6, 2),
                           "complete": int(size) == mib * 1024 * 1024, "measured_rtt_ms": wan.measured_rtt_ms}
                    print(row, flush=True)
                    out.append(row)
            finally:
                server.terminate()
                server.wait(5)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("delayd")
    d.add_argument("--queue", type=int, default=QUEUE)
    d.add_argument("--delay-ms", type=float, required=True)
    for name in ("up", "probe"):
        p = sub.add_parser(name)
        p.add_argument("--rtt-ms", type=float, default=50)
        p.add_argument("--loss", type=float, default=0.0)
        p.add_argument("--cc", default="bbr")
        if name == "probe":
            p.add_argument("--mib", type=int, default=64)
    sub.add_parser("down")
    sub.add_parser("preflight", help="say what the emulation lacks here (exit 1 if anything)")
    sub.add_parser("deps", help="install what it lacks (root, Debian: apt-get and pip)")
    args = parser.parse_args()
    if args.cmd == "preflight":
        problems = preflight()
        print("ready" if not problems else "missing: " + "; ".join(problems))
        return 1 if problems else 0
    if args.cmd == "deps":
        return deps()
    if args.cmd == "delayd":
        delayd(args.queue, args.delay_ms)
    elif args.cmd == "down":
        down()
    elif args.cmd == "up":
        wan = Wan(args.rtt_ms, args.loss, args.cc)
        wan.up()
        wan.daemon = None  # leave it running; `down` finds it through the pid file
        print(f"up: {wan.describe()}; source side at {FAR_IP} in netns {FAR}")
    elif args.cmd == "probe":
        probe(args.rtt_ms, args.loss, args.cc.split(","), args.mib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
