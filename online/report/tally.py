"""Streaming tallies of attributed impressions, small enough to keep: per user, day, version,
arm and mode (plain or interleaved) the sums the metrics need; the items shown per version and
per arm (coverage); per user, interleaved arm (the pair of teams) and team the credits earned.

A batch (``Attributed``: the impressions and their credits, as columns) is reduced with
pyarrow's group-by, with no object per list;
the reduced rows are merged again whenever they pile up, so memory grows with the distinct
(user, day, version, arm) cells, never with the log."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from groundrec.online.report.attribution import Attributed
from groundrec.online.report.held import flat_lists

KEYS = ["user", "day", "version", "arm", "interleaved"]
SUMS = ["impressions", "clicks", "conversions", "engaged", "position_sum"]
CREDIT_KEYS = ["user", "pair", "team"]  # pair: the interleaved list's arm ("A+B"), so that only lists two teams shared compare them
NO_ARM = "(none)"  # the arm of a list logged without one


class Tally:
    def __init__(self, purchase_types: Iterable[str] = ("purchase",), merge_rows: int = 2_000_000):
        self.purchase_types = frozenset(purchase_types)
        self.merge_rows = merge_rows
        self.user_codes: dict[str, int] = {}
        self.anonymous = 0  # lists shown to no user id (all coded -1: counted, left out of every rate and test)
        self.versions: dict[str, int] = {}
        self.arms: dict[str, int] = {}
        self.teams: dict[str, int] = {}
        self._shown: dict[tuple[str, str], set[str]] = {}  # items shown per (version, arm)
        self._cells: list[pa.Table] = []
        self._cell_rows = 0
        self._credits: list[pa.Table] = []

    def add(self, att: Attributed) -> None:
        """One batch of impressions handed on with their credits, as columns."""
        t, n = att.shown, att.shown.num_rows
        users = self._users(t["user_id"])
        versions = _codes(t["version"], self.versions)
        arms = _codes(t["arm"].fill_null(NO_ARM), self.arms)
        teams, team_row, team_start = flat_lists(t["teams"])
        interleaved = t["teams"].is_valid().to_numpy(zero_copy_only=False)
        self._cover(t, versions, arms)
        buy = np.isin(att.type, [i for i, name in enumerate(att.types) if name in self.purchase_types])
        width = int(att.position.max()) + 1 if len(att.position) else 1
        engaged = np.unique(att.row * width + att.position)  # each engaged position of a list once
        e_row, e_pos = engaged // width, engaged % width
        cols = {"user": users, "day": (t["timestamp"].to_numpy() // 86_400).astype(np.int64),
                "version": versions, "arm": arms, "interleaved": interleaved.astype(np.int64),
                "impressions": np.ones(n, np.int64),
                "clicks": (np.bincount(att.row, minlength=n) > 0).astype(np.int64),
                "conversions": (np.bincount(att.row[buy], minlength=n) > 0).astype(np.int64),
                "engaged": np.bincount(e_row, minlength=n).astype(np.int64),
                "position_sum": np.bincount(e_row, weights=e_pos + 1, minlength=n).astype(np.int64)}
        self._cells.append(_reduce(pa.table(cols), KEYS, SUMS))
        self._cell_rows += self._cells[-1].num_rows
        if self._cell_rows > self.merge_rows:
            self._cells = [_reduce(pa.concat_tables(self._cells), KEYS, SUMS)]
            self._cell_rows = self._cells[0].num_rows
        if len(teams):
            team_codes = _codes(teams, self.teams)  # -1: a position credited to neither arm
            won = interleaved[e_row]  # an engaged item of an interleaved list: its position's team
            rows, credited = e_row[won], team_codes[team_start[e_row[won]] + e_pos[won]]
            rows, credited = rows[credited >= 0], credited[credited >= 0]
            named = team_codes >= 0
            took_part = np.unique(team_row[named] * (len(self.teams) + 1) + team_codes[named])  # every team of the list
            part_row, part_team = took_part // (len(self.teams) + 1), took_part % (len(self.teams) + 1)
            self._credits.append(_reduce(pa.table({
                "user": np.concatenate([users[rows], users[part_row]]),
                "pair": np.concatenate([arms[rows], arms[part_row]]),  # the list's arm (A+B): its two teams
                "team": np.concatenate([credited, part_team]),
                "credits": np.repeat([1, 0], [len(credited), len(part_row)]),
                "lists": np.repeat([0, 1], [len(credited), len(part_row)])}), CREDIT_KEYS, ["credits", "lists"]))
            if len(self._credits) > 64:
                self._credits = [_reduce(pa.concat_tables(self._credits), CREDIT_KEYS, ["credits", "lists"])]

    def _users(self, names: pa.ChunkedArray) -> np.ndarray:
        """Codes in order of first appearance; every list shown to no user id is -1: they are
        only counted, so millions of them (searches, popular lists) cost one cell a day, version
        and arm, not one each."""
        codes = _codes(names, self.user_codes)
        self.anonymous += int((codes < 0).sum())
        return codes

    def _cover(self, t: pa.Table, versions: np.ndarray, arms: np.ndarray) -> None:
        items, row, _ = flat_lists(t["items"])
        names = {c: v for v, c in self.versions.items()}, {c: a for a, c in self.arms.items()}
        pair = versions * (len(self.arms) + 1) + arms
        for p in np.unique(pair):
            mine = pair[row] == p
            key = (names[0][int(p // (len(self.arms) + 1))], names[1][int(p % (len(self.arms) + 1))])
            self._shown.setdefault(key, set()).update(pc.unique(items.filter(pa.array(mine))).to_pylist())

    def merge(self, later: Tally) -> None:
        """Add the tally of a later part of the log (its lists shown after all of this one's):
        codes as if one tally had seen both, users numbered in order of first appearance."""
        users = _remap(later.user_codes, self.user_codes)
        versions, arms, teams = (_remap(a, b) for a, b in ((later.versions, self.versions),
                                                            (later.arms, self.arms), (later.teams, self.teams)))
        for key, items in later._shown.items():
            self._shown.setdefault(key, set()).update(items)

        def user(col: pa.ChunkedArray) -> np.ndarray:
            code = col.to_numpy()
            return np.where(code >= 0, users[np.maximum(code, 0)], -1)

        cells = later.cells()
        self._cells.append(pa.table({**{k: cells[k].to_numpy() for k in (*KEYS, *SUMS)}, "user": user(cells["user"]),
                                     "version": versions[cells["version"].to_numpy()],
                                     "arm": arms[cells["arm"].to_numpy()]}).select([*KEYS, *SUMS]))
        self._cells = [_reduce(pa.concat_tables(self._cells), KEYS, SUMS)]
        self._cell_rows = self._cells[0].num_rows
        credits = later.credits()
        self._credits.append(pa.table({"user": user(credits["user"]), "pair": arms[credits["pair"].to_numpy()],
                                       "team": teams[credits["team"].to_numpy()],
                                       "credits": credits["credits"].to_numpy(), "lists": credits["lists"].to_numpy()}))
        self.anonymous += later.anonymous

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
        """One row per (user, pair, team): items credited to the team in lists of that pair's
        arm, the interleaved lists of that arm it took part in."""
        if not self._credits:
            return pa.table({k: np.empty(0, np.int64) for k in (*CREDIT_KEYS, "credits", "lists")})
        return _reduce(pa.concat_tables(self._credits), CREDIT_KEYS, ["credits", "lists"])


def _reduce(table: pa.Table, keys: list[str], sums: list[str]) -> pa.Table:
    out = table.group_by(keys, use_threads=False).aggregate([(s, "sum") for s in sums])
    # One chunk per column: the group-by's many chunks are slices of shared buffers, which a
    # pickle (a part's tally sent back by its process) would copy whole, once per chunk.
    return out.rename_columns([c.removesuffix("_sum") for c in out.column_names]).combine_chunks()


def _codes(names: pa.ChunkedArray | pa.Array, known: dict[str, int]) -> np.ndarray:
    """Codes of ``names`` from ``known``, new names added in order of first appearance; a null
    is -1."""
    if isinstance(names, pa.ChunkedArray):
        names = names.combine_chunks()
    encoded = names.dictionary_encode()  # its dictionary: in order of first appearance
    mapping = np.array([known.setdefault(v, len(known)) for v in encoded.dictionary.to_pylist()] + [-1], np.int64)
    return mapping[encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)]


def _remap(later: dict[str, int], known: dict[str, int]) -> np.ndarray:
    """For each code of ``later`` (assigned 0, 1, ... in its insertion order), the code of the
    same name in ``known``, which takes the new names in that order."""
    return np.array([known.setdefault(name, len(known)) for name in later] + [-1], np.int64)
