"""`dth-ray dashboard create` and `dth-ray alerts setup`: the one-time AWS set-up for metrics and alarms."""

from __future__ import annotations

import json
import sys

from dth_ray.config import SyncConfig, validate_ops
from dth_ray.errors import ConfigError, Fatal
from dth_ray.ops.aws import error_code

DASHBOARD_USAGE = ("usage: dth-ray dashboard create job=NAME [metrics.namespace=NS] [metrics.region=R] "
                   "[metrics.endpoint=URL] [metrics.credentials=SPEC] (or the sync's store settings instead of job=)")
ALERTS_USAGE = ("usage: dth-ray alerts setup alerts.email=ADDRESS [alerts.topic_name=NAME] [alerts.region=R] "
                "[alerts.endpoint=URL] [alerts.credentials=SPEC] [alerts.sns_topic_arn=ARN (subscribe to it)]")


def _load(overrides: list[str]) -> SyncConfig:
    from dth_ray.compose import load_config
    from dth_ray.ops.logs import setup_logging

    cfg = load_config(overrides, check=False)
    validate_ops(cfg)
    setup_logging(cfg)
    return cfg


def cmd_dashboard(args: list[str]) -> int:
    """Create (or replace) the CloudWatch dashboard of one job's metrics; prints it as JSON.
    Raises ConfigError (usage, bad keys), Fatal (CloudWatch refused)."""
    from dth_ray.ops.cloudwatch import create_dashboard

    if not args or args[0] != "create":
        raise ConfigError(DASHBOARD_USAGE)
    cfg = _load(args[1:])
    job = cfg.job
    if not job and (cfg.source.bucket or cfg.source.path):
        from dth_ray.naming import job_name

        job = job_name(cfg)
    if not job:
        raise ConfigError("dashboard create needs job=NAME (the job whose metrics it shows)")
    try:
        out = create_dashboard(cfg.metrics, job)
    except ConfigError:
        raise
    except Exception as exc:  # botocore raises many types; report the service's code only
        raise Fatal(f"CloudWatch PutDashboard failed ({error_code(exc)})") from None
    print(json.dumps(out, indent=2))
    print(f"dashboard {out['name']} ready: {out['url']} (metrics appear once a run has metrics.cloudwatch=true "
          f"job={job})", file=sys.stderr)
    return 0


def cmd_alerts(args: list[str]) -> int:
    """Create the alarm topic with an email subscription; prints the topic ARN on stdout.
    Raises ConfigError (usage, bad keys), Fatal (SNS refused)."""
    from dth_ray.ops.alerts import setup_topic

    if not args or args[0] != "setup":
        raise ConfigError(ALERTS_USAGE)
    cfg = _load(args[1:])
    if not cfg.alerts.email:
        raise ConfigError("alerts setup needs alerts.email=ADDRESS (who gets the alarms)")
    try:
        out = setup_topic(cfg.alerts)
    except ConfigError:
        raise
    except Exception as exc:  # botocore raises many types; report the service's code only
        raise Fatal(f"SNS set-up failed ({error_code(exc)})") from None
    print(out["topic_arn"])
    print(f"subscribed {out['email']} to {out['topic_arn']}: confirm the email AWS sends, then run with "
          f"alerts.sns_topic_arn={out['topic_arn']}", file=sys.stderr)
    return 0
