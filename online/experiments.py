"""Experiments on live traffic: arms (a published version, or ``current``, plus request
defaults), users assigned to an arm by a salted hash of their id (sticky: the same user, the
same arm, in every process and after every restart), and the team-draft mode that shows one
list interleaved from two arms.

A request's settings are layered: a field the request sends wins over its arm's default,
which wins over the server's (``with_defaults``). A request without ``user_id`` goes to the
experiment's ``default_arm``."""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from groundrec.shared.artifact import is_version_id
from groundrec.shared.config import StrictModel

# The request fields an arm may set a default for: how a list is made, never whom it is for.
ARM_FIELDS = ("k", "strategy", "popularity_weight", "text_weight", "fresh_weight", "fresh_slots", "max_per",
              "diversity", "exclude_seen")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class Arm(StrictModel):
    name: str = Field(description="the arm's label in answers, impressions and the online report")
    version: str = Field("current", description="a published version id, or 'current' (what CURRENT names)")
    weight: float = Field(1.0, gt=0, description="its share of users, relative to the other arms' weights")
    defaults: dict[str, Any] = Field(default_factory=dict, description=f"request defaults: any of {ARM_FIELDS}")

    @field_validator("name")
    @classmethod
    def _simple_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"arm name {v!r}: use 1-32 letters, digits, '_', '.' or '-'")
        return v

    @field_validator("version")
    @classmethod
    def _a_version(cls, v: str) -> str:
        if v != "current" and not is_version_id(v):
            raise ValueError(f"arm version {v!r} is neither 'current' nor a version id (e.g. "
                             f"20261202T031500.123456Z-3f9c2a: copy it from `groundrec versions list`)")
        return v

    @model_validator(mode="after")
    def _known_defaults(self) -> "Arm":
        from groundrec.online.schemas import UserQuery

        unknown = sorted(set(self.defaults) - set(ARM_FIELDS))
        if unknown:
            raise ValueError(f"arm {self.name!r}: defaults {unknown} are not request settings an arm may set; "
                             f"choose from {list(ARM_FIELDS)}")
        UserQuery(**self.defaults)  # the values themselves: the request's own validation
        return self


class Experiment(StrictModel):
    """Two or more arms compared on live traffic (``mode: ab``: each user sees one arm's
    lists), or two arms interleaved into one list by team draft (``mode: team_draft``)."""

    name: str = Field("experiment", description="salts the assignment: a new name reshuffles the users")
    mode: Literal["ab", "team_draft"] = "ab"
    arms: list[Arm] = Field(min_length=2)
    default_arm: str | None = Field(None, description="the arm of a request without user_id (default: the first)")
    salt: str | None = Field(None, description="the assignment's salt (default: the name)")

    @model_validator(mode="after")
    def _consistent(self) -> "Experiment":
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must differ: {names}")
        if self.default_arm is not None and self.default_arm not in names:
            raise ValueError(f"default_arm {self.default_arm!r} is not one of the arms {names}")
        if self.mode == "team_draft" and len(self.arms) != 2:
            raise ValueError(f"team_draft interleaves exactly two arms, not {len(self.arms)}")
        if self.mode == "team_draft" and any("k" in a.defaults for a in self.arms):
            # one list of the request's k is drafted from both: an arm answering more would win
            # positions by its length, not by what it ranks
            raise ValueError("team_draft: an arm may not set k (both arms answer the request's k, drafted into one)")
        return self

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    @property
    def fallback_arm(self) -> Arm:
        return self.arm(self.default_arm) if self.default_arm else self.arms[0]

    def assign(self, user_id: str | None) -> Arm:
        """The user's arm (sticky): each arm draws a salted hash of (arm, user) scaled by its
        weight, the best draw wins (weighted rendezvous hashing: arm a with probability
        weight_a / the weights' sum). Editing the arms moves no user it need not: an arm added
        takes its share from every other arm, and only those users move; an arm removed gives
        its users to the others; a weight raised moves users into that arm only. (Ranges of one
        hash laid end to end moved 17% of the users between two arms that were not touched
        when a third was added.)"""
        if user_id is None:
            return self.fallback_arm
        salt = self.salt if self.salt is not None else self.name
        return min(self.arms, key=lambda arm: _draw(salt, arm.name, user_id) / arm.weight)

    def versions(self) -> set[str]:
        """The versions the arms need loaded ('current' included when any arm follows it)."""
        return {a.version for a in self.arms}


def _draw(salt: str, arm: str, user_id: str) -> float:
    """An exponential draw (-ln u, u uniform in (0, 1)) from a hash of (salt, arm, user)."""
    digest = hashlib.sha256(f"{salt}\x1f{arm}\x1f{user_id}".encode()).digest()
    return -math.log((int.from_bytes(digest[:8], "big") + 0.5) / 2**64)


def with_defaults(query, defaults: dict[str, Any]):
    """``query`` (a ``UserQuery``) with ``defaults`` for the fields it did not send itself; an
    arm's ``fresh_slots`` above the k asked is cut to k (refused, the arm alone would lose the
    request: its users' share of traffic skewed); any other combination that is not a valid
    request is the request's ``UserError``, naming both."""
    from pydantic import ValidationError

    from groundrec.shared.errors import UserError

    missing = {f: v for f, v in defaults.items() if f not in query.model_fields_set}
    if not missing:
        return query
    if missing.get("fresh_slots") is not None:  # an arm's places for new items fit the k asked: a request the
        missing["fresh_slots"] = min(missing["fresh_slots"], missing.get("k", query.k))  # other arm answers

    try:
        return query.model_validate({**query.model_dump(exclude_unset=True), **missing})
    except (ValidationError, UserError) as e:
        detail = "; ".join(err["msg"] for err in e.errors()) if isinstance(e, ValidationError) else str(e)
        raise UserError(f"this request with its experiment arm's defaults {missing} is not valid: {detail}") from None
