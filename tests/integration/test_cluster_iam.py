"""The head's IAM policy against the EC2 calls Ray's AWS node provider really makes (moto EC2 over HTTP),
and deploy/security_group.py creating the cluster's group on moto.

Ray's AWSNodeProvider runs unchanged against moto: it launches workers from cluster.yaml's node_config,
updates their status tags, stops, restarts and terminates them. Every EC2 call it sends is recorded and
turned into the authorization requests AWS would evaluate for it (the instance and each resource a launch
uses, the tags written on create, the tags already on the instance it acts on); tests/iam_eval.py judges
them against deploy/iam-head-policy.json. moto itself does not enforce IAM conditions, so this is what
proves the policy neither starves the autoscaler nor lets it touch an instance of another cluster.
"""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
import yaml
from ray.autoscaler._private.aws.node_provider import AWSNodeProvider
from ray.autoscaler.tags import (
    TAG_RAY_CLUSTER_NAME,
    TAG_RAY_LAUNCH_CONFIG,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_NAME,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)

from tests.iam_eval import Request, allowed, tag_context

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"  # moto's account, and the placeholder in deploy/*.json
SECURITY_GROUP_SCRIPT = ROOT / "deploy" / "security_group.py"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


@pytest.fixture(scope="module")
def head_policy() -> dict:
    return json.loads((ROOT / "deploy" / "iam-head-policy.json").read_text())


def _creds(moto_server) -> dict:
    return {"endpoint_url": moto_server.endpoint, "aws_access_key_id": "moto-head",
            "aws_secret_access_key": "x"}


class Recorder:
    """Records each EC2 call a node provider sends, with the tags its target instances had at that moment."""

    def __init__(self, ec2):
        self.ec2 = ec2  # a separate client, to read tags without being recorded
        self.calls: list[tuple[str, dict, dict]] = []

    def __call__(self, model, params, **_):
        ids = [*params.get("InstanceIds", [])]
        ids += [r for r in params.get("Resources", []) if r.startswith("i-")]
        tags = {}
        if ids:
            for res in self.ec2.describe_instances(InstanceIds=ids)["Reservations"]:
                for inst in res["Instances"]:
                    tags[inst["InstanceId"]] = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        self.calls.append((model.name, copy.deepcopy(params), tags))


def _provider(moto_server, cluster_name: str, region: str, cache_stopped: bool) -> AWSNodeProvider:
    return AWSNodeProvider({"type": "aws", "region": region, "cache_stopped_nodes": cache_stopped,
                            "aws_credentials": _creds(moto_server)}, cluster_name)


@contextlib.contextmanager
def _recording(recorder: Recorder, *providers: AWSNodeProvider):
    """Every EC2 call of these providers goes through `recorder`. Ray caches one boto3 resource per
    region and credentials, so providers share clients: each client is hooked once, and unhooked after."""
    clients = {id(r.meta.client): r.meta.client for p in providers for r in (p.ec2, p.ec2_fail_fast)}
    for client in clients.values():
        client.meta.events.register("before-parameter-build.ec2", recorder)
    try:
        yield
    finally:
        for client in clients.values():
            client.meta.events.unregister("before-parameter-build.ec2", recorder)


def _requests(call: str, params: dict, tags: dict, region: str) -> list[Request]:
    """The authorization requests AWS evaluates for one EC2 call (documented per action in the Service
    Authorization Reference: RunInstances checks the instance and each resource it uses, and CreateTags
    with ec2:CreateAction for the tags it writes)."""
    arn = f"arn:aws:ec2:{region}:{ACCOUNT}"
    base = {"aws:RequestedRegion": region}
    if call.startswith("Describe"):
        return [Request(f"ec2:{call}", "*", base)]
    if call == "RunInstances":
        specs = {s["ResourceType"]: {t["Key"]: t["Value"] for t in s["Tags"]}
                 for s in params.get("TagSpecifications", [])}
        out = [Request("ec2:RunInstances", f"{arn}:instance/*",
                       {**base, **tag_context(request_tags=specs.get("instance", {}))})]
        used = [f"arn:aws:ec2:{region}::image/{params['ImageId']}", f"{arn}:network-interface/*",
                f"{arn}:volume/*"]
        used += [f"{arn}:subnet/{params['SubnetId']}"] if "SubnetId" in params else []
        used += [f"{arn}:security-group/{g}" for g in params.get("SecurityGroupIds", [])]
        used += [f"{arn}:key-pair/{params['KeyName']}"] if "KeyName" in params else []
        out += [Request("ec2:RunInstances", r, base) for r in used]
        out += [Request("ec2:CreateTags", f"{arn}:{kind}/*",
                        {**base, **tag_context(request_tags=t), "ec2:CreateAction": "RunInstances"})
                for kind, t in specs.items()]
        profile = params.get("IamInstanceProfile", {}).get("Arn", "")
        if profile:  # convention (cluster.yaml): the role is named like its instance profile
            role = profile.replace(":instance-profile/", ":role/")
            out.append(Request("iam:PassRole", role, {"iam:PassedToService": "ec2.amazonaws.com"}))
        return out
    if call == "CreateTags":
        new = {t["Key"]: t.get("Value", "") for t in params["Tags"]}
        return [Request("ec2:CreateTags", f"{arn}:instance/{i}",
                        {**base, **tag_context(resource_tags=tags.get(i, {}), request_tags=new)})
                for i in params["Resources"]]
    return [Request(f"ec2:{call}", f"{arn}:instance/{i}",
                    {**base, **tag_context(resource_tags=tags.get(i, {}))})
            for i in params["InstanceIds"]]


def _worker_config(moto_server, cluster: dict, region: str) -> tuple[dict, str]:
    """cluster.yaml's worker node_config as `ray up` resolves it: subnets and the group filled in."""
    creds = _creds(moto_server)
    ec2 = boto3.client("ec2", region_name=region, **creds)
    iam = boto3.client("iam", region_name=region, **creds)
    worker = next(name for name in cluster["available_node_types"] if name != cluster["head_node_type"])
    conf = copy.deepcopy(cluster["available_node_types"][worker]["node_config"])
    profile = conf["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1]
    try:
        iam.create_role(RoleName=profile, AssumeRolePolicyDocument="{}")
        iam.create_instance_profile(InstanceProfileName=profile)
        iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=profile)
    except iam.exceptions.EntityAlreadyExistsException:
        pass
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    conf["SubnetIds"] = [s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]]
    conf["SecurityGroupIds"] = [ec2.create_security_group(
        GroupName=f"g-{uuid.uuid4().hex[:8]}", Description="test", VpcId=vpc)["GroupId"]]
    return conf, worker


def test_ray_node_provider_lifecycle_is_allowed_by_the_head_policy(moto_server, cluster, head_policy):
    region, name = cluster["provider"]["region"], cluster["cluster_name"]
    conf, worker = _worker_config(moto_server, cluster, region)
    tags = {TAG_RAY_NODE_KIND: "worker", TAG_RAY_NODE_NAME: f"ray-{name}-worker",
            TAG_RAY_NODE_STATUS: "pending", TAG_RAY_USER_NODE_TYPE: worker,
            TAG_RAY_LAUNCH_CONFIG: uuid.uuid4().hex}
    ec2 = boto3.client("ec2", region_name=region, **_creds(moto_server))
    recorder = Recorder(ec2)
    # cache_stopped_nodes=true exercises Stop and Start; cluster.yaml's setting (false) terminates
    caching = _provider(moto_server, name, region, True)
    terminating = _provider(moto_server, name, region, cluster["provider"]["cache_stopped_nodes"])
    with _recording(recorder, caching, terminating):
        first = list(caching.create_node(conf, tags, 1))
        second = list(caching.create_node(conf, tags, 1))
        assert set(caching.non_terminated_nodes({})) >= set(first + second)  # the autoscaler's poll
        caching.set_node_tags(first[0], {TAG_RAY_NODE_STATUS: "up-to-date"})  # as the NodeUpdater does
        assert caching.node_tags(first[0])[TAG_RAY_NODE_STATUS] == "up-to-date"
        caching.terminate_node(second[0])  # stopped, kept for reuse
        reused = list(caching.create_node(conf, tags, 1))  # started again
        assert reused == second
        assert set(terminating.non_terminated_nodes({})) >= set(first + reused)
        terminating.terminate_nodes(first + reused)
    states = {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances(InstanceIds=first + reused)[
        "Reservations"] for i in r["Instances"]}
    assert set(states.values()) <= {"shutting-down", "terminated"}, states
    made = [call for call, _, _ in recorder.calls]
    for needed in ("RunInstances", "DescribeInstances", "CreateTags", "StopInstances", "StartInstances"):
        assert needed in made, (needed, made)
    requests = [r for call, params, t in recorder.calls for r in _requests(call, params, t, region)]
    assert any(r.action == "ec2:TerminateInstances" for r in requests)
    refused = [r for r in requests if not allowed(head_policy, r)]
    assert not refused, refused


def test_head_policy_refuses_another_clusters_launch_and_foreign_instances(moto_server, cluster, head_policy):
    region, name = cluster["provider"]["region"], cluster["cluster_name"]
    conf, worker = _worker_config(moto_server, cluster, region)
    ec2 = boto3.client("ec2", region_name=region, **_creds(moto_server))
    foreign = ec2.run_instances(ImageId=conf["ImageId"], InstanceType="t3.micro", MinCount=1, MaxCount=1,
                                TagSpecifications=[{"ResourceType": "instance",
                                                    "Tags": [{"Key": "Name", "Value": "production-db"}]}],
                                )["Instances"][0]["InstanceId"]
    recorder = Recorder(ec2)
    ours = _provider(moto_server, name, region, False)
    other = _provider(moto_server, f"{name}-other", region, False)
    with _recording(recorder, ours, other):
        ours.terminate_nodes([foreign])  # what a confused or compromised head could send: refused ...
        assert foreign not in ours.non_terminated_nodes({})  # (Ray lists only its cluster's nodes)
        adopt = [{"Key": TAG_RAY_CLUSTER_NAME, "Value": name}]
        ours.ec2.meta.client.create_tags(Resources=[foreign], Tags=adopt)
        other.create_node(conf, {TAG_RAY_NODE_KIND: "worker", TAG_RAY_USER_NODE_TYPE: worker,
                                 TAG_RAY_LAUNCH_CONFIG: "x", TAG_RAY_NODE_NAME: "n"}, 1)
    judged = {}
    for call, params, t in recorder.calls:
        for req in _requests(call, params, t, region):
            judged.setdefault(call, []).append((req, allowed(head_policy, req)))
    assert [ok for _, ok in judged["TerminateInstances"]] == [False]
    assert [ok for _, ok in judged["CreateTags"]] == [False]
    # another cluster's name in the tag: the instance is refused, so the launch as a whole is (AWS needs
    # every resource of a RunInstances call allowed); its image, subnet, group and volumes alone are not
    instance = [ok for req, ok in judged["RunInstances"] if req.action == "ec2:RunInstances"
                and req.resource.endswith(":instance/*")]
    assert instance == [False]
    assert not all(ok for _, ok in judged["RunInstances"])


def _security_group(moto_server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SECURITY_GROUP_SCRIPT), "--endpoint-url", moto_server.endpoint,
                           *args], capture_output=True, text=True, timeout=120,
                          env={"AWS_ACCESS_KEY_ID": "moto-sg", "AWS_SECRET_ACCESS_KEY": "x",
                               "PATH": "/usr/bin:/bin"})


def test_security_group_script_opens_ssh_to_one_cidr_only(moto_server):
    name = f"dth-ray-{uuid.uuid4().hex[:8]}"
    ec2 = boto3.client("ec2", region_name="us-west-2", **_creds(moto_server))

    def groups() -> list[dict]:
        named = [{"Name": "group-name", "Values": [name]}]
        return ec2.describe_security_groups(Filters=named)["SecurityGroups"]

    for wide in ("0.0.0.0/0", "::/0", "10.0.0.1/8"):  # the internet, and a CIDR with host bits (a typo)
        refused = _security_group(moto_server, "--ssh-cidr", wide, "--name", name)
        assert refused.returncode == 2 and "--ssh-cidr" in refused.stderr, refused.stderr
    assert groups() == []

    made = _security_group(moto_server, "--ssh-cidr", "203.0.113.7/32", "--name", name)
    assert made.returncode == 0, made.stderr
    group_id = made.stdout.strip()
    again = _security_group(moto_server, "--ssh-cidr", "203.0.113.7/32", "--name", name)
    assert again.returncode == 0 and again.stdout.strip() == group_id, again.stderr  # idempotent
    [group] = groups()
    assert group["GroupId"] == group_id
    rules = group["IpPermissions"]
    ssh = [r for r in rules if r.get("FromPort") == 22]
    assert [(r["IpProtocol"], r["ToPort"], [x["CidrIp"] for x in r["IpRanges"]]) for r in ssh] == [
        ("tcp", 22, ["203.0.113.7/32"])]
    within = [r for r in rules if r["IpProtocol"] == "-1"]
    assert [[p["GroupId"] for p in r["UserIdGroupPairs"]] for r in within] == [[group_id]]
    assert len(rules) == 2
    assert {"Key": TAG_RAY_CLUSTER_NAME, "Value": "dth-ray"} in group.get("Tags", [])

    # a group of that name somebody opened to the world is refused, not reused
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    open_group = _security_group(moto_server, "--ssh-cidr", "203.0.113.7/32", "--name", name)
    assert open_group.returncode == 2 and "whole internet" in open_group.stderr
