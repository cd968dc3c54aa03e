"""cluster.yaml, checked offline: Ray's own config pipeline and schema, EC2's request model, and the commands.

`ray up` does, in order: prepare_config (merge with the AWS provider's defaults.yaml, per-node-type worker
bounds), provider.fillout_available_node_types_resources (EC2 DescribeInstanceTypes), validate_config (the
ray-schema.json JSON schema plus cross-field checks), provider.bootstrap_config (IAM, key pair, subnets,
security group: AWS API calls). The first and third are pure functions of the file and run here unchanged;
the two AWS steps need credentials and the network, so instead each node_config is validated against the
RunInstances input shape that botocore ships (what the AWS node provider passes node_config to), and the
resources the autoscaler relies on are set explicitly in the file rather than auto-detected.

The shell commands are run for real against stubs (sudo, ray, ip, tc, ...) in a throwaway HOME, composed
the way Ray's updater composes them (RAY_OVERRIDE_RESOURCES, RAY_HEAD_IP, `source ~/.bashrc`), so the checks
see what a node would see: the files written under /etc, the PATH and auth settings ~/.bashrc ends up
with, and the environment `ray start` runs in.
"""

from __future__ import annotations

import copy
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import botocore.session
import jsonschema
import pytest
import ray
import yaml
from botocore.validate import ParamValidator
from ray.autoscaler._private.aws.config import _configure_security_group
from ray.autoscaler._private.command_runner import _with_environment_variables, _with_interactive
from ray.autoscaler._private.util import prepare_config, validate_config, with_head_node_ip
from ray.autoscaler.tags import TAG_RAY_CLUSTER_NAME, TAG_RAY_NODE_STATUS

from tests.iam_eval import Request, allowed, tag_context

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"
WORKER_POLICY = ROOT / "deploy" / "iam-worker-policy.json"
HEAD_POLICY = ROOT / "deploy" / "iam-head-policy.json"

GRAVITON_NETWORK = re.compile(r"^c(6|7|8)gn\.[0-9a-z]+$")  # network-optimized Graviton: c6gn, c7gn, c8gn
AMI_ID = re.compile(r"^ami-[0-9a-f]{8,17}$")
PROFILE_ARN = re.compile(r"^arn:aws(-cn|-us-gov)?:iam::(?P<account>\d{12}):instance-profile/(?P<name>[\w+=,.@/-]+)$")
NOFILE_WANTED = 1_048_576
MIB = 1024 * 1024
HEAD_IP = "10.0.0.2"
FAKE_TOKEN = "0123456789abcdef0123456789abcdef"

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


# ------------------------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    cfg = prepare_config(copy.deepcopy(raw))
    validate_config(cfg)
    return cfg


def _head(cfg: dict) -> dict:
    return cfg["available_node_types"][cfg["head_node_type"]]


def _workers(cfg: dict) -> dict[str, dict]:
    types = cfg["available_node_types"]
    workers = {name: t for name, t in types.items() if name != cfg["head_node_type"]}
    assert workers, "cluster.yaml has no worker node type"
    return workers


def _write_exe(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def _run(cmd: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def _sandbox(tmp_path: Path) -> tuple[Path, Path, dict]:
    """A HOME, a root for files written with `sudo tee`, a stub bin directory and a clean environment."""
    home, root, stubs = tmp_path / "home", tmp_path / "root", tmp_path / "stubs"
    home.mkdir(parents=True)
    root.mkdir()
    (home / ".bashrc").write_text("# stock ~/.bashrc\n")
    _write_exe(stubs / "sudo", f"""#!/bin/bash
printf '%s\\n' "$*" >> {shlex.quote(str(tmp_path / "sudo.log"))}
while [[ "$1" == *=* ]]; do shift; done      # sudo VAR=value cmd
if [ "$1" = tee ]; then f={shlex.quote(str(root))}"$2"; mkdir -p "$(dirname "$f")"; cat > "$f"; fi
exit 0
""")
    _write_exe(stubs / "ip", "#!/bin/bash\necho 'default via 10.0.0.1 dev ens5 proto dhcp src 10.0.0.5 metric 100'\n")
    _write_exe(stubs / "tc", "#!/bin/bash\nprintf '%b\\n' \"${TC_SHOW:-qdisc mq 0: root}\"\n")
    for name in ("sysctl", "modprobe", "apt-get", "cloud-init"):
        _write_exe(stubs / name, "#!/bin/bash\nexit 0\n")
    env = {"HOME": str(home), "PATH": f"{stubs}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    return home, root, env


def _as_ray_runs(cmd: str, env_vars: dict) -> str:
    """The command line Ray's SSH command runner sends for `cmd` (minus ssh and `bash --login -i`)."""
    wrapped = _with_interactive(_with_environment_variables(cmd, env_vars))
    return shlex.split(wrapped[-1])[0]  # "source ~/.bashrc; export OMP_NUM_THREADS=1 ... && (cmd)"


def _ray_stub(home: Path, log: Path) -> None:
    """`ray` as installed by setup_commands (~/dth-venv/bin): records its arguments and environment."""
    _write_exe(home / "dth-venv" / "bin" / "ray", f"""#!{sys.executable}
import json, os, resource, sys
path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
token = open(path).read() if os.path.exists(path) else None
keys = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_OVERRIDE_RESOURCES", "RAY_HEAD_IP")
rec = {{"args": sys.argv[1:], "env": {{k: os.environ.get(k) for k in keys}}, "token": token,
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}}
with open({str(log)!r}, "a") as f:
    f.write(json.dumps(rec) + "\\n")
""")


def _node_after_setup(raw: dict, tmp_path: Path) -> tuple[Path, dict]:
    """A HOME as `ray up` leaves it before the start commands: file mounts synced, ~/.bashrc edited."""
    home, _root, env = _sandbox(tmp_path)
    for remote in raw["file_mounts"]:  # the token file arrives through file_mounts
        dest = Path(remote.replace("~", str(home), 1))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(FAKE_TOKEN)
    for cmd in raw["setup_commands"]:
        if ".bashrc" in cmd or "auth_token" in cmd:
            for _ in range(2):  # `ray up` reruns setup on every update: the edits must not pile up
                result = _run(cmd, env, home)
                assert result.returncode == 0, (cmd, result.stderr)
    return home, env


def _start(raw: dict, cmds: list[str], resources: dict, tmp_path: Path) -> list[dict]:
    """Runs the start commands; records what `ray` saw. They must set token auth themselves: the auth lines
    ~/.bashrc gets (for drivers started by hand) are held back while they run."""
    home, env = _node_after_setup(raw, tmp_path)
    log = tmp_path / "ray.log"
    _ray_stub(home, log)
    bashrc = home / ".bashrc"
    full = bashrc.read_text()
    bashrc.write_text("".join(line for line in full.splitlines(True) if "RAY_AUTH" not in line))
    for cmd in cmds:
        result = _run(_as_ray_runs(cmd, {"RAY_OVERRIDE_RESOURCES": resources}), env, home)
        assert result.returncode == 0, (cmd, result.stdout, result.stderr)
    bashrc.write_text(full)
    return [json.loads(line) for line in log.read_text().splitlines()]


def _policy_actions(policy: dict) -> list[tuple[str, list[str], list[str]]]:
    out = []
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st.get("Resource", [])  # (a NotResource statement names what it does not cover)
        out.append((st.get("Sid", ""), actions, resources if isinstance(resources, list) else [resources]))
    return out


# ------------------------------------------------------------------------------------ Ray's schema


def test_validates_with_rays_prepare_and_validate_config(raw, prepared):
    # prepare_config merged the AWS defaults without overriding what the file sets ...
    assert prepared["provider"]["type"] == "aws"
    assert prepared["cluster_synced_files"] == []  # came from ray/autoscaler/aws/defaults.yaml
    assert prepared["head_setup_commands"] == raw["setup_commands"] + raw["head_setup_commands"]
    assert prepared["worker_setup_commands"] == raw["setup_commands"] + raw["worker_setup_commands"]
    # ... and no default node type of Ray's (m5.large) slipped in.
    assert set(prepared["available_node_types"]) == set(raw["available_node_types"])
    # validate_config (already run by the fixture) really rejects what the schema forbids:
    typo = copy.deepcopy(prepared)
    typo["idle_timeout_minute"] = 5
    with pytest.raises(jsonschema.ValidationError):
        validate_config(typo)
    bad_type = copy.deepcopy(prepared)
    next(iter(_workers(bad_type).values()))["resources"]["transfer_slot"] = "32"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(bad_type)


def test_node_configs_are_valid_run_instances_requests(prepared):
    ec2 = botocore.session.get_session().get_service_model("ec2")
    shape = ec2.operation_model("RunInstances").input_shape
    for name, node_type in prepared["available_node_types"].items():
        conf = node_type["node_config"]
        report = ParamValidator().validate({**conf, "MinCount": 1, "MaxCount": 1}, shape)
        assert not report.has_errors(), f"{name}: {report.generate_report()}"
        assert conf["InstanceType"] in shape.members["InstanceType"].enum, name


# --------------------------------------------------------------------------------- node settings


def test_network_optimized_graviton_with_arm64_ami(raw, prepared):
    images = set()
    for name, node_type in prepared["available_node_types"].items():
        conf = node_type["node_config"]
        assert GRAVITON_NETWORK.match(conf["InstanceType"]), f"{name}: {conf['InstanceType']} is not c6gn/c7gn/c8gn"
        assert AMI_ID.match(conf.get("ImageId", "")), f"{name}: explicit AMI id required, got {conf.get('ImageId')}"
        images.add(conf["ImageId"])
    assert len(images) == 1, "head and workers should boot the same (arm64) image"
    text = CLUSTER_YAML.read_text()
    # how to pick the current arm64 AMI is documented next to it
    assert re.search(r"/aws/service/canonical/ubuntu/server/\S+/arm64/\S+/ami-id", text)
    assert "describe-images" in text


def test_worker_bounds_and_idle_timeout(raw, prepared):
    assert isinstance(raw.get("idle_timeout_minutes"), (int, float)) and raw["idle_timeout_minutes"] > 0
    assert raw["provider"]["cache_stopped_nodes"] is False
    assert raw["provider"]["region"]
    assert raw["auth"]["ssh_user"] == "ubuntu"
    assert prepared["max_workers"] >= 1
    assert _head(prepared)["max_workers"] == 0
    total_min = 0
    for name, node_type in _workers(prepared).items():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"] <= prepared["max_workers"], name
        total_min += node_type["min_workers"]
    assert total_min <= prepared["max_workers"]


def test_transfer_slot_advertised_by_workers_only(prepared):
    for name, node_type in _workers(prepared).items():
        res = node_type["resources"]
        assert res.get("transfer_slot", 0) >= 1, name
        assert res.get("CPU", 0) >= 1, name
    # the head offers none, so the driver's transfer_slot request can only be met by launching workers
    assert "transfer_slot" not in _head(prepared)["resources"]
    try:
        from dth_ray.runtime.autoscaling import SLOT
    except ImportError:  # the driver side lives elsewhere; the name is the contract
        return
    assert SLOT == "transfer_slot"


def test_iam_profiles_and_policies(prepared):
    head_conf = _head(prepared)["node_config"]
    head_match = PROFILE_ARN.match(head_conf.get("IamInstanceProfile", {}).get("Arn", ""))
    assert head_match, "the head needs its own instance profile (autoscaler + iam:PassRole)"
    worker_profiles = set()
    for name, node_type in _workers(prepared).items():
        match = PROFILE_ARN.match(node_type["node_config"].get("IamInstanceProfile", {}).get("Arn", ""))
        assert match, f"{name}: workers need an instance profile (S3, DynamoDB, SQS, Secrets Manager, CloudWatch)"
        worker_profiles.add((match["account"], match["name"]))
    assert head_match["name"] not in {n for _, n in worker_profiles}

    worker = _policy_actions(json.loads(WORKER_POLICY.read_text()))
    granted = {a for _, actions, _ in worker for a in actions}
    for needed in ("s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:AbortMultipartUpload",
                   "dynamodb:Query", "dynamodb:PutItem", "dynamodb:CreateTable",
                   "sqs:ReceiveMessage", "sqs:DeleteMessage", "secretsmanager:GetSecretValue",
                   "cloudwatch:PutMetricData", "logs:PutLogEvents"):
        assert needed in granted, needed

    head = _policy_actions(json.loads(HEAD_POLICY.read_text()))
    head_granted = {a for _, actions, _ in head for a in actions}
    for needed in ("ec2:RunInstances", "ec2:TerminateInstances", "ec2:CreateTags", "ec2:DescribeInstances"):
        assert needed in head_granted, needed
    passable = {r for _, actions, resources in head if "iam:PassRole" in actions for r in resources}
    for account, profile in worker_profiles:  # convention (documented in cluster.yaml): role name = profile name
        assert f"arn:aws:iam::{account}:role/{profile}" in passable, f"head cannot pass the {profile} role"


def _statements(policy: dict) -> list[dict]:
    return policy["Statement"] if isinstance(policy["Statement"], list) else [policy["Statement"]]


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


# Instance actions that change something (Ray's node provider uses Run, CreateTags, Terminate, Stop, Start).
MUTATING_INSTANCE_ACTIONS = {"ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances",
                             "ec2:RebootInstances", "ec2:ModifyInstanceAttribute", "ec2:DeleteTags",
                             "ec2:AssociateIamInstanceProfile", "ec2:ReplaceIamInstanceProfileAssociation"}


def test_head_policy_ec2_conditions_name_the_cluster(raw):
    """Statement by statement: every EC2 right that changes an instance is conditioned on the cluster tag."""
    cluster, region = raw["cluster_name"], raw["provider"]["region"]
    instances = [f"arn:aws:ec2:{region}:123456789012:instance/*"]
    assert TAG_RAY_CLUSTER_NAME == "ray-cluster-name"  # the tag Ray's node provider puts on every node
    policy = json.loads(HEAD_POLICY.read_text())
    seen = set()
    for st in _statements(policy):
        actions = set(_as_list(st["Action"]))
        assert not any("*" in a for a in actions if a.startswith("ec2:")), f"{st['Sid']}: no EC2 wildcards"
        cond = st.get("Condition", {})
        equals = cond.get("StringEquals", {})
        if actions & MUTATING_INSTANCE_ACTIONS:
            assert equals.get(f"ec2:ResourceTag/{TAG_RAY_CLUSTER_NAME}") == cluster, st["Sid"]
            assert _as_list(st["Resource"]) == instances, st["Sid"]
            seen |= actions & MUTATING_INSTANCE_ACTIONS
        if "ec2:RunInstances" in actions:
            assert actions == {"ec2:RunInstances"}, f"{st['Sid']}: RunInstances stands alone"
            if "Resource" in st:  # the instance itself: only with the cluster's tag in the request
                assert _as_list(st["Resource"]) == instances, st["Sid"]
                assert equals.get(f"aws:RequestTag/{TAG_RAY_CLUSTER_NAME}") == cluster, st["Sid"]
                seen.add("run-tagged")
            else:  # images, subnets, groups, volumes, interfaces: everything except an instance
                assert "arn:aws:ec2:*:*:instance/*" in _as_list(st["NotResource"]), st["Sid"]
                assert equals.get("aws:RequestedRegion") == region, st["Sid"]
        if "ec2:CreateTags" in actions:
            assert actions == {"ec2:CreateTags"}, f"{st['Sid']}: CreateTags stands alone"
            if equals.get("ec2:CreateAction") == "RunInstances":
                seen.add("tag-on-create")
            else:  # status updates on this cluster's nodes, never (re)writing the cluster tag itself
                assert equals.get(f"ec2:ResourceTag/{TAG_RAY_CLUSTER_NAME}") == cluster, st["Sid"]
                keys = cond["ForAllValues:StringNotEquals"]["aws:TagKeys"]
                assert keys == [TAG_RAY_CLUSTER_NAME], st["Sid"]
                seen.add("retag-own")
    assert seen >= {"ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances", "run-tagged",
                    "tag-on-create", "retag-own"}


def _ec2(action: str, resource: str, region: str, **ctx) -> Request:
    return Request(f"ec2:{action}", resource, {"aws:RequestedRegion": region, **ctx})


def test_head_policy_allows_this_cluster_and_refuses_the_rest(raw):
    """The policy evaluated on the requests Ray's node provider makes, and on the ones it must not get."""
    cluster, region = raw["cluster_name"], raw["provider"]["region"]
    policy = json.loads(HEAD_POLICY.read_text())
    instance = f"arn:aws:ec2:{region}:123456789012:instance/i-0123456789abcdef0"
    ours = {TAG_RAY_CLUSTER_NAME: cluster, "ray-node-kind": "worker"}
    theirs = {TAG_RAY_CLUSTER_NAME: "someone-else"}
    launch = {TAG_RAY_CLUSTER_NAME: cluster, "ray-node-status": "pending", "Name": "ray-dth-ray-worker"}
    expect = [
        # launching a worker: the instance with its tags, the resources it uses, tags written on create
        (_ec2("RunInstances", f"arn:aws:ec2:{region}:123456789012:instance/*", region,
              **tag_context(request_tags=launch)), True),
        (_ec2("RunInstances", f"arn:aws:ec2:{region}::image/ami-08a52c1a07bfe5e12", region), True),
        (_ec2("RunInstances", f"arn:aws:ec2:{region}:123456789012:subnet/subnet-1", region), True),
        (_ec2("RunInstances", f"arn:aws:ec2:{region}:123456789012:volume/*", region), True),
        (_ec2("CreateTags", f"arn:aws:ec2:{region}:123456789012:instance/*", region,
              **tag_context(request_tags=launch), **{"ec2:CreateAction": "RunInstances"}), True),
        # ... but never an untagged or another cluster's instance, nor in another region
        (_ec2("RunInstances", f"arn:aws:ec2:{region}:123456789012:instance/*", region,
              **tag_context(request_tags={"Name": "x"})), False),
        (_ec2("RunInstances", f"arn:aws:ec2:{region}:123456789012:instance/*", region,
              **tag_context(request_tags=theirs)), False),
        (_ec2("RunInstances", f"arn:aws:ec2:{region}:123456789012:instance/*", region), False),
        (_ec2("RunInstances", "arn:aws:ec2:eu-west-1::image/ami-1", "eu-west-1"), False),
        # the autoscaler's status tags on its own nodes; not the cluster tag, not on other instances
        (_ec2("CreateTags", instance, region,
              **tag_context(resource_tags=ours, request_tags={TAG_RAY_NODE_STATUS: "up-to-date"})), True),
        (_ec2("CreateTags", instance, region,
              **tag_context(resource_tags=ours, request_tags={TAG_RAY_CLUSTER_NAME: "someone-else"})), False),
        (_ec2("CreateTags", instance, region,
              **tag_context(resource_tags=theirs, request_tags={TAG_RAY_NODE_STATUS: "up-to-date"})), False),
        (_ec2("CreateTags", instance, region,
              **tag_context(resource_tags={}, request_tags={TAG_RAY_CLUSTER_NAME: cluster})), False),
        (_ec2("DescribeInstances", "*", region), True),
        (_ec2("DescribeInstances", "*", "eu-west-1"), False),
        (_ec2("ModifyInstanceAttribute", instance, region, **tag_context(resource_tags=ours)), False),
        (Request("iam:PassRole", "arn:aws:iam::123456789012:role/dth-ray-worker",
                 {"iam:PassedToService": "ec2.amazonaws.com"}), True),
        (Request("iam:PassRole", "arn:aws:iam::123456789012:role/dth-ray-head",
                 {"iam:PassedToService": "ec2.amazonaws.com"}), False),
    ]
    for action in ("TerminateInstances", "StopInstances", "StartInstances"):
        expect += [(_ec2(action, instance, region, **tag_context(resource_tags=ours)), True),
                   (_ec2(action, instance, region, **tag_context(resource_tags=theirs)), False),
                   (_ec2(action, instance, region, **tag_context(resource_tags={})), False)]
    wrong = [(req, want) for req, want in expect if allowed(policy, req) != want]
    assert not wrong, wrong


def test_ssh_dashboard_and_instance_metadata_are_closed(raw, prepared):
    # SSH: both node types name one group of the user's, so Ray never creates its own (SSH from 0.0.0.0/0).
    types = prepared["available_node_types"].values()
    groups = {tuple(t["node_config"].get("SecurityGroupIds", ())) for t in types}
    assert len(groups) == 1 and all(re.fullmatch(r"sg-[0-9a-f]{8,17}", g) for g in next(iter(groups))), groups
    before = copy.deepcopy(prepared)
    assert _configure_security_group(copy.deepcopy(prepared)) == before  # Ray's bootstrap leaves them alone
    for rule in raw["provider"].get("security_group", {}).get("IpPermissions", []):
        cidrs = {r.get("CidrIp") for r in rule.get("IpRanges", [])} | {
            r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])}
        assert not cidrs & {"0.0.0.0/0", "::/0"}, rule
    text = CLUSTER_YAML.read_text()
    assert "deploy/security_group.py --ssh-cidr" in text and (ROOT / "deploy" / "security_group.py").is_file()

    # The dashboard (and its job API) only on the head's loopback; `ray dashboard` tunnels to it.
    head_cmds = " ".join(raw["head_start_ray_commands"])
    assert re.findall(r"--dashboard-host[= ](\S+)", head_cmds) == ["127.0.0.1"]
    assert "0.0.0.0" not in head_cmds + " ".join(raw["worker_start_ray_commands"])

    # IMDSv2 only, and its answers go no further than the node itself: nothing runs in a container.
    assert "docker" not in raw
    for name, node_type in prepared["available_node_types"].items():
        meta = node_type["node_config"]["MetadataOptions"]
        assert meta["HttpTokens"] == "required", name
        assert meta["HttpEndpoint"] == "enabled", name
        assert meta["HttpPutResponseHopLimit"] == 1, name


# ------------------------------------------------------------------------------------- commands


@needs_bash
def test_every_command_is_valid_bash(raw):
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    for key in keys:
        for cmd in raw.get(key, []):
            result = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
            assert result.returncode == 0, f"{key}: {cmd!r}: {result.stderr}"


@needs_bash
@pytest.mark.parametrize(("qdisc_now", "replaced_expected"), [
    ("qdisc mq 0: root\\nqdisc fq_codel 0: parent :1", ["tc qdisc replace dev ens5 root handle 1: mq"]),
    ("qdisc mq 1: root\\nqdisc fq 1: parent 1:1", []),  # a rerun of `ray up`: fq is already there
])
def test_initialization_enables_bbr_fq_buffers_and_nofile(raw, tmp_path, qdisc_now, replaced_expected):
    home, root, env = _sandbox(tmp_path)
    env["TC_SHOW"] = qdisc_now
    for cmd in raw["initialization_commands"]:
        result = _run(cmd, env, home)
        assert result.returncode == 0, (cmd, result.stderr)
    sudo = (tmp_path / "sudo.log").read_text().splitlines()

    conf_files = sorted((root / "etc" / "sysctl.d").glob("*.conf"))
    assert conf_files, "no /etc/sysctl.d file written: settings would not survive a reboot"
    sysctl: dict[str, str] = {}
    for f in conf_files:
        assert f.name > "50-default.conf", f"{f.name} sorts before Ubuntu's 50-default.conf (fq_codel) and loses"
        for line in f.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith(("#", ";")):
                key, _, value = line.partition("=")
                sysctl[key.strip()] = " ".join(value.split())
    assert sysctl["net.core.default_qdisc"] == "fq"
    assert sysctl["net.ipv4.tcp_congestion_control"] == "bbr"
    for key in ("net.core.rmem_max", "net.core.wmem_max"):
        assert int(sysctl[key]) >= 64 * MIB, key
    for key in ("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"):
        low, default, high = (int(v) for v in sysctl[key].split())
        assert low <= default <= high and high >= 64 * MIB, key
    assert int(sysctl["fs.file-max"]) >= NOFILE_WANTED
    assert any(re.search(r"\bsysctl (--system|-p)\b", line) for line in sudo), "sysctl settings never applied"
    assert any(re.search(r"\bmodprobe tcp_bbr\b", line) for line in sudo)
    assert "tcp_bbr" in "".join(f.read_text() for f in (root / "etc" / "modules-load.d").glob("*.conf"))
    # the NIC's existing queues are switched to fq once, and left alone when they already have it
    assert [line for line in sudo if line.startswith("tc qdisc replace")] == replaced_expected

    limits = [f for f in (root / "etc" / "security" / "limits.d").glob("*.conf")]
    assert limits, "no /etc/security/limits.d file written"
    nofile: dict[tuple[str, str], int] = {}
    for f in limits:
        for line in f.read_text().splitlines():
            fields = line.split()
            if len(fields) == 4 and fields[2] == "nofile":
                nofile[(fields[0], fields[1])] = int(fields[3])
    nr_open = int(sysctl.get("fs.nr_open", NOFILE_WANTED))  # a hard nofile above fs.nr_open breaks logins
    for who in ("*", "root"):  # pam_limits: "*" does not cover root
        for kind in ("soft", "hard"):
            assert NOFILE_WANTED <= nofile[(who, kind)] <= nr_open, (who, kind)


@needs_bash
def test_setup_installs_pinned_ray_and_dth_ray_without_a_compiler(raw, tmp_path):
    cmds = raw["setup_commands"]
    installs = [i for i, c in enumerate(cmds) if re.search(r"\bpip install\b.*\bray\[default\]", c)]
    assert len(installs) == 1, "one pip install of ray[default] + dth_ray"
    install = cmds[installs[0]]
    pins = re.findall(r"ray\[default\]==([0-9][0-9A-Za-z.+-]*)", install)
    assert pins == [ray.__version__], f"ray[default] must be pinned to {ray.__version__} (the client's Ray)"
    spec = re.search(r"dth_ray @ (\S+?)\"", install)
    assert spec, "dth_ray must be installed from a pinned URL"
    url = spec[1]
    git = re.fullmatch(r"git\+https://\S+\.git@(?P<ref>[\w.+/-]+)", url)
    wheel = re.fullmatch(r"https://\S+/dth_ray-\d[\w.]*-py3-none-any\.whl", url)
    assert wheel or (git and git["ref"] not in {"main", "master", "HEAD"}), url
    # dth_ray's CRC-64 (fastcrc) ships arm64 wheels; crcmod (oss2's) may fall back to pure Python unused
    assert not any("build-essential" in c or "python3-dev" in c for c in cmds), "no compiler is needed"
    assert not any("crcmod" in c for c in cmds)
    # everything after the venv exists is on PATH for later commands (start commands, `ray attach`)
    home, env = _node_after_setup(raw, tmp_path)
    result = _run("source ~/.bashrc; echo $PATH", env, home)
    assert result.stdout.strip().split(":")[0] == str(home / "dth-venv" / "bin")
    assert (home / ".bashrc").read_text().count("dth-venv/bin") == 1


@needs_bash
def test_token_auth_consistent_on_head_and_workers(raw, prepared, tmp_path):
    text = CLUSTER_YAML.read_text()
    assert not re.search(r"RAY_AUTH_TOKEN\s*=", text), "no token value in the repository"
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    mounts = {remote: local for remote, local in raw["file_mounts"].items() if "auth_token" in remote}
    assert mounts, "the token file must reach every node through file_mounts"
    for local in mounts.values():
        assert local.startswith("~") or Path(local).is_absolute(), "token is read from the user's machine"
        assert not Path(os.path.expanduser(local)).resolve().is_relative_to(ROOT), "token inside the repo"

    head_res = _head(prepared)["resources"]
    head = _start(raw, prepared["head_start_ray_commands"], head_res, tmp_path / "head")
    worker_type = next(iter(_workers(prepared).values()))
    worker = _start(raw, with_head_node_ip(prepared["worker_start_ray_commands"], HEAD_IP),
                    worker_type["resources"], tmp_path / "worker")
    hard_before = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    wanted_nofile = NOFILE_WANTED if hard_before == resource.RLIM_INFINITY else min(NOFILE_WANTED, hard_before)

    seen = {}
    for role, calls in (("head", head), ("worker", worker)):
        home = tmp_path / role / "home"
        assert [c["args"][0] for c in calls] == ["stop", "start"], f"{role}: ray stop, then ray start"
        start = calls[1]
        env = start["env"]
        assert env["RAY_AUTH_MODE"] == "token", role
        assert env["RAY_AUTH_TOKEN"] is None, f"{role}: the token travels as a file, not on a command line"
        assert start["token"] == FAKE_TOKEN, f"{role}: ray start cannot read the mounted token"
        expected_paths = {remote.replace("~", str(home), 1) for remote in mounts}
        assert env["RAY_AUTH_TOKEN_PATH"] in expected_paths, role
        assert start["nofile"] >= wanted_nofile, f"{role}: nofile {start['nofile']}"
        seen[role] = (env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN_PATH"].replace(str(home), "~"))
        # a driver started by hand on the node (ray attach; dth-ray sync runtime.address=auto) gets the same
        shell = _run("source ~/.bashrc; echo $RAY_AUTH_MODE $RAY_AUTH_TOKEN_PATH",
                     {"HOME": str(home), "PATH": "/usr/bin:/bin"}, home)
        assert shell.stdout.split() == [env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN_PATH"]], role
    assert seen["head"] == seen["worker"]

    head_args = head[1]["args"]
    assert "--head" in head_args and "--port=6379" in head_args
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_args
    worker_args = worker[1]["args"]
    assert f"--address={HEAD_IP}:6379" in worker_args and "--head" not in worker_args
    assert json.loads(worker[1]["env"]["RAY_OVERRIDE_RESOURCES"])["transfer_slot"] >= 1
