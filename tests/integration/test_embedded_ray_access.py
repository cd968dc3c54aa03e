"""The embedded Ray a run starts refuses callers without its token and listens on loopback only."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile

import grpc
import pytest
from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc, node_manager_pb2, node_manager_pb2_grpc

from tests.integration.helpers import run_on_own_ray

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The embedded cluster as `dth-ray sync` starts it (runtime.address=local), in its own process so it does not
# meet the test session's Ray; it prints its addresses, then waits for a line on stdin to stop.
HOST = r"""
import json, sys
from dth_ray.runtime.rayhost import start_ray, stop_ray
from dth_ray.settings import RuntimeSettings

start_ray(RuntimeSettings(autoscale=sys.argv[1] if len(sys.argv) > 1 else "auto"))
import ray

node = ray.nodes()[0]
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "raylet_port": node["NodeManagerPort"],
                  "session_dir": ray._private.worker._global_node.get_session_dir_path()}), flush=True)
sys.stdin.readline()
stop_ray()
"""


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _other_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (what another host would connect to)."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10).stdout.split()
    except OSError:
        return []
    return [a for a in out if ipaddress.ip_address(a).version == 4 and not ipaddress.ip_address(a).is_loopback]


def _descendants(root_pid: int) -> set[int]:
    parent_of = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent_of[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    found, grew = {root_pid}, True
    while grew:
        more = {pid for pid, parent in parent_of.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _address(hex_ip: str) -> str:
    """/proc/net/tcp{,6} addresses: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_ip)
    return str(ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))))


def _listeners(root_pid: int) -> list[tuple[str, int]]:
    """(ip, port) of every TCP socket listening in `root_pid` or its descendants (read from /proc)."""
    ours = set().union(*(_socket_inodes(pid) for pid in _descendants(root_pid)))
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and inode in ours:  # 0A: LISTEN
                    ip, port = local.split(":")
                    out.append((_address(ip), int(port, 16)))
    return out


@pytest.fixture
def embedded_ray(tmp_path, request):
    """The embedded Ray in a subprocess, with a fresh HOME (its token) and Ray temp folder, and RAY_AUTH_MODE
    set to `disabled` in its environment (the embedded cluster must require its token anyway). Indirect
    parameter: runtime.autoscale (default auto)."""
    home = tmp_path / "home"
    ray_tmp = tempfile.mkdtemp(prefix="dthra-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), RAY_TMPDIR=ray_tmp, RAY_AUTH_MODE="disabled", PYTHONPATH=REPO)
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as err:  # a file, not a pipe: Ray's start-up output must never block the host
        autoscale = getattr(request, "param", "auto")
        proc = subprocess.Popen([sys.executable, "-c", HOST, autoscale], cwd=REPO, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        line = proc.stdout.readline()
        assert line, stderr.read_text()[-3000:]
        yield proc, json.loads(line), home, ray_tmp
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0, stderr.read_text()[-3000:]
        assert "RAY_AUTH_MODE=disabled is ignored" in stderr.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_embedded_ray_refuses_unauthenticated_callers_and_listens_on_loopback_only(embedded_ray):
    proc, info, home, ray_tmp = embedded_ray
    gcs_host, gcs_port = info["gcs"].rsplit(":", 1)
    assert gcs_host == "127.0.0.1"

    listening = _listeners(proc.pid)
    ports = {port for _, port in listening}
    assert int(gcs_port) in ports and info["raylet_port"] in ports, listening
    assert [entry for entry in listening if not _is_loopback(entry[0])] == [], "every Ray port on loopback only"

    # Another host reaches this machine at its other addresses: nothing listens there.
    others = _other_addresses()
    for ip in others:
        for port in (int(gcs_port), info["raylet_port"]):
            with pytest.raises(ConnectionRefusedError), socket.create_connection((ip, port), timeout=5):
                pass

    # On loopback, RPCs without the token (or with a wrong one) are refused; with it, the same call answers.
    token = (home / ".ray" / "auth_token").read_text().strip()
    with grpc.insecure_channel(f"127.0.0.1:{gcs_port}") as gcs_channel, \
            grpc.insecure_channel(f"127.0.0.1:{info['raylet_port']}") as raylet_channel:
        gcs = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(gcs_channel)
        raylet = node_manager_pb2_grpc.NodeManagerServiceStub(raylet_channel)
        calls = [lambda md: gcs.GetAllNodeInfo(gcs_service_pb2.GetAllNodeInfoRequest(), timeout=20, metadata=md),
                 lambda md: raylet.GetNodeStats(node_manager_pb2.GetNodeStatsRequest(), timeout=20, metadata=md)]
        for call in calls:
            for metadata in ((), (("authorization", "Bearer not-the-token"),)):
                with pytest.raises(grpc.RpcError) as refused:
                    call(metadata)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            call((("authorization", f"Bearer {token}"),))
        assert len(gcs.GetAllNodeInfo(gcs_service_pb2.GetAllNodeInfoRequest(), timeout=20,
                                      metadata=(("authorization", f"Bearer {token}"),)).node_info_list) == 1

    # The token file dth_ray wrote before Ray could (Ray writes it 0644), and the folder around Ray's sessions.
    assert len(token) == 64
    assert stat.S_IMODE((home / ".ray" / "auth_token").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / ".ray").stat().st_mode) == 0o700
    private_root = os.path.join(ray_tmp, f"dth-ray-{os.geteuid()}")
    assert stat.S_IMODE(os.stat(private_root).st_mode) == 0o700
    assert info["session_dir"].startswith(private_root + os.sep)


def _cmdlines(root_pid: int) -> list[str]:
    out = []
    for pid in _descendants(root_pid):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as handle:
            out.append(handle.read().replace(b"\0", b" ").decode(errors="replace"))
    return out


@pytest.mark.parametrize(("embedded_ray", "monitors"), [("auto", 0), ("on", 1)], indirect=["embedded_ray"])
def test_the_embedded_cluster_starts_no_monitors_unless_autoscaling_is_asked_for(embedded_ray, monitors):
    proc, _, _, _ = embedded_ray
    cmdlines = _cmdlines(proc.pid)
    assert any("gcs_server" in c for c in cmdlines) and any("raylet" in c for c in cmdlines), cmdlines
    assert sum("autoscaler/_private/monitor.py" in c for c in cmdlines) == monitors, cmdlines
    assert sum("log_monitor.py" in c for c in cmdlines) == monitors, cmdlines


# A lean embedded cluster with one actor: the actor's lines wait for the driver (no log monitor copies them),
# and neither process imported pyarrow for Ray's Arrow serializers (an actor may still import it itself).
LEAN = r"""
import json, logging, os, sys
from dth_ray.runtime.rayhost import relays_logs, start_ray, stop_ray
from dth_ray.settings import RuntimeSettings

start_ray(RuntimeSettings())
import ray


class Probe:
    def __init__(self):
        from dth_ray.ops.logs import setup_actor_logging
        setup_actor_logging("INFO", "text")
        self.arrow_at_start = "pyarrow" in sys.modules

    def log_lines(self):
        from dth_ray.ops.logs import relayed_lines
        return relayed_lines()

    def look(self):
        logging.getLogger("dth_ray.probe").warning("probe line from pid %d", os.getpid())
        import pyarrow  # noqa: F401 - what the MaxCompute export does
        return {"pid": os.getpid(), "arrow_at_start": self.arrow_at_start}


probe = ray.remote(num_cpus=0)(Probe).remote()
seen = ray.get(probe.look.remote())
lines = ray.get(probe.log_lines.remote())
again = ray.get(probe.log_lines.remote())
with open(f"/proc/{seen['pid']}/maps") as handle:
    seen["arrow_mapped_in_actor"] = "libarrow" in handle.read()
seen.update(relays=relays_logs(), lines=lines, again=again, arrow_in_driver="pyarrow" in sys.modules)
print(json.dumps(seen), flush=True)
stop_ray()
"""


def test_the_lean_embedded_cluster_relays_actor_lines_and_loads_no_arrow_for_ray(tmp_path):
    out = run_on_own_ray(LEAN, tmp_path / "home", timeout_s=180)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["relays"] is True
    assert [line for line in seen["lines"] if f"WARNING dth_ray.probe probe line from pid {seen['pid']}" in line]
    assert seen["again"] == [], "each line is handed over once"
    assert seen["arrow_at_start"] is False and seen["arrow_in_driver"] is False
    assert seen["arrow_mapped_in_actor"] is True, "the actor could still import pyarrow itself"
    assert "probe line" not in out.stderr, "no log monitor copied the actor's stderr to the driver"


def _holding(folder: str) -> set[int]:
    """Processes (alive, not zombies) with a file open under `folder`."""
    found = set()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, IndexError):
            with open(f"/proc/{entry}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}").startswith(folder + "/"):
                        found.add(int(entry))
                        break
    return found


def _wait_for(predicate, timeout_s: float) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_what_a_killed_run_left_of_its_embedded_ray_is_stopped_by_the_next_start(tmp_path):
    """A run killed outright (SIGKILL) leaves Ray's agents running with no raylet (ray#52385, ray#59162); the
    next embedded start in the same folder stops them, and leaves its own cluster alone."""
    ray_tmp = tempfile.mkdtemp(prefix="dthro-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(tmp_path / "home"), RAY_TMPDIR=ray_tmp, PYTHONPATH=REPO)

    def start(name: str) -> tuple[subprocess.Popen, dict]:
        with open(tmp_path / f"{name}.txt", "w") as err:
            proc = subprocess.Popen([sys.executable, "-c", HOST], cwd=REPO, env=env, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=err, text=True)
        line = proc.stdout.readline()
        assert line, (tmp_path / f"{name}.txt").read_text()[-3000:]
        return proc, json.loads(line)

    procs = []
    try:
        first, info = start("first")
        procs.append(first)
        session = info["session_dir"]
        first.kill()
        first.wait()
        left: set[int] = set()

        def only_orphans_left() -> bool:
            nonlocal left
            left = _holding(session)
            return bool(left) and not any(_comm(pid) in ("raylet", "gcs_server") for pid in left)

        assert _wait_for(only_orphans_left, 20), "Ray's agents outlive a killed run (else nothing to clean up)"
        second, info2 = start("second")
        procs.append(second)
        assert _wait_for(lambda: not (_holding(session) & left), 5), "the orphans were stopped"
        assert any(_comm(pid) == "raylet" for pid in _holding(info2["session_dir"])), "its own cluster runs"
        second.stdin.write("\n")
        second.stdin.flush()
        assert second.wait(timeout=60) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for pid in _holding(ray_tmp):  # whatever a failed assertion left behind
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return ""
