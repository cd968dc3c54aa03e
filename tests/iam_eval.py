"""A small evaluator of IAM identity policies, so tests can ask "would AWS allow this request?" offline.

It implements the part of AWS's policy evaluation the deploy/ policies use: Allow/Deny, Action/NotAction and
Resource/NotResource with `*`/`?` wildcards, and the condition operators StringEquals, StringNotEquals,
StringLike, StringNotLike, ArnEquals, ArnLike (also with ForAllValues:/ForAnyValue:). Semantics follow the
IAM reference: an explicit Deny wins; a key missing from the request fails a positive operator and passes a
negated one; ForAllValues holds on an empty set, ForAnyValue does not. Anything else raises ValueError, so a
policy that outgrows this fails its test loudly instead of being judged wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase


@dataclass(frozen=True)
class Request:
    """One authorization request: an action on a resource ARN with its condition context."""

    action: str
    resource: str
    context: dict = field(default_factory=dict)  # key -> str or list[str] (multi-valued, e.g. aws:TagKeys)


def _list(value) -> list:
    return value if isinstance(value, list) else [value]


def _glob(pattern: str, value: str, case: bool = True) -> bool:
    if not case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatchcase(value, pattern.replace("[", "[[]"))  # IAM has only * and ?


def _values(context: dict, key: str) -> list[str] | None:
    for k, v in context.items():  # condition keys are case-insensitive
        if k.lower() == key.lower():
            return [str(x) for x in _list(v)]
    return None


_MATCHERS = {
    "StringEquals": (lambda want, got: got == want, False),
    "StringNotEquals": (lambda want, got: got == want, True),
    "StringLike": (lambda want, got: _glob(want, got), False),
    "StringNotLike": (lambda want, got: _glob(want, got), True),
    "ArnEquals": (lambda want, got: got == want, False),
    "ArnLike": (lambda want, got: _glob(want, got), False),
}


def _condition_holds(operator: str, key: str, wanted, context: dict) -> bool:
    qualifier, _, base = operator.rpartition(":")
    if base not in _MATCHERS or qualifier not in ("", "ForAllValues", "ForAnyValue"):
        raise ValueError(f"condition operator {operator!r} is not supported by this evaluator")
    match, negated = _MATCHERS[base]
    wanted = [str(w) for w in _list(wanted)]
    got = _values(context, key)

    def one(value: str) -> bool:
        hit = any(match(w, value) for w in wanted)
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        return all(one(v) for v in got or [])
    if qualifier == "ForAnyValue":
        return any(one(v) for v in got or [])
    if got is None:
        return negated
    return any(one(v) for v in got)


def _statement_matches(st: dict, req: Request) -> bool:
    if "Action" in st:
        if not any(_glob(a, req.action, case=False) for a in _list(st["Action"])):
            return False
    elif any(_glob(a, req.action, case=False) for a in _list(st["NotAction"])):
        return False
    if "Resource" in st:
        if not any(_glob(r, req.resource) for r in _list(st["Resource"])):
            return False
    elif any(_glob(r, req.resource) for r in _list(st["NotResource"])):
        return False
    for operator, block in st.get("Condition", {}).items():
        for key, wanted in block.items():
            if not _condition_holds(operator, key, wanted, req.context):
                return False
    return True


def allowed(policy: dict, req: Request) -> bool:
    """True when `policy` allows `req` (some Allow statement matches and no Deny does)."""
    statements = _list(policy["Statement"])
    if any(st["Effect"] == "Deny" and _statement_matches(st, req) for st in statements):
        return False
    return any(st["Effect"] == "Allow" and _statement_matches(st, req) for st in statements)


def tag_context(resource_tags: dict | None = None, request_tags: dict | None = None,
                region: str = "", **extra) -> dict:
    """The condition context of a request on a tagged resource and/or carrying tags (ec2:ResourceTag/K,
    aws:RequestTag/K, aws:TagKeys, aws:RequestedRegion)."""
    ctx: dict = dict(extra)
    for k, v in (resource_tags or {}).items():
        ctx[f"ec2:ResourceTag/{k}"] = v
        ctx[f"aws:ResourceTag/{k}"] = v
    if request_tags is not None:
        for k, v in request_tags.items():
            ctx[f"aws:RequestTag/{k}"] = v
        ctx["aws:TagKeys"] = list(request_tags)
    if region:
        ctx["aws:RequestedRegion"] = region
    return ctx
