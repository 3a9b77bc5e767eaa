"""The policy model and its YAML file format (tiers 1 and 2; tier 3 comes from profiles).

A deployment loads its policy files once, at start-up
(:func:`persona_mw.bounds.loading.load_policy`). The result, a :class:`Policy`, is frozen: no
API, profile or request field changes it at run time. Every problem — an unknown field, a
duplicate rule id, a regular expression that does not compile, an attempt to loosen a tier-1
rule — fails the load with a :class:`~persona_mw.errors.PolicyError` that names the file, the
rule and the reason. The format is documented in docs/policies.md.

Why one module over 400 lines: it is one schema, the policy file format, and nothing else;
every class is a declaration with the validators of its own fields, read top to bottom beside
docs/policies.md (the detector specs, the rule, packs, overrides, the file, the policy). The
loader is ``loading.py`` and the built-in packs ``packs.py``; neither is imported here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..types import Action
from .detectors import MAX_SENTENCE
from .phrases import GAP, expand_family
from .pii import PII_KINDS, PIIKind

__all__ = [
    "ACTION_RANK",
    "MODERATION_CATEGORIES",
    "AIDisclosure",
    "Adjustable",
    "Audience",
    "BuiltinPack",
    "ClassifierSpec",
    "DetectorSpec",
    "JudgeSpec",
    "ModelSpec",
    "ModerationSpec",
    "Override",
    "PIISpec",
    "PackRef",
    "PhrasesSpec",
    "Policy",
    "PolicyFile",
    "RegexSpec",
    "RelationshipSpec",
    "Rule",
]

RuleStage = Literal["input", "output", "both"]
Audience = Literal["all", "minors", "adults"]
Eligibility = Literal["all", "adults_only"]

#: How strict an action is; an override or a user choice may only move a rule up this scale
#: (except inside a deployer-declared adjustable range).
ACTION_RANK: dict[str, int] = {"log": 0, "notify": 1, "append": 1, "redact": 2, "block": 3}

_RULE_ID = r"^[a-z0-9][a-z0-9._\-]{0,63}$"


#: The longest phrase (a family may be written longer: this holds for each phrase it makes).
_MAX_PHRASE = 200


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


#: The id of the tier-3 rule made from a user's own ``block_phrases`` (the one phrase rule that
#: differs from user to user: scanners build it apart from the policy's shared phrases).
USER_BLOCK_PHRASES = "user.block-phrases"


class PhrasesSpec(_Frozen):
    """Phrases matched as whole words on folded text (case, accents, width, homoglyphs,
    zero-width, leetspeak, spaced-out, stretched and joined letters).

    A phrase may be a family: ``{a|b|}`` groups are alternatives (an empty one makes the group
    optional), expanded when the policy loads — ``"{i|we} {want|wanna} to die"`` is four
    phrases. One family writes the ways a thought is put (subject, verb form, object) once
    instead of one sentence at a time. A phrase may have one gap, ``"a ... b"``: ``b`` starting
    at most six words and 40 characters after ``a`` ends ("gave my guitar to my brother, i won't
    need it"; in ``unless``, "lethal dose ... for my pharmacology exam")."""

    kind: Literal["phrases"] = "phrases"
    phrases: tuple[Annotated[str, Field(min_length=1, max_length=1000)], ...] = Field(min_length=1)
    #: Context phrases: a hit inside a match of one of them does not count ("Moby Dick",
    #: "naked mole rat", "kill the process").
    unless: tuple[Annotated[str, Field(min_length=1, max_length=1000)], ...] = ()
    #: Words that also hit as the first or last part of a compound ("fuckwit", "dumbfuck").
    stems: tuple[Annotated[str, Field(min_length=3, max_length=40)], ...] = ()
    #: Also match how people type: filler words between the words of a phrase ("better off if
    #: i *just* wasnt around") and typos of its words (doubled or dropped letters: "mourrir",
    #: "mysef"); see :mod:`persona_mw.bounds.spelling`. A pass more per text, in Python: meant
    #: for what users write (input), not for long model output.
    lenient: bool = False
    #: Also match a word with one or two of its vowels masked by a symbol ("f*ck", "b*llsh*t",
    #: "p#ta", "W*chser"): each masked spelling is a phrase of its own, kept only when it leaves
    #: a lone consonant ("sh*t" -> "sh t"), so "put*in" never reads as "put in".
    masked: bool = False

    @field_validator("phrases", "unless")
    @classmethod
    def _expand_families(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        phrases = tuple(dict.fromkeys(p for family in value for p in expand_family(family)))
        for phrase in phrases:
            # a gapped family stays one phrase (see expand_family): each side's phrases count
            pieces = [p for side in phrase.split(GAP) for p in expand_family(side)]
            for piece in pieces if GAP in phrase else [phrase]:
                if len(piece) > _MAX_PHRASE:
                    raise ValueError(f"phrase {piece!r} is longer than {_MAX_PHRASE} characters")
        return phrases


class RegexSpec(_Frozen):
    """A Python regular expression on the original text. ``max_len`` bounds one match (and so
    the stream hold-back)."""

    kind: Literal["regex"] = "regex"
    pattern: str
    max_len: int = Field(default=64, ge=1, le=1000)
    case_sensitive: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
        if compiled.match(""):
            raise ValueError(f"regular expression {value!r} matches the empty string")
        return value


class PIISpec(_Frozen):
    """Personal data: e-mail, phone, payment card (Luhn), IBAN (mod 97), US SSN, IP address."""

    kind: Literal["pii"] = "pii"
    kinds: tuple[PIIKind, ...] = PII_KINDS
    #: The deployment's default phone region (ISO 3166 alpha-2): how numbers written without a
    #: country code are read.
    region: str = "US"

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        import phonenumbers

        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(
                f"unknown phone region {value!r}: use an ISO 3166 alpha-2 code such as 'US', "
                "'GB' or 'DE'"
            )
        return value


#: The categories an OpenAI-style moderation endpoint (``litellm.amoderation``) reports.
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)

#: Built-in packs a model-backed detector's categories may feed (docs/policies.md).
PackName = Literal["crisis", "minor-safety"]


class _ModelBacked(_Frozen):
    """What every model-backed detector shares: which model, how long a verdict may take, how
    its labels feed the built-in packs, and the window a streamed reply is checked in."""

    #: LiteLLM model name; default: the bounds config's ``moderation_model`` / ``judge_model``.
    model: str | None = None
    #: Seconds one verdict may take; default: the bounds config's ``classifier_timeout_s``.
    timeout_s: float | None = Field(default=None, gt=0, le=60)
    #: Characters of a streamed reply held and checked together (at most; a window ends at the
    #: last sentence or word break inside it). The whole reply when not streamed.
    window: int = Field(default=400, ge=50, le=20_000)


class JudgeSpec(_ModelBacked):
    """Any chat model as a classifier, asked with a Llama-Guard-style prompt (the contract:
    docs/policies.md, "Model-backed detectors"): the first line of its answer is ``safe`` or
    ``unsafe``; after ``unsafe``, a line of comma-separated category codes."""

    kind: Literal["judge"] = "judge"
    #: The unsafe-content categories the judge is asked about, e.g. "S1: Violent crimes"; the
    #: code is what comes before the colon.
    categories: tuple[Annotated[str, Field(min_length=1, max_length=300)], ...] = Field(
        min_length=1
    )
    #: Category codes whose verdict fires a built-in pack's rule for the user (when in force)
    #: instead of this rule: e.g. ``{S11: crisis, S4: minor-safety}``.
    packs: dict[str, PackName] = Field(default_factory=dict)
    #: Another prompt template; must contain ``{categories}``, ``{role}`` and ``{text}``.
    prompt: str | None = Field(default=None, max_length=20_000)

    @model_validator(mode="after")
    def _contract(self) -> JudgeSpec:
        codes = {category_code(c) for c in self.categories}
        unknown = sorted(set(self.packs) - codes)
        if unknown:
            raise ValueError(
                f"`packs` names categories {unknown} that are not in `categories` (codes: "
                f"{sorted(codes)})"
            )
        if self.prompt is not None:
            missing = [p for p in ("{categories}", "{role}", "{text}") if p not in self.prompt]
            if missing:
                raise ValueError(f"the judge `prompt` must contain {', '.join(missing)}")
        return self


class ModerationSpec(_ModelBacked):
    """An OpenAI-style moderation endpoint through ``litellm.amoderation``. Categories mapped to
    a built-in pack (self-harm → crisis, sexual/minors → minor-safety; docs/policies.md) fire
    that pack's rule when it is in force for the user; the categories listed here fire this
    rule."""

    kind: Literal["moderation"] = "moderation"
    #: Categories that fire this rule; () with ``packs: true``: the rule only feeds the packs.
    categories: tuple[str, ...] = ()
    #: A category fires when its score reaches this; None: when the endpoint flags it.
    threshold: float | None = Field(default=None, gt=0, le=1)
    #: Let mapped categories fire the built-in packs' rules (crisis, minor-safety).
    packs: bool = True

    @field_validator("categories")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [c for c in value if c not in MODERATION_CATEGORIES]
        if unknown:
            raise ValueError(
                f"unknown moderation categories {unknown}; use {list(MODERATION_CATEGORIES)}"
            )
        return value

    @model_validator(mode="after")
    def _something(self) -> ModerationSpec:
        if not self.categories and not self.packs:
            raise ValueError("a moderation detector needs `categories`, `packs: true`, or both")
        return self


#: The detectors that call a model (asynchronously, with a timeout and a fail mode).
ModelSpec = JudgeSpec | ModerationSpec


def category_code(category: str) -> str:
    """``"S11: Suicide & Self-Harm"`` → ``"S11"``: what a judge answers with."""
    return category.split(":", 1)[0].strip()


class RelationshipSpec(_Frozen):
    """Sentences whose relationship-seeking score reaches ``threshold`` (output text)."""

    kind: Literal["relationship"] = "relationship"
    threshold: float = Field(default=0.6, ge=0, le=1)
    max_sentence: int = Field(default=MAX_SENTENCE, ge=20, le=1000)


class ClassifierSpec(_Frozen):
    """A trained text classifier (:mod:`persona_mw.bounds.classifier`): a built-in model by name
    or a model file, and the score from which it fires (default: the model's own). A message
    model judges whole user messages (input rules); a sentence model judges a reply sentence by
    sentence (output rules)."""

    kind: Literal["classifier"] = "classifier"
    model: str = Field(min_length=1, max_length=500)
    threshold: float | None = Field(default=None, gt=0, lt=1)

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from .classifier import BUILTIN_MODELS

        if value not in BUILTIN_MODELS and not value.endswith(".json"):
            raise ValueError(
                f"unknown classifier model {value!r}: use a built-in one "
                f"({', '.join(BUILTIN_MODELS)}) or the path of a .json model file that "
                "scripts/train_classifiers.py wrote"
            )
        return value


DetectorSpec = Annotated[
    PhrasesSpec
    | RegexSpec
    | PIISpec
    | JudgeSpec
    | ModerationSpec
    | RelationshipSpec
    | ClassifierSpec,
    Field(discriminator="kind"),
]


class Adjustable(_Frozen):
    """A tier-2 rule's user-adjustable option: which choices a user may make, and who may.

    ``values`` are actions (or ``"off"``) the user may pick; ``range`` bounds a numeric
    ``parameter`` of the detector — a relationship ``threshold``, chosen in percent (profile
    values are integers): ``range: [70, 95]`` lets a user pick 0.70-0.95.
    """

    #: The key in ``profile.adjustable``; default: the rule id.
    option: str | None = None
    values: tuple[Literal["block", "redact", "append", "notify", "log", "off"], ...] = ()
    parameter: Literal["threshold"] | None = None
    range: tuple[float, float] | None = None
    eligibility: Eligibility = "adults_only"

    @model_validator(mode="after")
    def _something_to_choose(self) -> Adjustable:
        if not self.values and self.range is None:
            raise ValueError("an adjustable option needs `values` (actions or off) or a `range`")
        if (self.range is None) != (self.parameter is None):
            raise ValueError("`range` and `parameter` go together")
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError("`range` must be [low, high]")
        return self


class Rule(_Frozen):
    """One rule: where it looks, what it looks for, what it does and what the user is told."""

    id: Annotated[str, Field(pattern=_RULE_ID)]
    tier: Literal[1, 2, 3]
    stage: RuleStage = "both"
    #: What finds the text; ``None`` makes an instruction-only rule (always in force).
    detector: DetectorSpec | None = None
    action: Action = "block"
    #: Shown to the user: the reply on a block, the text of an append/notify notice.
    message: str | None = Field(default=None, max_length=2000)
    #: What a redacted span becomes; ``{label}`` is the detector's label (e.g. "email").
    replacement: str = Field(default="[{label}]", max_length=100)
    #: Added to the prompt (above anything the user wrote): always for an instruction-only rule,
    #: when the rule fires on input otherwise.
    instruction: str | None = Field(default=None, max_length=2000)
    #: Who the rule is for: known minors, verified adults (age band 18+) or everyone.
    audience: Audience = "all"
    adjustable: Adjustable | None = None
    #: What happens when the detector errors or times out; default: tier 1 blocks, others allow.
    on_error: Literal["block", "allow"] | None = None
    #: An output rule in force only in a call whose input (this turn or the history the app
    #: sent) fired one of these rules: e.g. method content judged sentence by sentence once the
    #: user has shown risk, and not in every reply to everyone.
    after_input: tuple[Annotated[str, Field(pattern=_RULE_ID)], ...] = ()
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.detector is None and self.instruction is None:
            raise ValueError("a rule needs a `detector`, an `instruction`, or both")
        if (
            self.detector is not None
            and self.action in ("block", "append", "notify")
            and not self.message
        ):
            raise ValueError(f"action {self.action!r} needs a `message` to show the user")
        if self.tier == 1 and self.adjustable is not None:
            raise ValueError("a tier-1 rule cannot be user-adjustable (tier 1 is the law)")
        if isinstance(self.detector, JudgeSpec | ModerationSpec | ClassifierSpec) and (
            self.action == "redact"
        ):
            raise ValueError(
                f"a {self.detector.kind} rule cannot redact: a classifier judges a whole "
                "text, not a span; use block, append, notify or log"
            )
        if isinstance(self.detector, JudgeSpec | ModerationSpec) and self.instruction is not None:
            raise ValueError(
                f"a {self.detector.kind} rule cannot carry an `instruction`: its verdict "
                "comes while the model is already answering; put the instruction on a rule "
                "without a detector"
            )
        if isinstance(self.detector, RelationshipSpec) and self.stage != "output":
            raise ValueError("a relationship rule scores assistant text: use stage: output")
        if isinstance(self.detector, ClassifierSpec):
            from .classifier import BUILTIN_MODELS, load_classifier

            model = self.detector.model
            unit = BUILTIN_MODELS.get(model) or load_classifier(model).unit
            wanted = "input" if unit == "message" else "output"
            if self.stage != wanted:
                other = "judges whole user messages" if unit == "message" else "judges replies"
                raise ValueError(
                    f"classifier model {model!r} {other}: use stage: {wanted}"
                    + (
                        " (for replies, use a sentence model such as 'crisis-output')"
                        if unit == "message"
                        else ""
                    )
                )
        if self.after_input and self.stage != "output":
            raise ValueError(
                "`after_input` makes an output rule depend on what the input fired: use "
                "stage: output"
            )
        return self

    @property
    def fails_closed(self) -> bool:
        return (self.on_error or ("block" if self.tier == 1 else "allow")) == "block"

    def applies_to(self, stage: Literal["input", "output"]) -> bool:
        return self.stage in (stage, "both")


class AIDisclosure(_Frozen):
    """The not-human notice the law requires (NY GBL Art. 47; CA SB 243 for minors): at the start
    of an interaction (at most once a day) and every ``interval_hours`` of continuing use. The
    bounds only declare it; the dependence/signals ladder decides when it is due."""

    audience: Literal["all", "minors"] = "all"
    interval_hours: float = Field(default=3.0, gt=0, le=3.0)
    at_start_once_per_day: bool = True
    text: str = (
        "Reminder: you are talking to an AI, not a person. It can be wrong, and it is not a "
        "substitute for people you trust or for professional help."
    )


#: The built-in rule packs (YAML in ``persona_mw/bounds/packs/``; ``packs.PACKS`` lists them).
BuiltinPack = Literal[
    "pii",
    "crisis",
    "ai-disclosure",
    "minor-safety",
    "profanity",
    "profanity-es",
    "profanity-fr",
    "profanity-de",
    "profanity-pt",
]


class PackRef(_Frozen):
    """A built-in rule pack switched on, with the options the pack accepts."""

    name: BuiltinPack
    tier: Literal[1, 2] | None = None
    action: Action | None = None
    stage: RuleStage | None = None
    message: str | None = Field(default=None, max_length=2000)
    #: profanity: who the profanity rule covers; ai-disclosure: all users or known minors.
    audience: Literal["all", "minors", "adults"] | None = None
    #: profanity: the user-adjustable option (``false`` to make it fixed).
    adjustable: Adjustable | Literal[False] | None = None
    #: pii: which kinds.
    kinds: tuple[PIIKind, ...] | None = None
    #: pii: the default phone region (ISO 3166 alpha-2) for numbers without a country code.
    region: str | None = None
    #: profanity: extra phrases for the deployer's language or audience.
    extra_phrases: tuple[str, ...] = ()
    #: ai-disclosure options.
    interval_hours: float | None = Field(default=None, gt=0)
    text: str | None = Field(default=None, max_length=2000)


class Override(_Frozen):
    """A later file making a tier-2 rule stricter: a stronger action, another message."""

    id: str
    action: Action | None = None
    message: str | None = Field(default=None, max_length=2000)
    replacement: str | None = Field(default=None, max_length=100)


class PolicyFile(_Frozen):
    """What one YAML policy file may contain."""

    version: str | None = Field(default=None, max_length=100)
    #: Built-in packs to switch on: a name, or a mapping with ``name`` and the pack's options.
    packs: tuple[PackRef, ...] = ()
    rules: tuple[Rule, ...] = ()
    overrides: tuple[Override, ...] = ()
    #: Rule ids (from packs) this deployment switches off; tier-1 rules cannot be.
    disable: tuple[str, ...] = ()

    @field_validator("packs", mode="before")
    @classmethod
    def _names_to_refs(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value


class Policy(_Frozen):
    """A loaded, immutable policy: tiers 1 and 2 of a deployment."""

    version: str
    sources: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    ai_disclosure: AIDisclosure | None = None
    #: Packs a user may switch on for themselves (tier 3 ``enable_packs``), by pack name.
    user_packs: tuple[Rule, ...] = ()

    def __hash__(self) -> int:
        # Hashing every rule on each lookup would cost more than resolving; equal policies
        # still compare equal field by field.
        return hash((self.version, self.sources, len(self.rules)))

    def rule(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    def rules_that(self, action: Action) -> list[str]:
        """The ids of the rules (tiers 1 and 2) that take ``action``, or that a user may set to
        take it (an adjustable option offering it)."""
        return [
            rule.id
            for rule in self.rules
            if rule.detector is not None
            and (
                rule.action == action
                or (rule.adjustable is not None and action in rule.adjustable.values)
            )
        ]
