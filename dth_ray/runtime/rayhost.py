"""Starting and stopping Ray for a command: the embedded cluster on this machine, or joining one.

Called by the scheduler only. `ray.init` must run on the main thread (it installs signal handlers).

The embedded cluster is closed to everyone but this run: token authentication is on whatever RAY_AUTH_MODE
says, its token file is 0600, every Ray process listens on 127.0.0.1 only, and its session folders (logs,
unix sockets; Ray makes them 0777) sit inside a 0700 folder of ours.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import stat
import sys
import tempfile

from dth_ray.files import private_dir, private_file
from dth_ray.settings import RuntimeSettings

log = logging.getLogger(__name__)

_owned = False  # this process started the embedded cluster (stop_ray ends only that one)
_relaying = False  # ... and without a log monitor: the scheduler relays the actors' log lines
_OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray's floor is 75 MiB
LOOPBACK = "127.0.0.1"
AUTH_MODE_VAR = "RAY_AUTH_MODE"


def ray_is_up() -> bool:
    """Ray imported and initialised in this process. Never imports Ray: that costs a quarter second, and a
    first import racing one in another thread fails (the driver lane asks while the main thread starts Ray);
    a module still being imported has no `is_initialized` yet."""
    is_initialized = getattr(sys.modules.get("ray"), "is_initialized", None)
    return is_initialized is not None and is_initialized()


def start_ray(runtime: RuntimeSettings) -> bool:
    """Start the embedded cluster (`runtime.address=local`) or join one; no-op when Ray is already up.
    Returns True when this call started it."""
    global _owned
    if ray_is_up():
        return False
    if runtime.embedded:
        _require_token_auth()  # before Ray is imported: it reads the mode into its config then
        _private_token()
    import ray

    kwargs: dict = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=True,
                        configure_logging=True)
    if runtime.embedded:
        kwargs["address"] = "local"
        kwargs["_node_ip_address"] = LOOPBACK
        kwargs["_temp_dir"] = temp_dir = _private_temp_dir()
        _reap_orphans(temp_dir)
        # Ray starts workers at nice 15; our transfer actors are the workload, not background tasks (Ray's
        # job manager resets it to 0 for submitted jobs too). Measured: at 15, a CPU-bound host starves them.
        # Lean: the actors are the only workers it needs (no idle workers prestarted for tasks that never
        # come), and no bytes travel through the object store (the smallest Ray allows). Measured on 2 cores:
        # 8 processes instead of 10, 420 MB PSS instead of 510, 3.3 s of CPU instead of 4.5 to start.
        kwargs["_system_config"] = {"worker_niceness": 0, "enable_worker_prestart": False,
                                    "prestart_worker_first_driver": False}
        kwargs["object_store_memory"] = _OBJECT_STORE_BYTES
        if runtime.num_cpus:
            kwargs["num_cpus"] = runtime.num_cpus
        if runtime.metrics_port:
            kwargs["_metrics_export_port"] = runtime.metrics_port
    else:
        kwargs["address"] = runtime.address
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    lean = runtime.embedded and runtime.autoscale != "on"  # on: a test of the autoscaler on this machine
    if lean:
        kwargs["runtime_env"] = {"worker_process_setup_hook": f"{__name__}.lean_worker"}
    with _loopback_node() if runtime.embedded else contextlib.nullcontext(), \
            _lean_node() if lean else contextlib.nullcontext():
        ray.init(**kwargs)
    if lean:
        _serialization_without_arrow()
    _owned = runtime.embedded
    return True


def _require_token_auth() -> None:
    """Token authentication for the embedded cluster, also when the environment turns it off (Ray >= 2.59
    turns it on for local clusters only while RAY_AUTH_MODE is unset): only this run's processes use it.
    Ray reads the mode into its config at import, so a Ray imported earlier re-reads it, as Ray's own
    token set-up does."""
    mode = os.environ.get(AUTH_MODE_VAR)
    if mode == "token":
        return
    if mode is not None:
        log.warning("%s=%s is ignored for the embedded Ray: it always requires its token", AUTH_MODE_VAR, mode)
    os.environ[AUTH_MODE_VAR] = "token"
    raylet = sys.modules.get("ray._raylet")
    if raylet is not None:
        raylet.Config.initialize("")


def _private_token() -> None:
    """The token where Ray looks for it (RAY_AUTH_TOKEN, else RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token),
    0600. Ray creates a missing file with the umask's mode (0644: any local user could read it and use the
    cluster), so create it first, the way Ray does (256 random bits in hex), and tighten one Ray made.
    Linked into place, so a concurrent run never sees it empty nor replaces a token in use."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    if os.path.exists(path):
        private_file(path)
        return
    folder = private_dir(os.path.dirname(path))
    fd, tmp = tempfile.mkstemp(prefix=".auth_token-", dir=folder)  # mkstemp: 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        os.link(tmp, path)
    except FileExistsError:
        pass  # another run made it meanwhile: use that one
    finally:
        os.unlink(tmp)


def _private_temp_dir() -> str:
    """Ray's temp folder for the embedded cluster: `<RAY_TMPDIR or TMPDIR or /tmp>/dth-ray-<uid>/ray`. Ray
    makes its own folder and the session folders in it 0777 (logs, and the raylet's and object store's unix
    sockets, which take no token); ours around them is 0700, so other local users cannot reach them. A
    `dth-ray-<uid>` that is not our own folder (another user made it first) is passed over for a fresh one."""
    base = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux")
                                            else None) or "/tmp"
    root = os.path.join(base, f"dth-ray-{os.geteuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, 0o700)
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        root = tempfile.mkdtemp(prefix="dth-ray-", dir=base)
    os.chmod(root, 0o700)
    return os.path.join(root, "ray")


def _reap_orphans(temp_dir: str) -> list[int]:
    """Stop what a run that was killed outright (SIGKILL, the OOM killer) left of its embedded Ray in our
    folder: Ray's dashboard and runtime-env agents outlive their raylet and GCS (ray#52385, ray#59162),
    ~130 MB per killed run, forever. A session whose raylet and GCS are both gone is over; its Ray processes
    (titled `ray::…`, as agents and workers are: never a driver) with files open in it are killed. Only this
    user's processes are looked at, and only sessions in our own 0700 folder. Returns the pids killed."""
    prefix = temp_dir.rstrip("/") + "/"
    sessions: dict[str, set[int]] = {}  # session folder -> Ray processes with files open in it
    live: set[str] = set()  # sessions whose raylet or GCS still runs
    me = os.geteuid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            if os.stat(f"/proc/{pid}").st_uid != me:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                title = handle.read().split(b"\0", 1)[0]
            with open(f"/proc/{pid}/comm") as handle:
                core = handle.read().strip() in ("raylet", "gcs_server")
            held = set()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith(prefix):
                        held.add(target[len(prefix):].split("/", 1)[0])
        except OSError:
            continue  # gone meanwhile, or not ours to read
        for session in held:
            if core:
                live.add(session)
            elif title.startswith(b"ray::"):
                sessions.setdefault(session, set()).add(pid)
    killed = []
    for session, pids in sessions.items():
        if session.startswith("session_") and session not in live:
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
    if killed:
        log.info("stopped %d Ray processes left by an embedded Ray whose run was killed", len(killed))
    return killed


@contextlib.contextmanager
def _loopback_node():
    """Put the embedded node on 127.0.0.1, so GCS, raylet, workers and agents listen there only (measured
    with Ray 2.60: on its own every one listens on all interfaces). Ray rewrites a loopback
    `_node_ip_address` to the machine's routable address unless its ENABLE_RAY_CLUSTER constant is off (the
    macOS/Windows default, read from the environment when Ray is imported, so it is switched here, for the
    start-up only: the node's processes get the address on their command lines)."""
    try:
        import ray._private.ray_constants as ray_constants
    except ImportError:
        ray_constants = None
    if ray_constants is None or not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        log.warning("this Ray cannot be bound to 127.0.0.1: the embedded cluster listens on every interface "
                    "(its token still refuses unauthenticated callers)")
        yield
        return
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


@contextlib.contextmanager
def _without_arrow_serializers():
    """Ray registers serializers for Arrow tables in every process it connects, importing pyarrow (and numpy)
    when installed: ~20 MB PSS per process, measured with Ray 2.60. No Arrow data crosses actors here (only
    metadata does), so the import is refused while Ray sets up serialization, and allowed again after it (the
    MaxCompute export imports pyarrow itself). Ray skips those serializers when the import fails."""
    if "pyarrow" in sys.modules:
        yield
        return
    sys.modules["pyarrow"] = None  # makes `import pyarrow` raise ModuleNotFoundError
    try:
        yield
    finally:
        if "pyarrow" in sys.modules and sys.modules["pyarrow"] is None:
            del sys.modules["pyarrow"]


def lean_worker() -> None:
    """Every worker process of the lean embedded cluster runs this first (Ray's `worker_process_setup_hook`):
    its actor's log lines go to the driver through the scheduler (the node has no log monitor), and its
    serialization is set up without Arrow."""
    from dth_ray.ops.logs import relay_to_driver

    relay_to_driver()
    _serialization_without_arrow()


def _serialization_without_arrow() -> None:
    """This process's Ray serialization set up now, while pyarrow cannot be imported (Ray makes it on first
    use and keeps it: in the driver, at the first actor it starts)."""
    try:
        import ray._private.worker as ray_worker

        with _without_arrow_serializers():
            ray_worker.global_worker.get_serialization_context()
    except (ImportError, AttributeError) as exc:  # another Ray: it imports pyarrow as it always did
        log.debug("serialization left to Ray: %s", type(exc).__name__)


@contextlib.contextmanager
def _lean_node():
    """Start the embedded node without Ray's autoscaler monitor and log monitor, two Python daemons of ~50 MB
    PSS each. A one-machine cluster has nothing to scale (the run asks it for nothing: runtime.autoscale is
    off there); the actors' log lines reach the driver through the scheduler instead (`lean_worker`,
    ops/logs.relay_to_driver). `ray.init` has no options for either; its RayParams fields `no_monitor` and
    `include_log_monitor` are what `ray start --no-monitor --include-log-monitor=False` set (Ray's own
    flags), so they are defaulted for this start-up only. A Ray without those fields starts its full head,
    and its log monitor copies the actors' lines as before. Measured with Ray 2.60 (driver, Ray and two idle
    actors): 558 MiB PSS without the autoscaler monitor instead of 606, 516 without both."""
    global _relaying
    try:
        import inspect

        import ray._private.parameter as parameter

        known = {"no_monitor", "include_log_monitor"} <= set(inspect.signature(parameter.RayParams.__init__).parameters)
    except (ImportError, AttributeError, TypeError, ValueError):
        known = False
    if not known:
        log.info("this Ray cannot leave out its monitors: the embedded cluster starts them")
        yield
        return
    original = parameter.RayParams.__init__

    def lean_init(self, *args, **kwargs):
        kwargs.setdefault("no_monitor", True)
        kwargs.setdefault("include_log_monitor", False)
        original(self, *args, **kwargs)

    parameter.RayParams.__init__ = lean_init
    try:
        yield
        _relaying = True
    finally:
        parameter.RayParams.__init__ = original


def relays_logs() -> bool:
    """Whether the actors' log lines come through the scheduler (the embedded node runs no log monitor)."""
    return _relaying and ray_is_up()


def owns_ray() -> bool:
    return _owned and ray_is_up()


def stop_ray() -> None:
    """End the embedded cluster this process started, without Ray's exit-time waits; a cluster we only joined
    is left alone. Call only once no other thread of this process is inside a Ray call.

    Ray's own exit hook sleeps 0.5 s and gives the autoscaler monitor (idle on an embedded cluster, and slow
    to honour SIGTERM) a full second: 1.5 s of every short run.
    """
    global _owned, _relaying
    if not _owned or not ray_is_up():
        return
    import ray

    _owned = _relaying = False
    node = getattr(ray._private.worker, "_global_node", None)
    for info in (node.all_processes.get("monitor", []) if node is not None else []):
        info.process.kill()
    ray.shutdown()
