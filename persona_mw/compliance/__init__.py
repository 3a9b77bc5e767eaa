"""Compliance by jurisdiction: the laws' duties as tier 1, per user.

    from persona_mw.compliance import compliance_for
    duties = compliance_for(["us-ny-gbl-art47", "us-wa-hb2225"], minor=True)
    duties.disclosure_every.minutes   # 60.0: Washington's hourly notice for minors wins

Each law is a YAML file in ``persona_mw/compliance/jurisdictions/`` (:mod:`.law`); which laws
apply to a user comes from the deployment (``bounds.jurisdictions``), the profile's deployer-owned
``jurisdictions`` field and, on the server, a trusted gateway header; :func:`compliance_for` takes
their union. docs/compliance.md maps each duty to the code and the test that carries it out.
"""

from .law import (
    ContentBanDuty,
    CrisisDuty,
    DisclosureDuty,
    Duty,
    Jurisdiction,
    MarkingDuty,
    NeverClaimHumanDuty,
    ReminderDuty,
    ReportDuty,
    jurisdiction,
    known_codes,
    parse_jurisdiction,
)
from .marking import PROVENANCE_FIELD, PROVENANCE_HEADER, Provenance, provenance
from .union import Compliance, Interval, LawRef, Requirement, compliance_for

__all__ = [
    "PROVENANCE_FIELD",
    "PROVENANCE_HEADER",
    "Compliance",
    "ContentBanDuty",
    "CrisisDuty",
    "DisclosureDuty",
    "Duty",
    "Interval",
    "Jurisdiction",
    "LawRef",
    "MarkingDuty",
    "NeverClaimHumanDuty",
    "Provenance",
    "ReminderDuty",
    "ReportDuty",
    "Requirement",
    "compliance_for",
    "jurisdiction",
    "known_codes",
    "parse_jurisdiction",
    "provenance",
]
