"""Streaming tallies of attributed impressions, small enough to keep: per user, day, version,
arm and mode (plain or interleaved) the sums the metrics need; the items shown per version and
per arm (coverage); per user and interleaving team the credits earned.

A batch of ``Shown`` is turned into columns in one pass and reduced with pyarrow's group-by;
the reduced rows are merged again whenever they pile up, so memory grows with the distinct
(user, day, version, arm) cells, never with the log."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from groundrec.online.report.attribution import Shown

KEYS = ["user", "day", "version", "arm", "interleaved"]
SUMS = ["impressions", "clicks", "conversions", "engaged", "position_sum"]
NO_ARM = "(none)"  # the arm of a list logged without one


class Tally:
    def __init__(self, purchase_types: Iterable[str] = ("purchase",), merge_rows: int = 2_000_000):
        self.purchase_types = frozenset(purchase_types)
        self.merge_rows = merge_rows
        self.user_codes: dict[str, int] = {}
        self.anonymous = 0  # lists shown to no user id: each is its own unit in the statistics
        self.versions: dict[str, int] = {}
        self.arms: dict[str, int] = {}
        self.teams: dict[str, int] = {}
        self._shown: dict[tuple[str, str], set[str]] = {}  # items shown per (version, arm)
        self._cells: list[pa.Table] = []
        self._cell_rows = 0
        self._credits: list[pa.Table] = []

    def add(self, batch: list[Shown]) -> None:
        users, versions, arms, days, interleaved = [], [], [], [], []
        codes, version_codes, arm_codes = self.user_codes, self.versions, self.arms
        shown = self._shown
        for m in (s[0] for s in batch):
            user = m.user_id
            if user is None:
                self.anonymous += 1
                users.append(-self.anonymous)
            else:
                code = codes.get(user)
                users.append(code if code is not None else codes.setdefault(user, len(codes)))
            arm = m.arm if m.arm is not None else NO_ARM
            version = m.version
            code = version_codes.get(version)
            versions.append(code if code is not None else version_codes.setdefault(version, len(version_codes)))
            code = arm_codes.get(arm)
            arms.append(code if code is not None else arm_codes.setdefault(arm, len(arm_codes)))
            days.append(m.timestamp)
            interleaved.append(m.teams is not None)
            seen = shown.get((version, arm))
            if seen is None:
                seen = shown[version, arm] = set()
            seen.update(m.items)
        n = len(batch)
        cols = {"user": np.array(users, np.int64), "day": (np.array(days) // 86_400).astype(np.int64),
                "version": np.array(versions, np.int64), "arm": np.array(arms, np.int64),
                "interleaved": np.array(interleaved, np.int64)}
        for name in SUMS[1:]:
            cols[name] = np.zeros(n, np.int64)
        credit_users: list[int] = []
        credit_teams: list[int] = []
        buy = self.purchase_types
        for i, (m, engaged) in enumerate(batch):
            if engaged:
                positions = {p for p, _ in engaged}
                cols["clicks"][i] = 1
                cols["conversions"][i] = any(t in buy for _, t in engaged)
                cols["engaged"][i] = len(positions)
                cols["position_sum"][i] = sum(positions) + len(positions)  # 1-based
                if m.teams is not None:
                    for p in positions:
                        credit_users.append(users[i])
                        credit_teams.append(self.teams.setdefault(m.teams[p], len(self.teams)))
            if m.teams is not None:  # every team of the list is in the experiment, clicked or not
                for team in set(m.teams):
                    credit_users.append(users[i])
                    credit_teams.append(-1 - self.teams.setdefault(team, len(self.teams)))
        cols["impressions"] = np.ones(n, np.int64)
        self._cells.append(_reduce(pa.table(cols), KEYS, SUMS))
        self._cell_rows += self._cells[-1].num_rows
        if self._cell_rows > self.merge_rows:
            self._cells = [_reduce(pa.concat_tables(self._cells), KEYS, SUMS)]
            self._cell_rows = self._cells[0].num_rows
        if credit_users:
            teams = np.array(credit_teams, np.int64)
            self._credits.append(_reduce(pa.table({
                "user": np.array(credit_users, np.int64), "team": np.where(teams < 0, -1 - teams, teams),
                "credits": (teams >= 0).astype(np.int64), "lists": (teams < 0).astype(np.int64)}),
                ["user", "team"], ["credits", "lists"]))
            if len(self._credits) > 64:
                self._credits = [_reduce(pa.concat_tables(self._credits), ["user", "team"], ["credits", "lists"])]

    def coverage(self, version: str | None = None, arm: str | None = None) -> int:
        """Distinct items shown by a version (or an arm)."""
        return len(set().union(*(items for (v, a), items in self._shown.items()
                                 if version in (None, v) and arm in (None, a))))

    def cells(self) -> pa.Table:
        """One row per (user, day, version, arm, interleaved) with the sums in ``SUMS``."""
        if not self._cells:
            return pa.table({k: np.empty(0, np.int64) for k in (*KEYS, *SUMS)})
        return _reduce(pa.concat_tables(self._cells), KEYS, SUMS)

    def credits(self) -> pa.Table:
        """One row per (user, team): items credited to the team, interleaved lists it took part in."""
        if not self._credits:
            return pa.table({k: np.empty(0, np.int64) for k in ("user", "team", "credits", "lists")})
        return _reduce(pa.concat_tables(self._credits), ["user", "team"], ["credits", "lists"])


def _reduce(table: pa.Table, keys: list[str], sums: list[str]) -> pa.Table:
    out = table.group_by(keys, use_threads=False).aggregate([(s, "sum") for s in sums])
    return out.rename_columns([c.removesuffix("_sum") for c in out.column_names])
