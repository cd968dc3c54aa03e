"""The `dth-ray` command: Hydra overrides in, a one-line error or a summary and JSON report out."""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import re
import sys
from pathlib import Path

from dth_ray import __version__
from dth_ray.config import StoreType, SyncConfig, register, validate
from dth_ray.errors import ConfigError, DthError

USAGE = """usage: dth-ray COMMAND [key=value ...]

commands:
  sync      copy what differs from source to destination (Hydra overrides, e.g. source=oss source.bucket=b)
  plan      a dry run that estimates duration and cost (plan.nodes, plan.node_throughput, plan.* prices)
  verify    compare destination with source (verify.mode=fast|full, verify.strict=true fails on extras)
  status    a job's progress (job=NAME or the sync's store settings); prefix=P: is everything under P
            at the destination and checked? key=K: what is known about one key
  watch     keep in sync: events from SQS (events=sqs events.queue_url=...) and a scheduled batch sync
            (schedule.interval=1h or schedule.cron='0 * * * *'); stops cleanly on SIGTERM/SIGINT
  events setup  create the SQS queue, dead-letter queue and redrive policy (events.queue_name=N);
            print the least-privilege IAM policies
  dashboard create  create the CloudWatch dashboard of a job's metrics (job=NAME, metrics.*)
  alerts setup  create an SNS alarm topic with an email subscription (alerts.email=ADDR); print its ARN
  demo      start two local S3 endpoints, seed them, sync, verify every byte
  version   print the version

examples:
  dth-ray sync source=oss source.bucket=logs source.region=cn-hangzhou source.credentials=secret:drh-credentials \\
      destination.bucket=lake destination.region=us-west-2 report=report.json
  dth-ray sync source=local source.path=/data destination.bucket=lake dry_run=true

Every config key is listed in the README's config table.
"""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def conf_dir() -> str:
    """The Hydra config folder: $DTH_RAY_CONF; else the repo's top-level conf/ (a source checkout or an
    editable install); else the copy a wheel ships as dth_ray/conf (see setup.py)."""
    env = os.environ.get("DTH_RAY_CONF")
    if env:
        return env
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").is_file() and (repo / "conf" / "config.yaml").is_file():
        return str(repo / "conf")
    return str(importlib.resources.files("dth_ray").joinpath("conf"))


def _friendly(text: str) -> str:
    """Hydra's common messages, shortened to name the bad value."""
    match = re.search(r"Could not find '([\w.-]+)/([^']+)'.*Available options in '[\w.-]+': ([\w .-]+?) Config", text)
    if match:
        return f"{match.group(1)}={match.group(2)} is not a known option ({', '.join(match.group(3).split())})"
    match = re.search(r"Could not override '([^']+)'.*Key '([^']+)' not in", text)
    if match:
        return f"{match.group(1)} is not a config key (see the README's config table)"
    match = re.search(r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+).*full_key: ([\w.]+)", text)
    if match:
        return f"{match.group(3)}={match.group(1)!r} is not a valid {match.group(2)}"
    match = re.search(r"Invalid value '([^']*)', expected one of \[([^\]]*)\].*full_key: ([\w.]+)", text)
    if match:
        return f"{match.group(3)}={match.group(1)!r} must be one of {match.group(2)}"
    return text


def _one_line(exc: BaseException) -> str:
    """The most specific message in an exception chain, folded onto one line."""
    messages = []
    while exc is not None:
        text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
        if text:
            messages.append(text)
        exc = exc.__cause__ or exc.__context__
    return _friendly(" — ".join(dict.fromkeys(messages[:3]))) or "invalid configuration"


def load_config(overrides: list[str], check: bool = True) -> SyncConfig:
    """Compose conf/ with the overrides and validate (`check`). Raises ConfigError with a one-line message."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=conf_dir(), version_base=None, job_name="dth_ray"):
            cfg = compose("config", overrides=overrides)
        obj = OmegaConf.to_object(cfg)
    except Exception as exc:  # Hydra and OmegaConf raise many types; all mean a bad override
        raise ConfigError(_one_line(exc)) from None
    finally:
        GlobalHydra.instance().clear()
    if check:
        validate(obj)
    return obj


def _summary(report: dict) -> str:
    o, b = report["objects"], report["bytes"]
    if report.get("dry_run"):
        return (f"dry run: {o['listed']:,} listed, would copy {o['would_copy']:,} objects "
                f"({b['would_copy'] / 1e6:,.1f} MB), {o['skipped']:,} skipped, nothing written")
    line = (f"{report['status']}: {o['listed']:,} listed, {o['copied']:,} copied, {o['skipped']:,} skipped, "
            f"{o['failed']:,} failed; {b['copied'] / 1e6:,.1f} MB in {report['duration_s']:.1f}s "
            f"({report['bytes_per_s'] / 1e6:,.1f} MB/s, {report['objects_per_s']:,.0f} objects/s)")
    for failure in report["failures"][:5]:
        line += f"\n  failed: {failure['key']!r}: {failure['error']}"
    for error in report.get("errors", [])[:5]:
        line += f"\n  error: {error}"
    return line


def write_report(path: str, report: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    os.replace(tmp, path)


def cmd_sync(overrides: list[str]) -> int:
    from dth_ray.runtime.driver import run_sync, terminal_progress

    cfg = load_config(overrides)
    _setup_logging(cfg)
    _check_report_dir(cfg)
    if cfg.source.type == StoreType.maxcompute:  # a table export (dth_ray/maxcompute), not an object listing
        from dth_ray.maxcompute.runner import run_maxcompute, summary_line

        report = run_maxcompute(cfg)
        if cfg.report:
            write_report(cfg.report, report)
        print(summary_line(report))
        return EXIT_OK if report["status"] == "succeeded" else EXIT_FAILED
    show = cfg.progress == "on" or (cfg.progress == "auto" and sys.stderr.isatty())
    report = run_sync(cfg, on_progress=terminal_progress if show else None)
    if show:
        sys.stderr.write("\n")
    if cfg.report:
        write_report(cfg.report, report)
    print(_summary(report))
    return EXIT_OK if report["status"] == "succeeded" else EXIT_FAILED


def _setup_logging(cfg: SyncConfig) -> None:
    from dth_ray.ops.logs import setup_logging  # log_level, log.format=text|json, credential scrubbing

    setup_logging(cfg)


def _check_report_dir(cfg: SyncConfig) -> None:
    if cfg.report:
        report_dir = os.path.dirname(os.path.abspath(cfg.report))
        if not os.path.isdir(report_dir):
            raise ConfigError(f"report={cfg.report!r}: folder {report_dir!r} does not exist")


def cmd_plan(overrides: list[str]) -> int:
    from dth_ray.config import parse_size
    from dth_ray.plan.estimate import Rates, estimate
    from dth_ray.plan.parts import choose_part_size
    from dth_ray.runtime.driver import run_sync
    from dth_ray.stores.s3 import FEATURES as S3_FEATURES

    cfg = load_config([*overrides, "dry_run=true"])
    _setup_logging(cfg)
    _check_report_dir(cfg)
    p = cfg.plan
    rates = Rates(p.nodes, parse_size(p.node_throughput, "plan.node_throughput"), p.node_objects_per_s,
                  p.egress_per_gb, p.put_per_1000, p.get_per_1000, p.dynamodb_write_per_million,
                  p.instance_per_hour)
    try:
        estimate(0, 0, 0, 0, 1, rates)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    report = run_sync(cfg)
    o, b = report["objects"], report["bytes"]
    requested = None if cfg.transfer.part_size == "auto" else parse_size(cfg.transfer.part_size, "transfer.part_size")
    typical = b["would_copy_multipart"] // max(1, o["would_copy_multipart"])
    part_size = choose_part_size(typical, S3_FEATURES, requested)
    plan = estimate(o["would_copy"], b["would_copy"], o["would_copy_multipart"], b["would_copy_multipart"],
                    part_size, rates)
    out = {"status": report["status"], "job": report["job"], "source": report["source"],
           "destination": report["destination"], "listed": o["listed"], "listed_bytes": b["listed"],
           "would_skip": o["skipped"], "estimate": plan,
           "rates": {"node_bytes_per_s": rates.node_bytes_per_s, "node_objects_per_s": rates.node_objects_per_s,
                     "egress_per_gb": p.egress_per_gb, "put_per_1000": p.put_per_1000,
                     "get_per_1000": p.get_per_1000, "dynamodb_write_per_million": p.dynamodb_write_per_million,
                     "instance_per_hour": p.instance_per_hour},
           "listing_duration_s": report["duration_s"]}
    if cfg.report:
        write_report(cfg.report, out)
    print(f"plan: {o['listed']:,} listed; would copy {plan['objects']:,} objects, {plan['bytes'] / 1e9:,.2f} GB; "
          f"on {plan['nodes']} node(s) ≈ {plan['duration_s'] / 3600:,.2f} h; cost ≈ ${plan['cost_usd_total']:,.2f} "
          + " ".join(f"({k} ${v:,.2f})" for k, v in plan["cost_usd"].items()))
    return EXIT_OK if report["status"] == "succeeded" else EXIT_FAILED


def cmd_verify(overrides: list[str]) -> int:
    from dth_ray.runtime.verify import run_verify

    cfg = load_config(overrides)
    _setup_logging(cfg)
    _check_report_dir(cfg)
    report = run_verify(cfg)
    if cfg.report:
        write_report(cfg.report, report)
    c = report["counts"]
    print(f"verify {report['mode']}: {report['status']}: {c['checked']:,} checked, {c['matched']:,} match, "
          f"{c['missing_on_destination']:,} missing on destination, {c['differ']:,} differ, "
          f"{c['extra_on_destination']:,} extra on destination ({c['read_objects']:,} objects read)")
    for kind in ("missing_on_destination", "differ", "extra_on_destination"):
        for key in report[kind][:20]:
            print(f"  {kind}: {key}")
    for error in report["errors"][:5]:
        print(f"  error: {error}")
    return EXIT_OK if report["status"] == "ok" else EXIT_FAILED


def cmd_status(args: list[str]) -> int:
    from dth_ray.runtime import status

    picked = {k: v for k, _, v in (a.partition("=") for a in args if a.startswith(("prefix=", "key=")))}
    overrides = [a for a in args if not a.startswith(("prefix=", "key="))]
    by_job = not picked and any(a.startswith("job=") for a in overrides)
    cfg = load_config(overrides, check=not by_job)
    _setup_logging(cfg)
    if "key" in picked:
        out = status.key_status(cfg, picked["key"])
        ok = out["in_sync"]
    elif "prefix" in picked:
        out = status.prefix_status(cfg, picked["prefix"])
        ok = out["complete"]
        c = out["counts"]
        print(f"prefix {out['prefix']!r}: {'complete' if ok else 'NOT complete'}: {c['objects']:,} objects, "
              f"{c['present']:,} present, {c['missing']:,} missing, {c['differ']:,} differ, "
              f"{c['unchecked']:,} unchecked", file=sys.stderr)
    else:
        out = status.job_status(cfg)
        ok = out["state"] == "succeeded"
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return EXIT_OK if ok else EXIT_FAILED


def cmd_watch(overrides: list[str]) -> int:
    """The long-running service (dth_ray/sync/watch.py); SIGTERM/SIGINT stop it cleanly, a second one
    interrupts at once."""
    import signal

    from dth_ray.sync.watch import WatchService

    cfg = load_config(overrides)
    _setup_logging(cfg)
    logging.getLogger("dth_ray.sync.watch").setLevel(min(logging.INFO, logging.getLogger().level))
    _check_report_dir(cfg)
    service = WatchService(cfg)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        report = service.run(handle_signals=True)
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
    m, lat = report["messages"], report["latency_s"]
    print(f"watch stopped ({report['stop_reason'] or 'done'}): {m.get('received', 0):,} messages, "
          f"{report['events'].get('reconciled', 0):,} keys reconciled {report['outcomes']}, "
          f"{m.get('poison', 0):,} poison, latency p95 {lat.get('p95', '-')}s; scans {report['scans'].get('runs', 0)} "
          f"run, {report['scans'].get('skipped', 0)} skipped")
    return EXIT_OK


def cmd_events(args: list[str]) -> int:
    """`events setup`: queue + dead-letter queue + redrive policy (+ alarm), and the IAM policies, as JSON."""
    from dth_ray.config import validate_ops, validate_sync_settings
    from dth_ray.sync.sqs import setup

    if not args or args[0] != "setup":
        raise ConfigError("usage: dth-ray events setup events.queue_name=NAME [events.region=R] [events.endpoint=URL] "
                          "[alerts.sns_topic_arn=ARN] [source.bucket=B (an S3 source whose notifications go there)]")
    cfg = load_config(args[1:], check=False)
    validate_sync_settings(cfg)
    validate_ops(cfg)
    _setup_logging(cfg)
    _check_report_dir(cfg)
    s3_bucket = cfg.source.bucket if cfg.source.type == StoreType.s3 else ""
    out = setup(cfg.events, s3_bucket, cfg.alerts.sns_topic_arn)
    if cfg.report:
        write_report(cfg.report, out)
    print(json.dumps(out, indent=2))
    print(f"queue ready: {out['queue_url']} (dead letters after {out['redrive_policy']['maxReceiveCount']} receives: "
          f"{out['dead_letter_queue_url']}). Attach policies.forwarder to the identity whose keys the OSS "
          f"forwarder uses (it may only sqs:SendMessage to this queue).", file=sys.stderr)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return EXIT_OK if args else EXIT_USAGE
    command, rest = args[0], args[1:]
    try:
        if command == "sync":
            return cmd_sync(rest)
        if command == "plan":
            return cmd_plan(rest)
        if command == "verify":
            return cmd_verify(rest)
        if command == "status":
            return cmd_status(rest)
        if command == "watch":
            return cmd_watch(rest)
        if command == "events":
            return cmd_events(rest)
        if command in ("dashboard", "alerts"):  # dth_ray/ops: CloudWatch dashboard, SNS alarm topic
            from dth_ray.ops.commands import cmd_alerts, cmd_dashboard

            return cmd_dashboard(rest) if command == "dashboard" else cmd_alerts(rest)
        if command == "demo":
            from dth_ray.demo import run_demo

            return run_demo(rest)
        if command in ("version", "--version"):
            print(f"dth-ray {__version__}")
            return EXIT_OK
        print(f"dth-ray: error: unknown command {command!r} (sync, plan, verify, status, watch, events, demo, version)", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"dth-ray: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DthError as exc:
        print(f"dth-ray: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("dth-ray: interrupted", file=sys.stderr)
        return 130
    finally:
        if "ray" in sys.modules:  # only commands that ran Ray imported it
            from dth_ray.runtime.driver import stop_ray

            stop_ray()


if __name__ == "__main__":
    sys.exit(main())
