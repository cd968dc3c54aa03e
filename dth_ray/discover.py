"""Help and discovery for `dth-ray` (usage, each command's help, `keys`, `jobs`, `--cfg job`, one line
naming the key=value for a `--flag` or a misspelled key), answered without importing Ray, pyarrow or boto3."""

from __future__ import annotations

import difflib
import itertools
import re
import shlex
import sys
from dataclasses import dataclass

from dth_ray import __version__
from dth_ray import config_keys as keys
from dth_ray.errors import ConfigError

EXIT_OK, EXIT_USAGE = 0, 2


@dataclass(frozen=True)
class Command:
    """One command's help. `needs`: (key=VALUE, note) rows; `see`: keys or key prefixes worth knowing; `word`:
    the sub-command word (`events setup`); `extra`: its name=value arguments that are not config keys."""

    name: str
    summary: str
    what: str
    needs: tuple[tuple[str, str], ...]
    see: tuple[str, ...]
    examples: tuple[str, str]
    word: str = ""
    extra: tuple[str, ...] = ()
    config: bool = True  # takes key=value settings (so --cfg job applies)

    @property
    def usage(self) -> str:
        args = " PREFIX" if self.name == "keys" else "" if not self.config else " [key=value ...]"
        return f"dth-ray {self.name}{' ' + self.word if self.word else ''}{args}"


_STORE_NEEDS = (
    ("source=TYPE", "s3 (the default), oss, cos, kodo, local or maxcompute"),
    ("source.bucket=NAME", "or source.path=DIR with source=local"),
    ("destination.bucket=NAME", "or destination=local destination.path=DIR"),
    ("source.credentials=SPEC", "default, anonymous, env:NAME, secret:ID, profile:NAME or role:ARN; "
                                "destination.credentials likewise"),
)
_STORE_SEE = ("source.prefix", "destination.prefix", "source.region", "source.endpoint", "destination.region",
              "destination.endpoint", "manifest", "job")

COMMANDS = {c.name: c for c in (
    Command(
        "sync", "copy what differs from source to destination",
        "Copy what differs from the source to the destination, checking every byte written against the\n"
        "source. Rerun the same command to resume an interrupted run, or to copy only what changed since\n"
        "(see compare).",
        _STORE_NEEDS, (*_STORE_SEE, "dry_run", "report", "compare", "filter", "sync.delete", "transfer"),
        ("dth-ray sync source=oss source.bucket=logs source.region=cn-hangzhou "
         "source.credentials=secret:drh-creds destination.bucket=lake destination.region=us-west-2 "
         "report=report.json",
         "dth-ray sync source=local source.path=/data destination.bucket=lake destination.prefix=data/ "
         "dry_run=true")),
    Command(
        "plan", "a dry run that estimates duration and cost",
        "A dry run at scale: list and diff like sync, write nothing, and print the objects and bytes to\n"
        "copy, the estimated duration on plan.nodes nodes and the estimated cost by component (plan.*\n"
        "prices).",
        (*_STORE_NEEDS, ("plan.nodes=N", "nodes the estimate assumes (1)"),
         ("plan.node_throughput=SIZE", "bytes/s one node sustains (1.25GB)")),
        (*_STORE_SEE, "plan", "report"),
        ("dth-ray plan source=oss source.bucket=logs source.region=cn-hangzhou destination.bucket=lake "
         "plan.nodes=8",
         "dth-ray plan source=local source.path=/data destination.bucket=lake report=plan.json")),
    Command(
        "verify", "compare destination with source",
        "Compare the destination with the source shard by shard: objects missing on the destination,\n"
        "differing, or only at the destination, with counts. Exit 0 only when nothing differs.",
        (*_STORE_NEEDS,
         ("verify.mode=fast|full", "fast: listings and copy-time records; full: read every byte"),
         ("verify.strict=true", "objects only at the destination fail the verify")),
        (*_STORE_SEE, "report"),
        ("dth-ray verify source=oss source.bucket=logs source.region=cn-hangzhou destination.bucket=lake",
         "dth-ray verify source=local source.path=/data destination.bucket=lake verify.mode=full "
         "report=verify.json")),
    Command(
        "status", "a job's progress; prefix=P: is everything under P there and checked?",
        "A job's progress from its manifest (with job=NAME no store is contacted). prefix=P lists the\n"
        "source under P live and says whether every object is at the destination and checked (exit 0\n"
        "yes, 1 no); key=K prints what is known of one key: its manifest record, checkpoint and both HEADs.",
        (("job=NAME", "the job (dth-ray jobs lists them), or the sync's store settings instead"),
         ("prefix=P", "a source prefix to check (not a config key)"),
         ("key=K", "one source key to look up (not a config key)")),
        (*_STORE_SEE,),
        ("dth-ray status job=logs-lake-1a2b3c",
         "dth-ray status source=local source.path=/data destination.bucket=lake prefix=2024/06/"),
        extra=("prefix", "key")),
    Command(
        "watch", "keep in sync: SQS events and a scheduled batch sync",
        "Keep in sync: copies driven by events from an SQS queue, and a scheduled batch sync that repairs\n"
        "what events missed. A long-running service; SIGTERM/SIGINT stop it cleanly (a second one at once).",
        (*_STORE_NEEDS, ("events=sqs events.queue_url=URL", "the queue (events=none: scheduled scans only)"),
         ("schedule.interval=1h", "or schedule.cron='*/15 * * * *'; none disables the scans")),
        (*_STORE_SEE, "events", "schedule", "sync.delete", "report"),
        ("dth-ray watch source=oss source.bucket=logs source.region=cn-hangzhou destination.bucket=lake "
         "events=sqs events.queue_url=https://sqs.us-west-2.amazonaws.com/123456789012/oss-events",
         "dth-ray watch source=local source.path=/data destination.bucket=lake schedule.cron='*/15 * * * *' "
         "sync.delete=true sync.max_delete=1%")),
    Command(
        "events", "create the SQS queue, dead-letter queue and redrive policy",
        "Create (idempotently) the SQS queue, its dead-letter queue <name>-dlq and redrive policy; print\n"
        "their URLs and ARNs and two least-privilege IAM policies as JSON.",
        (("events.queue_name=NAME", "the queue to create"),
         ("events.region=REGION", "where (else AWS_REGION)")),
        ("events.max_receives", "events.endpoint", "events.credentials", "alerts.sns_topic_arn",
         "source.bucket", "report"),
        ("dth-ray events setup events.queue_name=oss-events events.region=us-west-2",
         "dth-ray events setup events.queue_name=oss-events events.region=us-west-2 events.max_receives=8 "
         "alerts.sns_topic_arn=arn:aws:sns:us-west-2:123456789012:alerts"),
        word="setup"),
    Command(
        "dashboard", "create the CloudWatch dashboard of a job's metrics",
        "Create or replace the CloudWatch dashboard dth-ray-JOB of one job's metrics (runs feed it with\n"
        "metrics.cloudwatch=true) and print it as JSON.",
        (("job=NAME", "the job, or the sync's store settings instead"),
         ("metrics.region=REGION", "where (else AWS_REGION, else us-east-1)")),
        ("metrics.namespace", "metrics.endpoint", "metrics.credentials"),
        ("dth-ray dashboard create job=logs-lake-1a2b3c metrics.region=us-west-2",
         "dth-ray dashboard create source=oss source.bucket=logs destination.bucket=lake "
         "metrics.namespace=Mover"),
        word="create"),
    Command(
        "alerts", "create an SNS alarm topic with an email subscription",
        "Create an SNS topic with an email subscription for run alarms and print its ARN (then run with\n"
        "alerts.sns_topic_arn=ARN; confirm the email AWS sends first).",
        (("alerts.email=ADDRESS", "who gets the alarms"),
         ("alerts.region=REGION", "where (else AWS_REGION)")),
        ("alerts.topic_name", "alerts.endpoint", "alerts.credentials", "alerts.on_success"),
        ("dth-ray alerts setup alerts.email=ops@example.com alerts.region=us-west-2",
         "dth-ray alerts setup alerts.email=ops@example.com alerts.topic_name=lake-alarms"),
        word="setup"),
    Command(
        "demo", "two local S3 endpoints: seed, sync, verify every byte",
        "Start two local S3 endpoints (rclone serve s3), seed them with a mixed dataset, sync it and verify\n"
        "every byte. Any sync setting may be added.",
        (), ("transfer", "runtime"),
        ("dth-ray demo", "dth-ray demo transfer.concurrency=32 runtime.ray=always")),
    Command(
        "keys", "every config key with its default, type and meaning",
        "Every configuration key with its default, type and meaning, from the schema; PREFIX keeps the keys\n"
        "that start with it.",
        (("PREFIX", "optional: e.g. transfer, source.b, maxcompute.oss"),), (),
        ("dth-ray keys", "dth-ray keys maxcompute.oss"), config=False),
    Command(
        "jobs", "the jobs in the manifest and their latest runs",
        "The jobs in the manifest: name, latest run and its state, objects and bytes it settled (copied,\n"
        "unchanged or failed) of its total, when, and source → destination. A run still going, or cut off,\n"
        "counts its checkpoints; its total is known once every shard is listed. report=PATH writes JSON too.",
        (("manifest.path=FILE", "the SQLite manifest (the default one if not given)"),
         ("manifest=dynamodb manifest.table=T",
          "or a DynamoDB manifest (manifest.region, manifest.endpoint)")),
        ("manifest", "report"),
        ("dth-ray jobs",
         "dth-ray jobs manifest=dynamodb manifest.table=dth-ray-manifest manifest.region=us-west-2")),
    Command(
        "console", "a read-only web page of the manifest's jobs and runs, live",
        "Serve a read-only web page of the manifest's jobs and runs: each job's latest run with its\n"
        "numbers, and per job its runs, shards, throughput chart, failed keys (paged) and commands. Live\n"
        "while a sync runs (refreshed every few seconds); prints the URL to open. Ctrl-C stops it.",
        (("manifest.path=FILE", "the SQLite manifest (the default one if not given)"),
         ("manifest=dynamodb manifest.table=T", "or a DynamoDB manifest (manifest.region, manifest.endpoint)"),
         ("console.port=PORT", "where it listens on 127.0.0.1 (8266; 0: any free port)")),
        ("manifest", "console"),
        ("dth-ray console",
         "dth-ray console manifest=dynamodb manifest.table=dth-ray-manifest manifest.region=us-west-2")),
    Command("version", "print the version", "Print the version.", (), (),
            ("dth-ray version", "dth-ray --version"), config=False),
)}


def usage() -> str:
    rows = "\n".join(f"  {(c.name + ' ' + c.word).strip():<17} {c.summary}" for c in COMMANDS.values())
    return (f"usage: dth-ray COMMAND [key=value ...]\n\ncommands:\n{rows}\n\n"
            "Settings are key=value (Hydra overrides), e.g. source=oss source.bucket=logs dry_run=true.\n"
            "  dth-ray COMMAND --help     what it does, the keys it needs, examples\n"
            "  dth-ray keys [PREFIX]      every key with its default, type and meaning\n"
            "  dth-ray COMMAND ... --cfg job   the configuration it would run with\n\n"
            "examples:\n  " + "\n  ".join(COMMANDS["sync"].examples) + "\n")


def command_help(name: str) -> str:
    c = COMMANDS[name]
    width = max((len(k) for k, _ in c.needs), default=0)
    out = [f"usage: {c.usage}", "", c.what, ""]
    if c.needs:
        out += ["keys it needs:" if c.config else "arguments:"]
        out += [f"  {k:<{width}}  {note}" for k, note in c.needs]
        out.append("")
    if c.see:
        out += ["also: " + ", ".join(c.see) + " (dth-ray keys PREFIX: defaults and meanings)", ""]
    out += ["examples:", *(f"  {e}" for e in c.examples)]
    return "\n".join(out) + "\n"


# ---- reading the command line before a command runs

_KEY_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
# rclone/Unix habits, with the setting that does the same here.
ALIASES = {"-n": "dry_run=true", "-P": "progress=on", "--progress": "progress=on", "-v": "log_level=INFO",
           "--verbose": "log_level=INFO", "-vv": "log_level=DEBUG", "-q": "log_level=ERROR",
           "--quiet": "log_level=ERROR"}
_HELP = ("-h", "--help", "--hydra-help")
_VERSION = ("-V", "--version")


def _flag_key(name: str) -> str | None:
    """The key a flag's name means: `dry-run` → dry_run, `source-bucket` → source.bucket, `source.bucket`."""
    if name in keys.accepted_names():
        return name
    dashes = name.count("-")
    if not 0 < dashes <= 8:
        return None
    for joins in itertools.product("_.", repeat=dashes):
        parts = name.split("-")
        candidate = parts[0] + "".join(j + p for j, p in zip(joins, parts[1:], strict=True))
        if candidate in keys.accepted_names():
            return candidate
    return None


def _is_bool(key: str) -> bool:
    return any(k.name == key and isinstance(k.default, bool) for k in keys.all_keys())


def flag_hint(flag: str, following: str | None) -> str:
    """One line for a `--flag`: the key=value to write instead (the next argument is its value when it looks
    like one: `--source.bucket logs`)."""
    if flag in ALIASES:
        return f"{flag} is not an option; write {ALIASES[flag]} instead (settings are key=value)"
    name, eq, value = flag.lstrip("-").partition("=")
    if not name:
        return f"{flag} is not an option (settings are key=value; dth-ray keys lists them)"
    negated = bool(not eq and re.match(r"no[-_]", name) and _is_bool(_flag_key(name[3:]) or ""))
    key = _flag_key(name[3:]) if negated else _flag_key(name)
    if key is None:
        guess = name.replace("-", "_")
        return (f"{flag} is not an option, and {guess} is not a config key{keys.did_you_mean(guess)} "
                f"(settings are key=value; dth-ray keys lists them)")
    if negated:
        value = "false"
    elif not eq:
        usable = following is not None and not following.startswith("-") and "=" not in following
        if _is_bool(key):
            value = following if usable and following in ("true", "false") else "true"
        else:
            value = following if usable else "VALUE"
    return f"{flag} is not an option; write {key}={shlex.quote(value)} instead (settings are key=value)"


def _check_setting(arg: str, command: Command) -> None:
    """Raise ConfigError (one line) for a key=value whose key the schema does not know, or an argument that is
    no setting at all. Hydra's own forms (+key, ~key, key@pkg, hydra.*) are left to Hydra."""
    if arg.startswith(("+", "~")):
        return
    name, eq, value = arg.partition("=")
    if not eq:
        if name in keys.accepted_names():
            raise ConfigError(f"{name} needs a value: {name}=VALUE (dth-ray keys {name})")
        raise ConfigError(f"{arg!r} is not a setting; settings are key=value (dth-ray {command.name} --help)")
    if name in command.extra or not _KEY_RE.fullmatch(name) or name.split(".")[0] == "hydra":
        return
    if name not in keys.accepted_names():
        raise ConfigError(f"{name} is not a config key{keys.did_you_mean(name)} (dth-ray keys lists them)")
    if name in keys.GROUPS and value not in keys.group_options(name):
        close = difflib.get_close_matches(value, keys.group_options(name), n=1)
        hint = f"; did you mean {name}={close[0]}?" if close else ""
        options = ", ".join(keys.group_options(name))
        raise ConfigError(f"{name}={value} is not a known option ({options}){hint}")


def _take_cfg(rest: list[str]) -> tuple[list[str], str | None]:
    """`rest` without Hydra's `--cfg WHAT` / `--cfg=WHAT` / `-c WHAT` (and `--resolve`), and WHAT."""
    out, what, i = [], None, 0
    while i < len(rest):
        arg = rest[i]
        if arg in ("--cfg", "-c"):
            what = rest[i + 1] if i + 1 < len(rest) else ""
            i += 2
            continue
        if arg.startswith("--cfg="):
            what = arg.partition("=")[2]
        elif arg != "--resolve":
            out.append(arg)
        i += 1
    return out, what


def answer(args: list[str]) -> int | None:
    """Answer what needs no command to run: help, version, `--cfg job`; and refuse, with one line, a
    `--flag`, a misspelled key or an unknown command. Returns the exit status, or None when the command
    should run. Raises ConfigError (one line: exit 2)."""
    if not args:
        sys.stdout.write(usage())
        return EXIT_USAGE
    first, rest = args[0], args[1:]
    if first in (*_HELP, "help"):
        sys.stdout.write(command_help(rest[0]) if rest and rest[0] in COMMANDS else usage())
        return EXIT_OK
    if first in _VERSION or (first == "version" and not set(rest) & set(_HELP)):
        print(f"dth-ray {__version__}")
        return EXIT_OK
    if first.startswith("-"):
        raise ConfigError(flag_hint(first, rest[0] if rest else None) + "; the command comes first: dth-ray "
                          "COMMAND key=value ...")
    if first not in COMMANDS:
        if "=" in first:
            raise ConfigError(f"no command before {first}: dth-ray COMMAND key=value ... "
                              f"(commands: {', '.join(COMMANDS)})")
        close = difflib.get_close_matches(first, list(COMMANDS), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"unknown command {first!r}{hint} (commands: {', '.join(COMMANDS)})")
    command = COMMANDS[first]
    if set(rest) & set(_HELP):
        sys.stdout.write(command_help(first))
        return EXIT_OK
    rest, cfg = _take_cfg(rest)
    settings = rest[1:] if command.word and rest[:1] == [command.word] else rest
    for i, arg in enumerate(settings):
        if arg.startswith("-"):
            raise ConfigError(flag_hint(arg, settings[i + 1] if i + 1 < len(settings) else None))
    if command.config:
        for arg in settings:
            _check_setting(arg, command)
    if cfg is None:
        return None
    if not command.config:
        raise ConfigError(f"dth-ray {first} has no configuration to show")
    if cfg not in ("job", "all"):
        raise ConfigError(f"--cfg {cfg or '(nothing)'} is not supported: --cfg job prints the configuration")
    sys.stdout.write(config_yaml(first, [a for a in settings if a.partition("=")[0] not in command.extra]))
    return EXIT_OK


def config_yaml(command: str, overrides: list[str]) -> str:
    """The composed configuration as YAML, before validation; credentials appear as the specs written
    (`env:NAME`, `secret:ID`): nothing is resolved. Raises ConfigError."""
    from omegaconf import OmegaConf

    from dth_ray.compose import load_config
    from dth_ray.config import StoreType
    from dth_ray.naming import job_name

    cfg = load_config(overrides, check=False)
    head = (f"# dth-ray {command}: the configuration it would run with "
            "(not yet validated; credentials are specs)\n")
    if cfg.source.type != StoreType.maxcompute:  # a table export names its job from the table
        head += f"# job: {job_name(cfg)}\n"
    return head + OmegaConf.to_yaml(OmegaConf.structured(cfg))


# ---- the discovery commands

def _plain(text: str) -> str:
    return text.replace("`", "")


def cmd_keys(args: list[str]) -> int:
    """`dth-ray keys [PREFIX]`: one line per key. Raises ConfigError when nothing starts with PREFIX."""
    if len(args) > 1:
        raise ConfigError(f"usage: {COMMANDS['keys'].usage}")
    prefix = args[0] if args else ""
    found = keys.matching(prefix)
    if not found:
        raise ConfigError(f"no config key starts with {prefix!r}{keys.did_you_mean(prefix)}")
    rows = [("KEY", "DEFAULT", "TYPE", "MEANING")] + [
        (k.name, k.default_text, k.kind, _plain(k.meaning)) for k in found]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        cells = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False))
        sys.stdout.write(f"{cells}  {row[3]}\n")
    return EXIT_OK


def cmd_jobs(args: list[str]) -> int:
    """`dth-ray jobs [manifest settings] [report=PATH]`: the manifest's jobs as a table (and JSON with
    report=PATH). Raises ConfigError, DthError (the manifest)."""
    from dth_ray.cli import write_report
    from dth_ray.compose import load_config
    from dth_ray.config import ManifestType
    from dth_ray.runtime.jobs import list_jobs, table
    from dth_ray.runtime.manifest import default_sqlite_path
    from dth_ray.settings import resolve

    settings = resolve(load_config(args, check=False), check=False)
    rows = list_jobs(settings.manifest)
    if settings.report_path:
        write_report(settings.report_path, {"jobs": rows})
    spec = settings.manifest
    where = (f"DynamoDB table {spec.table}" if spec.type is ManifestType.dynamodb
             else f"{spec.path or default_sqlite_path()}")
    if rows:
        print(table(rows))
    print(f"{len(rows)} job(s) in {where}", file=sys.stderr)
    return EXIT_OK


