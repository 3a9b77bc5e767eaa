"""Loading policy files: YAML → :class:`~persona_mw.bounds.policy.Policy`, packs expanded,
overrides and ``disable`` applied, every problem a PolicyError naming the file, rule and reason.

Kept apart from the model (:mod:`.policy`) so the pack loader (:mod:`.packs`), which builds on
the model, is used here without an import circle: policy ← packs ← loading.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import PolicyError
from ..validation import config_error
from .packs import expand_pack, user_pack_rules
from .policy import ACTION_RANK, AIDisclosure, Override, PackRef, Policy, PolicyFile, Rule

__all__ = ["load_policy", "policy_from_dict"]


def load_policy(*paths: str | os.PathLike[str]) -> Policy:
    """Load and merge policy files, in order. Later files may add rules and packs, make tier-2
    rules stricter (``overrides``) or switch tier-2 pack rules off (``disable``); nothing may
    loosen a tier-1 rule. Raises PolicyError naming the file, the rule and the reason."""
    if not paths:
        raise PolicyError("no policy file given; pass at least one path", source="load_policy")
    documents: list[tuple[str, dict[str, Any]]] = []
    for path in paths:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(
                f"cannot read the policy file: {exc.strerror}", source=source
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PolicyError(f"not valid YAML: {exc}", source=source) from None
        documents.append((source, data if data is not None else {}))
    return _merge(documents)


def policy_from_dict(data: dict[str, Any], *, source: str = "<dict>") -> Policy:
    """Like :func:`load_policy` for one already-parsed document (tests, embedded configs)."""
    return _merge([(source, data)])


def _parse(source: str, data: Any) -> PolicyFile:
    if not isinstance(data, dict):
        raise PolicyError(
            "the top level must be a mapping (version, packs, rules, ...)", source=source
        )
    try:
        return PolicyFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err["loc"]
        rule_id = None
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            raw = data.get("rules", [])
            if loc[1] < len(raw) and isinstance(raw[loc[1]], dict):
                rule_id = str(raw[loc[1]].get("id")) if raw[loc[1]].get("id") else None
        raise config_error(
            exc,
            source=source,
            model=PolicyFile,
            see="docs/policies.md",
            error=PolicyError,
            rule_id=rule_id,
        ) from None


def _merge(documents: list[tuple[str, Any]]) -> Policy:
    rules: dict[str, tuple[Rule, str]] = {}
    pack_options: dict[str, tuple[PackRef, str]] = {}
    disclosure: AIDisclosure | None = None
    versions: list[str] = []
    digest = hashlib.sha256()

    def add(rule: Rule, source: str) -> None:
        if rule.id in rules:
            first = rules[rule.id][1]
            raise PolicyError(
                f"duplicate rule id (first defined in {first}); give each rule its own id, or use "
                "`overrides:` to make an existing tier-2 rule stricter",
                source=source,
                rule_id=rule.id,
            )
        rules[rule.id] = (rule, source)

    parsed = []
    for source, data in documents:
        policy_file = _parse(source, data)
        parsed.append((source, policy_file))
        digest.update(repr(policy_file.model_dump()).encode())
        if policy_file.version:
            versions.append(policy_file.version)
        for ref in policy_file.packs:
            if ref.name in pack_options:
                if pack_options[ref.name][0] != ref:
                    raise PolicyError(
                        f"pack {ref.name!r} is switched on twice with different options (first in "
                        f"{pack_options[ref.name][1]}); keep one entry",
                        source=source,
                        field="packs",
                    )
                continue
            pack_options[ref.name] = (ref, source)
            pack_rules, pack_disclosure = expand_pack(ref, source=source)
            for rule in pack_rules:
                add(rule, source)
            if pack_disclosure is not None:
                disclosure = pack_disclosure
        for rule in policy_file.rules:
            if rule.tier == 3:
                raise PolicyError(
                    "tier 3 is the user's: it comes from profiles, not policy files; "
                    "use tier 1 or 2",
                    source=source,
                    rule_id=rule.id,
                )
            add(rule, source)

    for source, policy_file in parsed:
        for override in policy_file.overrides:
            rules[override.id] = (_apply_override(rules, override, source), source)
        for rule_id in policy_file.disable:
            if rule_id not in rules:
                raise PolicyError("cannot disable an unknown rule", source=source, rule_id=rule_id)
            if rules[rule_id][0].tier == 1:
                raise PolicyError(
                    "tier-1 rules are immutable and cannot be disabled (they implement the law)",
                    source=source,
                    rule_id=rule_id,
                )
            del rules[rule_id]

    for rule, source in rules.values():
        unknown = [rule_id for rule_id in rule.after_input if rule_id not in rules]
        if unknown:
            raise PolicyError(
                f"after_input names {unknown}, which the policy does not have; name input "
                "rules of this policy (or switch their pack on)",
                source=source,
                rule_id=rule.id,
            )
    version = "+".join(versions) if versions else "sha256:" + digest.hexdigest()[:12]
    enabled = {name for name in pack_options}
    return Policy(
        version=version,
        sources=tuple(source for source, _ in documents),
        rules=tuple(rule for rule, _ in rules.values()),
        ai_disclosure=disclosure,
        user_packs=user_pack_rules(exclude=enabled),
    )


def _apply_override(rules: dict[str, tuple[Rule, str]], override: Override, source: str) -> Rule:
    if override.id not in rules:
        raise PolicyError("override of an unknown rule", source=source, rule_id=override.id)
    rule = rules[override.id][0]
    if rule.tier == 1:
        raise PolicyError(
            "tier-1 rules are immutable: no file may change or loosen them (they implement the "
            "law); set a pack's `message` where the pack allows it",
            source=source,
            rule_id=rule.id,
        )
    update: dict[str, Any] = {}
    if override.action is not None:
        if ACTION_RANK[override.action] < ACTION_RANK[rule.action]:
            raise PolicyError(
                f"override would loosen the rule (action {rule.action!r} -> {override.action!r}); "
                "overrides may only make a rule stricter",
                source=source,
                rule_id=rule.id,
            )
        update["action"] = override.action
    if override.message is not None:
        update["message"] = override.message
    if override.replacement is not None:
        update["replacement"] = override.replacement
    try:
        return Rule.model_validate({**rule.model_dump(), **update})
    except ValidationError as exc:
        raise config_error(exc, source=source, error=PolicyError, rule_id=rule.id) from None
