"""The `dth-ray` command: Hydra overrides in, a one-line error or a summary and JSON report out."""

from __future__ import annotations

import json
import signal
import sys

from dth_ray.compose import load_config, load_settings
from dth_ray.config import StoreType
from dth_ray.discover import answer, cmd_jobs, cmd_keys
from dth_ray.errors import ConfigError, DthError
from dth_ray.runtime.interrupts import EXIT_BY_SIGNAL, EXIT_PAUSED, Interrupted, Interrupts
from dth_ray.settings import Settings, resolve

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
RESUME_HINT = "interrupted; rerun the same command to resume"


def write_report(path: str, report: dict) -> None:
    from dth_ray.reportfile import write_report as write  # atomic; no .tmp left behind on failure

    write(path, report)


def cmd_sync(overrides: list[str]) -> int:
    from dth_ray.runtime.driver import run_sync
    from dth_ray.runtime.progress import showing_progress

    settings = load_settings(overrides)
    _setup_logging(settings)
    _check_report_dir(settings)
    interrupts = Interrupts()
    if settings.source.type == StoreType.maxcompute:  # a table export (dth_ray/maxcompute), not an object listing
        from dth_ray.maxcompute.common import summary_line
        from dth_ray.maxcompute.runner import run_maxcompute

        interrupts.install()
        out = run_maxcompute(settings, interrupts)
        if settings.report_path:
            write_report(settings.report_path, out)
        print(summary_line(out))
        if interrupts.requested.is_set():
            print(f"dth-ray: {RESUME_HINT}", file=sys.stderr)
            return interrupts.exit_status
        return EXIT_OK if out["status"] == "succeeded" else EXIT_FAILED
    with showing_progress(settings) as progress:
        report = run_sync(settings, progress, interrupts=interrupts)
    if settings.report_path:
        write_report(settings.report_path, report.to_json())
    print(report.summary())
    return _exit_status(report.status, interrupts)


def _exit_status(status: str, interrupts: Interrupts) -> int:
    """0 succeeded (verify: ok), 130/143 stopped by SIGINT/SIGTERM (resumable), 75 paused outside its transfer
    window (continues in the next), 1 anything else. A run that reached its end before it noticed the signal
    reports that end."""
    if status == "paused":
        return EXIT_PAUSED
    if status == "interrupted":
        print(f"dth-ray: {RESUME_HINT}", file=sys.stderr)
        return interrupts.exit_status or EXIT_BY_SIGNAL[signal.SIGINT]
    return EXIT_OK if status in ("succeeded", "ok") else EXIT_FAILED


def _setup_logging(settings: Settings) -> None:
    from dth_ray.ops.logs import setup_logging  # log_level, log.format=text|json, credential scrubbing

    setup_logging(settings.config)


def _check_report_dir(settings: Settings) -> None:
    from dth_ray.reportfile import check_report_path  # a directory, a missing folder, no write permission

    check_report_path(settings.report_path)


def cmd_plan(overrides: list[str]) -> int:
    from dth_ray.plan.estimate import Rates, estimate
    from dth_ray.plan.parts import choose_part_size
    from dth_ray.runtime.driver import run_sync
    from dth_ray.stores.s3 import FEATURES as S3_FEATURES

    settings = load_settings([*overrides, "dry_run=true"])
    _setup_logging(settings)
    _check_report_dir(settings)
    p = settings.plan
    window = settings.schedule.window
    # Transfer runs only inside schedule.window: its egress at the window's price, when one is given.
    egress = p.egress_per_gb_night if window is not None and p.egress_per_gb_night > 0 else p.egress_per_gb
    rates = Rates(p.nodes, p.node_bytes_per_s, p.node_objects_per_s, egress, p.put_per_1000,
                  p.get_per_1000, p.dynamodb_write_per_million, p.instance_per_hour)
    try:
        estimate(0, 0, 0, 0, 1, rates)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    interrupts = Interrupts()
    report = run_sync(settings, interrupts=interrupts)
    t = report.tally
    typical = t.would_copy_multipart_bytes // max(1, t.would_copy_multipart)
    part_size = choose_part_size(typical, S3_FEATURES, settings.transfer.part_size_bytes)
    plan = estimate(t.would_copy, t.would_copy_bytes, t.would_copy_multipart, t.would_copy_multipart_bytes,
                    part_size, rates)
    out = {"status": report.status, "job": report.job, "source": report.source,
           "destination": report.destination, "listed": t.listed, "listed_bytes": t.bytes_listed,
           "would_skip": t.skipped, "estimate": plan,
           "rates": {"node_bytes_per_s": rates.node_bytes_per_s, "node_objects_per_s": rates.node_objects_per_s,
                     "egress_per_gb": egress, "put_per_1000": p.put_per_1000,
                     "get_per_1000": p.get_per_1000, "dynamodb_write_per_million": p.dynamodb_write_per_million,
                     "instance_per_hour": p.instance_per_hour},
           "listing_duration_s": round(report.duration_s, 3)}
    days = ""
    if window is not None:
        hours = window.hours_per_day()
        out["window"] = {"window": window.describe(), "hours_per_day": round(hours, 2),
                         "calendar_days": round(plan["duration_s"] / (hours * 3600), 2),
                         "egress_per_gb_day": p.egress_per_gb, "egress_per_gb_window": egress}
        days = f" in {window.describe()} ≈ {out['window']['calendar_days']:,.2f} days;"
    if settings.report_path:
        write_report(settings.report_path, out)
    print(f"plan: {t.listed:,} listed; would copy {plan['objects']:,} objects, {plan['bytes'] / 1e9:,.2f} GB; "
          f"on {plan['nodes']} node(s) ≈ {plan['duration_s'] / 3600:,.2f} h;{days} cost ≈ ${plan['cost_usd_total']:,.2f} "
          + " ".join(f"({k} ${v:,.2f})" for k, v in plan["cost_usd"].items()))
    return _exit_status(report.status, interrupts)


def cmd_verify(overrides: list[str]) -> int:
    from dth_ray.runtime.verify import run_verify

    settings = load_settings(overrides)
    _setup_logging(settings)
    _check_report_dir(settings)
    interrupts = Interrupts()
    report = run_verify(settings, interrupts)
    if settings.report_path:
        write_report(settings.report_path, report)
    c = report["counts"]
    print(f"verify {report['mode']}: {report['status']}: {c['checked']:,} checked, {c['matched']:,} match, "
          f"{c['missing_on_destination']:,} missing on destination, {c['differ']:,} differ, "
          f"{c['extra_on_destination']:,} extra on destination ({c['read_objects']:,} objects read)")
    for kind in ("missing_on_destination", "differ", "extra_on_destination"):
        for key in report[kind][:20]:
            print(f"  {kind}: {key}")
    for error in report["errors"][:5]:
        print(f"  error: {error}")
    return _exit_status(report["status"], interrupts)


def cmd_status(args: list[str]) -> int:
    from dth_ray.runtime import status
    from dth_ray.runtime.jobs import adopt_legacy_job

    picked = {k: v for k, _, v in (a.partition("=") for a in args if a.startswith(("prefix=", "key=")))}
    overrides = [a for a in args if not a.startswith(("prefix=", "key="))]
    by_job = not picked and any(a.startswith("job=") for a in overrides)
    settings = resolve(load_config(overrides, check=False), check=not by_job)  # job=NAME needs no stores
    _setup_logging(settings)
    settings = adopt_legacy_job(settings)  # a job an earlier release named job-<hex> is shown under that name
    if "key" in picked:
        out = status.key_status(settings, picked["key"])
        ok = out["in_sync"]
    elif "prefix" in picked:
        out = status.prefix_status(settings, picked["prefix"])
        ok = out["complete"]
        c = out["counts"]
        print(f"prefix {out['prefix']!r}: {'complete' if ok else 'NOT complete'}: {c['objects']:,} objects, "
              f"{c['present']:,} present, {c['missing']:,} missing, {c['differ']:,} differ, "
              f"{c['unchecked']:,} unchecked", file=sys.stderr)
    else:
        out = status.job_status(settings)
        ok = out["state"] == "succeeded"
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return EXIT_OK if ok else EXIT_FAILED


def cmd_console(overrides: list[str]) -> int:
    """`dth-ray console`: the manifest's jobs and runs as a read-only web page (dth_ray/console)."""
    from dth_ray.console.app import serve

    settings = resolve(load_config(overrides, check=False), check=False, console=True)  # no stores needed
    _setup_logging(settings)
    return serve(settings)


def cmd_watch(overrides: list[str]) -> int:
    """The long-running service (dth_ray/sync/watch.py); SIGTERM/SIGINT stop it cleanly (exit 0), a second
    one exits at once."""
    from dth_ray.runtime.jobs import adopt_legacy_job
    from dth_ray.sync.watch import WatchService

    settings = load_settings(overrides)
    _setup_logging(settings)
    settings = adopt_legacy_job(settings)  # before the service takes the job's name anywhere
    from dth_ray.ops.logs import service_lines

    service_lines("dth_ray.sync.watch")
    _check_report_dir(settings)
    service = WatchService(settings)
    try:
        report = service.run(handle_signals=True)
    finally:
        service.interrupts.uninstall()
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
                          "[alerts.sns_topic_arn=ARN] [source.bucket=B (an S3 source whose notifications go "
                          "there) [events.source_account=ID (B's account, when not the queue's)]]")
    cfg = load_config(args[1:], check=False)
    validate_sync_settings(cfg)
    validate_ops(cfg)
    from dth_ray.ops.logs import setup_logging

    setup_logging(cfg)
    from dth_ray.reportfile import check_report_path

    check_report_path(cfg.report)
    s3_bucket = cfg.source.bucket if cfg.source.type == StoreType.s3 else ""
    out = setup(cfg.events, s3_bucket, cfg.alerts.sns_topic_arn)
    if cfg.report:
        write_report(cfg.report, out)
    print(json.dumps(out, indent=2))
    print(f"queue ready: {out['queue_url']} (dead letters after {out['redrive_policy']['maxReceiveCount']} receives: "
          f"{out['dead_letter_queue_url']}). Attach policies.forwarder to the identity whose keys the OSS "
          f"forwarder uses (it may only sqs:SendMessage to this queue).", file=sys.stderr)
    print(f"who can send: {out['who_can_send']}", file=sys.stderr)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        answered = answer(args)  # help, version, --cfg job; one line for a --flag, misspelled key or command
        if answered is not None:
            return answered
        command, rest = args[0], args[1:]
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
        if command == "console":
            return cmd_console(rest)
        if command == "events":
            return cmd_events(rest)
        if command in ("dashboard", "alerts"):  # dth_ray/ops: CloudWatch dashboard, SNS alarm topic
            from dth_ray.ops.commands import cmd_alerts, cmd_dashboard

            return cmd_dashboard(rest) if command == "dashboard" else cmd_alerts(rest)
        if command == "demo":
            from dth_ray.demo import run_demo

            return run_demo(rest)
        if command == "keys":
            return cmd_keys(rest)
        if command == "jobs":
            return cmd_jobs(rest)
        raise ConfigError(f"dth-ray {command} is not implemented")  # in discover.COMMANDS, not dispatched
    except ConfigError as exc:
        print(f"dth-ray: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DthError as exc:
        print(f"dth-ray: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Interrupted as exc:
        print(f"dth-ray: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:  # before a command took the signals (e.g. while composing the configuration)
        print("dth-ray: interrupted", file=sys.stderr)
        return EXIT_BY_SIGNAL[signal.SIGINT]
    finally:
        from dth_ray.runtime.rayhost import stop_ray

        stop_ray()


if __name__ == "__main__":
    sys.exit(main())
