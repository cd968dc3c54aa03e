"""Create the Ray cluster's security group: SSH from one CIDR you name, all traffic among members, no more.

Ray's own group (made when a node_config has no SecurityGroupIds) always opens SSH to 0.0.0.0/0, so
cluster.yaml names this one instead. Idempotent: a rerun finds the group by name in the VPC and adds only
the rules it lacks; a group that already lets the whole internet in is refused, not reused.

    python deploy/security_group.py --ssh-cidr 203.0.113.7/32 [--region us-west-2] [--vpc-id vpc-...]

Prints the group id (for SecurityGroupIds in both node_configs of cluster.yaml). Exit 0 on success, 2 for a
bad argument or an unusable group, 1 when EC2 refuses.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

SSH_PORT = 22
DUPLICATE = "InvalidPermission.Duplicate"


class Refused(Exception):
    """A setting or an existing group this script will not use (exit 2)."""


def ssh_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The SSH source CIDR; a bare address means that one host. Raises Refused for the whole internet."""
    try:
        net = ipaddress.ip_network(text.strip())
    except ValueError as exc:
        raise Refused(f"--ssh-cidr {text!r} is not a CIDR ({exc})") from None
    if net.prefixlen == 0:
        raise Refused(f"--ssh-cidr {net} opens SSH to the whole internet; name your address or range")
    return net


def _ssh_rule(net) -> dict:
    why = "ray up / attach / dashboard over SSH"
    ranges = {"IpRanges": [{"CidrIp": str(net), "Description": why}]}
    if net.version == 6:
        ranges = {"Ipv6Ranges": [{"CidrIpv6": str(net), "Description": why}]}
    return {"IpProtocol": "tcp", "FromPort": SSH_PORT, "ToPort": SSH_PORT, **ranges}


def _self_rule(group_id: str) -> dict:
    return {"IpProtocol": "-1",
            "UserIdGroupPairs": [{"GroupId": group_id, "Description": "within the cluster"}]}


def _world_open(permissions: list[dict]) -> list[str]:
    """Rules of an existing group that admit any address."""
    return [f"{p.get('IpProtocol')}:{p.get('FromPort', 'all')}" for p in permissions
            if any(r.get("CidrIp") == "0.0.0.0/0" for r in p.get("IpRanges", []))
            or any(r.get("CidrIpv6") == "::/0" for r in p.get("Ipv6Ranges", []))]


def ensure_group(ec2, name: str, net, vpc_id: str = "", cluster_name: str = "dth-ray") -> str:
    """The id of group `name` in `vpc_id` (default VPC if empty) with the SSH and intra-cluster rules.
    Raises Refused when there is no default VPC or the existing group is open to the world."""
    if not vpc_id:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise Refused("this region has no default VPC; pass --vpc-id")
        vpc_id = vpcs[0]["VpcId"]
    found = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                  {"Name": "group-name", "Values": [name]}])["SecurityGroups"]
    if found:
        group_id = found[0]["GroupId"]
        open_rules = _world_open(found[0].get("IpPermissions", []))
        if open_rules:
            raise Refused(f"security group {name} ({group_id}) already admits the whole internet "
                          f"({', '.join(open_rules)}); remove those rules or pick another --name")
    else:
        group_id = ec2.create_security_group(
            GroupName=name, VpcId=vpc_id,
            Description="dth-ray Ray cluster: SSH from one CIDR, all within itself",
            TagSpecifications=[{"ResourceType": "security-group",
                                "Tags": [{"Key": "ray-cluster-name", "Value": cluster_name}]}])["GroupId"]
    for rule in (_ssh_rule(net), _self_rule(group_id)):
        try:
            ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[rule])
        except Exception as exc:  # botocore's ClientError; only "already there" is fine
            if getattr(exc, "response", {}).get("Error", {}).get("Code") != DUPLICATE:
                raise
    return group_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ssh-cidr", required=True, help="where you run `ray up` from, e.g. 203.0.113.7/32")
    parser.add_argument("--region", default="us-west-2", help="cluster.yaml's provider.region")
    parser.add_argument("--vpc-id", default="", help="default: the region's default VPC")
    parser.add_argument("--name", default="dth-ray", help="group name (default dth-ray)")
    parser.add_argument("--cluster-name", default="dth-ray", help="cluster.yaml's cluster_name (a tag)")
    parser.add_argument("--endpoint-url", default=None, help="an EC2-compatible endpoint (tests)")
    args = parser.parse_args(argv)
    try:
        net = ssh_network(args.ssh_cidr)
        import boto3

        ec2 = boto3.client("ec2", region_name=args.region, endpoint_url=args.endpoint_url)
        group_id = ensure_group(ec2, args.name, net, args.vpc_id, args.cluster_name)
    except Refused as exc:
        print(f"security_group.py: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # credentials, permissions, network: one line, no traceback
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
        print(f"security_group.py: EC2 refused ({code})", file=sys.stderr)
        return 1
    print(group_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
