"""Help and discovery as a user meets them: `--help` for the tool and each command, `--version`, `keys`,
`--cfg job`, a `--flag` and a misspelled key each answered in one place, with no traceback, without Ray,
pyarrow or boto3, and at once. (Apart from test_cli.py, which other work on the CLI edits too.)"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from dth_ray import __version__, config_keys
from dth_ray.cli import main
from dth_ray.discover import COMMANDS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(args: list[str], env_extra: dict | None = None, cwd: str | None = None):
    # This checkout's dth_ray, whatever the working directory (an editable install may point elsewhere).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
               **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "dth_ray", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def one_error_line(capsys, code: int) -> str:
    out = capsys.readouterr()
    assert code == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert "Traceback" not in out.err and "Lexer" not in out.err
    assert lines[0].startswith("dth-ray: error: ")
    return lines[0]


def test_top_level_help_and_version_in_a_real_process():
    result = run_cli(["--help"])
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: dth-ray COMMAND [key=value ...]")
    for name in COMMANDS:
        assert re.search(rf"^  {name}\b", result.stdout, re.M), name
    assert "dth-ray keys [PREFIX]" in result.stdout and "--cfg job" in result.stdout
    version = run_cli(["--version"])
    assert (version.returncode, version.stdout) == (0, f"dth-ray {__version__}\n")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help_with_what_it_needs_and_two_examples(name, capsys):
    command = COMMANDS[name]
    args = [name, command.word, "--help"] if command.word else [name, "--help"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: dth-ray {name}")
    assert command.what.splitlines()[0] in out
    examples = out.split("examples:\n")[1].splitlines()
    assert len(examples) == 2 and all(e.startswith(f"  dth-ray {name}") or "--version" in e for e in examples)
    # Every key the help names is one the schema knows (help that names a renamed key fails here).
    named = [k for row, _ in command.needs for k in re.findall(r"([a-z_][\w.]*)=", row)] + list(command.see)
    for key in named:
        assert key in command.extra or any(n == key or n.startswith(key + ".")
                                           for n in config_keys.accepted_names()), key
    # The examples themselves get past the command line checks (only `--cfg job` is added: nothing runs).
    for example in examples:
        if command.config:
            assert main([*shlex.split(example)[1:], "--cfg", "job"]) == 0, example
            assert capsys.readouterr().out.startswith(f"# dth-ray {name}: the configuration")
    assert main([name, "-h"]) == 0 and capsys.readouterr().out == out
    assert main(["help", name]) == 0 and capsys.readouterr().out == out


def test_help_paths_import_no_heavy_module_and_answer_in_well_under_a_second():
    probe = (
        "import json, sys, time\n"
        "from dth_ray.cli import main\n"
        "t = time.perf_counter()\n"
        "codes = [main(a) for a in (['--help'], ['sync', '--help'], ['jobs', '--help'], ['keys'],\n"
        "         ['keys', 'x.y'], ['sync', '--dry-run'], ['sync', 'transfer.concurency=3'],\n"
        "         ['--version'])]\n"
        "elapsed = time.perf_counter() - t\n"
        "heavy = [m for m in ('ray', 'pyarrow', 'boto3', 'botocore', 'hydra', 'aiohttp')\n"
        "         if m in sys.modules]\n"
        "print(json.dumps({'codes': codes, 'heavy': heavy, 'elapsed': elapsed}), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    found = json.loads(result.stderr.strip().splitlines()[-1])
    assert found["codes"] == [0, 0, 0, 0, 2, 2, 2, 0]
    assert found["heavy"] == [], "help, keys and one-line answers import no Ray, pyarrow, boto3 or Hydra"
    assert found["elapsed"] < 1.0, f"8 answers took {found['elapsed']:.2f} s"


def test_keys_lists_every_key_with_default_type_and_meaning(capsys):
    assert main(["keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["KEY", "DEFAULT", "TYPE", "MEANING"]
    assert len(lines) == 1 + len(config_keys.all_keys())
    rows = {line.split()[0]: line for line in lines[1:]}
    assert re.match(r"transfer\.buffer_size\s+160MiB\s+size\s+payload bytes one worker",
                    rows["transfer.buffer_size"])
    assert re.match(r"source\s+s3\s+preset: s3\|", rows["source"])
    assert re.match(r'maxcompute\.oss\.bucket\s+""\s+str\s+maxcompute\.mode=unload staging store: '
                    r"bucket name", rows["maxcompute.oss.bucket"])


def test_keys_with_a_prefix_keeps_those_keys_and_a_bad_prefix_gets_a_suggestion(capsys):
    assert main(["keys", "maxcompute.oss."]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert names == [k.name for k in config_keys.all_keys() if k.name.startswith("maxcompute.oss.")]
    assert {"maxcompute.oss.bucket", "maxcompute.oss.endpoint", "maxcompute.oss.sse_kms_key_id"} <= set(names)
    assert main(["keys", "transfer"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert names and all(n.startswith("transfer.") for n in names) and "transfer.concurrency" in names
    line = one_error_line(capsys, main(["keys", "trasnfer.concurrency"]))
    assert "no config key starts with 'trasnfer.concurrency'; did you mean transfer.concurrency?" in line


def test_cfg_job_prints_the_resolved_config_with_credential_specs_only(tmp_path):
    secret = "never-print-this-secret-4f1d"
    result = run_cli(["sync", "source=oss", "source.bucket=logs", "source.region=cn-hangzhou",
                      "source.credentials=env:SRCX", "destination.bucket=lake",
                      "destination.credentials=secret:lake-keys",
                      "transfer.concurrency=32", "--cfg", "job"],
                     env_extra={"SRCX_ACCESS_KEY_ID": "AKIAEXAMPLE", "SRCX_SECRET_ACCESS_KEY": secret},
                     cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and secret not in result.stdout and "AKIAEXAMPLE" not in result.stdout
    doc = yaml.safe_load(result.stdout)
    assert doc["source"]["type"] == "oss" and doc["source"]["bucket"] == "logs"
    assert doc["source"]["credentials"] == "env:SRCX"
    assert doc["destination"]["credentials"] == "secret:lake-keys"
    assert doc["transfer"]["concurrency"] == 32 and doc["compare"] == "size_etag"
    assert set(doc) >= {"source", "destination", "transfer", "manifest", "maxcompute", "events"}
    assert re.search(r"^# job: logs-lake-[0-9a-f]{6}$", result.stdout, re.M)
    assert os.listdir(tmp_path) == [], "nothing written (no Hydra outputs/ either)"


def test_cfg_other_than_job_and_cfg_on_a_command_without_settings_are_one_line(capsys):
    assert "--cfg hydra is not supported" in one_error_line(capsys, main(["sync", "--cfg", "hydra"]))
    assert "has no configuration" in one_error_line(capsys, main(["keys", "--cfg", "job"]))
    line = one_error_line(capsys, main(["sync", "source=ftp", "--cfg=job"]))
    assert "source=ftp is not a known option (s3, cos, kodo, local, maxcompute, oss)" in line


def test_a_flag_in_a_real_process_is_one_line_with_the_setting_to_write():
    result = run_cli(["sync", "source.bucket=a", "destination.bucket=b", "--dry-run"])
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "dth-ray: error: --dry-run is not an option; write dry_run=true instead " \
                            "(settings are key=value)\n"


@pytest.mark.parametrize(("args", "write"), [
    (["sync", "--dry-run"], "dry_run=true"),
    (["plan", "--report=x.json"], "report=x.json"),
    (["sync", "--source.bucket", "logs", "destination.bucket=b"], "source.bucket=logs"),
    (["verify", "--source-bucket=logs"], "source.bucket=logs"),
    (["sync", "--transfer.concurrency", "64"], "transfer.concurrency=64"),
    (["sync", "--no-resume"], "resume=false"),
    (["sync", "--dry-run", "false"], "dry_run=false"),
    (["sync", "--job"], "job=VALUE"),
    (["sync", "-n"], "dry_run=true"),
    (["sync", "-P"], "progress=on"),
    (["status", "--filter.include=*.csv"], "filter.include='*.csv'"),
    (["--dry-run", "sync"], "dry_run=true"),
    (["events", "setup", "--events.queue_name", "q"], "events.queue_name=q"),
])
def test_flags_are_answered_with_the_key_value_to_write(args, write, capsys):
    line = one_error_line(capsys, main(args))
    assert f"write {write} instead" in line


def test_an_unknown_flag_gets_a_suggestion_when_one_is_close(capsys):
    line = one_error_line(capsys, main(["sync", "--concurency=3"]))
    assert "--concurency=3 is not an option, and concurency is not a config key; did you mean " \
           "transfer.concurrency?" in line
    assert "dth-ray keys lists them" in one_error_line(capsys, main(["sync", "--frobnicate"]))


@pytest.mark.parametrize(("args", "message"), [
    (["sync", "transfer.concurency=3"],
     "transfer.concurency is not a config key; did you mean transfer.concurrency?"),
    (["sync", "concurrency=3"], "concurrency is not a config key; did you mean transfer.concurrency?"),
    (["plan", "sorce.bucket=x"], "sorce.bucket is not a config key; did you mean source.bucket?"),
    (["watch", "schedule.intervall=1h"], "did you mean schedule.interval?"),
    (["jobs", "manifest.pth=/tmp/m.sqlite"], "did you mean manifest.path?"),
    (["sync", "source=os"],
     "source=os is not a known option (s3, cos, kodo, local, maxcompute, oss); did you mean source=oss?"),
    (["sync", "source.bucket"], "source.bucket needs a value: source.bucket=VALUE"),
    (["synk"], "unknown command 'synk'; did you mean sync?"),
    (["source.bucket=x"], "no command before source.bucket=x"),
])
def test_misspellings_get_did_you_mean_in_one_line(args, message, capsys):
    assert message in one_error_line(capsys, main(args))


def test_a_misspelled_key_past_the_command_line_check_still_gets_did_you_mean():
    """load_config called directly (as `status` and the ops commands do): Hydra's error, rewritten."""
    from dth_ray.compose import load_config
    from dth_ray.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config(["transfer.concurency=3"])
    assert str(info.value).startswith(
        "transfer.concurency is not a config key; did you mean transfer.concurrency?")


def test_settings_that_are_not_config_keys_pass_where_a_command_takes_them(capsys, tmp_path):
    """status takes prefix= and key=; Hydra's own +key/~key forms are left to Hydra."""
    report = tmp_path / "jobs.json"
    assert main(["jobs", f"manifest.path={tmp_path / 'none.sqlite'}", f"report={report}"]) == 0
    assert json.loads(report.read_text()) == {"jobs": []}
    assert not (tmp_path / "none.sqlite").exists(), "listing a manifest that does not exist creates nothing"
    out = capsys.readouterr()
    assert "0 job(s) in " in out.err
    assert main(["status", "job=nothing-here", f"manifest.path={tmp_path / 'm.sqlite'}", "prefix=a/",
                 "--cfg", "job"]) == 0
    assert "job: nothing-here" in capsys.readouterr().out
