"""Online metrics from the tallies, per version, per arm and per day, with their intervals and
tests (the statistics are in ``groundrec.shared.stats``; the user is the unit everywhere).

For a group of impressions: ``impressions``; ``clicks`` = impressions with any event credited
(click-through rate = clicks / impressions); ``conversions`` = impressions with a credited
event of a purchase type (conversion rate = conversions / impressions); the mean 1-based
position of the engaged items (each engaged position of a list once); ``coverage`` = distinct
items shown; ``users``. Rates are ratios of sums over the group's users, with 95% intervals by
a bootstrap over users (per version and per arm) or by the delta method over users (per day:
many small groups). A/B: between every two arms, on the lists that were not interleaved, a
two-sample test over users (``two_sample_test``). Interleaving: each engaged item of an
interleaved list is credited to the arm whose team drew its position; per user, the arm with
more credits wins; a sign test over the users with a preference, and the paired test on the
per-user credits."""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import Executor, Future
from datetime import datetime, timezone
from itertools import combinations

import numpy as np
import pyarrow as pa

from groundrec.online.report.tally import NO_ARM, SUMS, Tally
from groundrec.shared.stats import (PERMUTE_BELOW, bootstrap_ratios, delta_interval, holm_adjusted, paired_test,
                                    sign_test, two_sample_test)

POOL_CELLS = 200_000_000  # resample x user cells for the pool's share to be worth its start (about 1 s)
AB_METHODS = {"normal": "two-sample z-test over users, delta-method (Welch) standard error, two-sided normal p",
              "permutation": f"permutation test over users (fewer than {PERMUTE_BELOW} in an arm): random splits "
                             "of the pooled users, two-sided p; z and its delta-method (Welch) standard error shown"}
RATES = {"ctr": ("clicks", "impressions"), "cvr": ("conversions", "impressions"),
         "mean_position": ("position_sum", "engaged")}


def _columns(table: pa.Table) -> dict[str, np.ndarray]:
    return {name: table.column(name).to_numpy() for name in table.column_names}


def by_user(cells: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """The sums of ``rows`` of the cells, one entry per user."""
    users, inverse = np.unique(cells["user"][rows], return_inverse=True)
    out = {s: np.bincount(inverse, weights=cells[s][rows], minlength=len(users)) for s in SUMS}
    out["user"] = users
    return out


def _ratios(per_user: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The numerators and denominators of ``RATES``, one column each, as ``bootstrap_ratios`` takes them."""
    return (np.column_stack([per_user[num] for num, _ in RATES.values()]),
            np.column_stack([per_user[den] for _, den in RATES.values()]))


def summary(per_user: dict[str, np.ndarray], *, coverage: int | None, bootstrap: int | None, alpha: float,
            seed: int, resampled: tuple | None = None) -> dict:
    """Counts, rates and intervals of one group; ``bootstrap`` None: delta-method intervals;
    ``resampled``: the group's ``bootstrap_ratios`` already computed (elsewhere)."""
    out = {"impressions": int(per_user["impressions"].sum()), "clicks": int(per_user["clicks"].sum()),
           "conversions": int(per_user["conversions"].sum()), "users": int((per_user["user"] >= 0).sum())}
    if coverage is not None:
        out["coverage"] = coverage
    names = list(RATES)
    if bootstrap:
        point, lo, hi = resampled if resampled is not None else bootstrap_ratios(*_ratios(per_user), bootstrap, seed,
                                                                                 alpha)
        cis = [(p, lo_, hi_) for p, lo_, hi_ in zip(point, lo, hi)]
    else:
        cis = [delta_interval(per_user[RATES[r][0]], per_user[RATES[r][1]], alpha) for r in names]
    for name, (p, lo, hi) in zip(names, cis):
        out[name] = _num(p)
        out[f"{name}_ci"] = [_num(lo), _num(hi)]
    out["interval"] = f"bootstrap over users ({bootstrap} resamples)" if bootstrap else "delta method over users"
    return out


def compute(tally: Tally, *, bootstrap: int = 1000, alpha: float = 0.05, seed: int = 0,
            pool: Callable[[], Executor] | None = None) -> dict:
    """Everything the report shows: ``versions``, ``arms``, ``days``, ``days_by_version``,
    ``ab_tests`` and ``interleaving``. ``pool``: gives processes that take a share of the
    bootstraps (the same results), asked for only when they are long enough to be worth it."""
    cells = _columns(tally.cells())
    versions = {code: name for name, code in tally.versions.items()}
    arms = {code: name for name, code in tally.arms.items()}
    level = {"bootstrap": bootstrap, "alpha": alpha, "seed": seed}
    out: dict = {"versions": {}, "arms": {}, "days": {}, "days_by_version": {}, "ab_tests": [], "interleaving": []}
    # A list shown to no user id (a search's, a popular list) is no user's: credited only through
    # its id, it is left out of every rate and test, and counted (``anonymous_lists``).
    known = cells["user"] >= 0
    out["anonymous_lists"] = int(cells["impressions"][~known].sum())
    rows = {("versions", name): np.flatnonzero((cells["version"] == code) & known)
            for code, name in sorted(versions.items(), key=lambda kv: kv[1])}
    rows |= {("arms", name): np.flatnonzero((cells["arm"] == code) & known)
             for code, name in sorted(arms.items(), key=lambda kv: kv[1])}
    rows = {key: mine for key, mine in rows.items() if len(mine)}
    groups = {key: by_user(cells, mine) for key, mine in rows.items()}  # (versions | arms, name): sums per user
    resampled = _bootstraps(groups, bootstrap, alpha, seed, pool)  # the pool's share goes on meanwhile
    for (kind, name), mine in rows.items():
        if kind == "versions":
            out["days_by_version"][name] = _days(cells, mine, alpha)
    out["days"] = _days(cells, np.flatnonzero(known), alpha)
    # The versions that served each arm's lists (impressions by version): an arm pinned to a
    # version that did not load is served by the current one, under its own name.
    out["arm_versions"] = served = {
        name: {versions[int(c)]: int(n) for c, n in zip(*_sums_by(cells["version"][mine], cells["impressions"][mine]))}
        for (kind, name), mine in rows.items() if kind == "arms"}
    plain = {name: by_user(cells, np.flatnonzero((cells["arm"] == code) & (cells["interleaved"] == 0) & known))
             for code, name in sorted(arms.items(), key=lambda kv: kv[1]) if name != NO_ARM}  # (none): no experiment
    plain = {name: u for name, u in plain.items() if len(u["user"])}
    for a, b in combinations(plain, 2):
        ua, ub = plain[a], plain[b]
        both = int(np.isin(ua["user"][ua["user"] >= 0], ub["user"]).sum())
        for metric in ("ctr", "cvr"):
            num, den = RATES[metric]
            test = two_sample_test(ua[num], ua[den], ub[num], ub[den], seed=seed)
            how = test.pop("test")
            out["ab_tests"].append({"a": a, "b": b, "metric": metric, **{k: _num(v) for k, v in test.items()},
                                    "users_a": int(len(ua["user"])), "users_b": int(len(ub["user"])),
                                    "users_in_both": both, "test": how, "method": AB_METHODS[how],
                                    "one_version": _one_version(served, a, b)})
    for metric in ("ctr", "cvr"):  # each metric's tests between arms are one family
        family = [t for t in out["ab_tests"] if t["metric"] == metric]
        for t, p in zip(family, holm_adjusted([math.nan if t["p"] is None else t["p"] for t in family])):
            t["p_holm"] = _num(p)
    out["interleaving"] = interleaving(_columns(tally.credits()), {c: n for n, c in tally.teams.items()},
                                       {c: n for n, c in tally.arms.items()}, seed)
    for test in ("p_sign", "p_paired"):  # every pair of teams: one family per test
        for t, p in zip(out["interleaving"], holm_adjusted([t[test] for t in out["interleaving"]])):
            t[f"{test}_holm"] = _num(p)
    for (kind, name), per_user in groups.items():
        got = resampled[kind, name]
        out[kind][name] = summary(per_user, coverage=tally.coverage(**{kind[:-1]: name}), **level,
                                  resampled=got.result() if isinstance(got, Future) else got)
    return out


def _sums_by(codes: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``codes`` and the sum of ``weights`` for each."""
    distinct, inverse = np.unique(codes, return_inverse=True)
    return distinct, np.bincount(inverse, weights=weights, minlength=len(distinct))


def _one_version(served: dict, a: str, b: str) -> str | None:
    """The version that served every list of both arms (their A/B test then compares their
    request defaults alone, on that version), else None."""
    both = set(served.get(a, {})) | set(served.get(b, {}))
    return next(iter(both)) if len(both) == 1 else None


def _bootstraps(groups: dict, bootstrap: int, alpha: float, seed: int,
                pool: Callable[[], Executor] | None) -> dict:
    """``bootstrap_ratios`` of every group (each with the same seed, as one at a time): the
    largest first, each to whichever of this process and the pool's has the least work so far;
    the pool's are returned as futures."""
    if not bootstrap:
        return dict.fromkeys(groups)
    lanes = [0.0, 0.0]  # users resampled here, in the pool
    where: dict = {}
    for key in sorted(groups, key=lambda k: -len(groups[k]["user"])):
        lane = int(lanes[1] < lanes[0])
        lanes[lane] += len(groups[key]["user"])
        where[key] = lane
    executor = pool() if pool is not None and lanes[1] * bootstrap >= POOL_CELLS else None
    later = {key: executor.submit(bootstrap_ratios, *_ratios(groups[key]), bootstrap, seed, alpha)
             for key in groups if executor is not None and where[key]}
    return {key: later[key] if key in later else bootstrap_ratios(*_ratios(groups[key]), bootstrap, seed, alpha)
            for key in groups}


def interleaving(credits: dict[str, np.ndarray], teams: dict[int, str], arms: dict[int, str],
                 seed: int = 0) -> list[dict]:
    """For every two teams (arms) drafted into the same lists (an interleaved list's arm,
    ``A+B``; ``B+A`` is the same pair): per user the credits each earned on those lists only
    (a user of another experiment that reused one of the names is not a win; lists shown to no
    user id are no user's, left out); wins, ties, the sign test and the paired test."""
    results = []
    code_of = {name: code for code, name in teams.items()}
    pairs: dict[tuple[str, str], list[int]] = {}
    for code, arm in arms.items():
        names = tuple(sorted(arm.split("+")))  # arm names hold no "+" (experiments._NAME)
        if len(names) == 2:
            pairs.setdefault(names, []).append(code)
    for (name_a, name_b), codes in sorted(pairs.items()):
        ta, tb = code_of.get(name_a, -1), code_of.get(name_b, -1)
        rows = np.isin(credits["pair"], codes) & np.isin(credits["team"], (ta, tb)) & (credits["user"] >= 0)
        users, inverse = np.unique(credits["user"][rows], return_inverse=True)
        got = {t: np.bincount(inverse, weights=np.where(credits["team"][rows] == t, credits["credits"][rows], 0),
                              minlength=len(users)) for t in (ta, tb)}
        a, b = got[ta], got[tb]
        if not len(users):
            continue
        wins_a, wins_b = int((a > b).sum()), int((b > a).sum())
        results.append({
            "a": name_a, "b": name_b, "users": int(len(users)), "users_with_preference": wins_a + wins_b,
            "wins_a": wins_a, "wins_b": wins_b, "ties": int(len(users)) - wins_a - wins_b,
            "credits_a": int(a.sum()), "credits_b": int(b.sum()),
            "preference_a": _num(wins_a / (wins_a + wins_b)) if wins_a + wins_b else None,
            "p_sign": sign_test(wins_a, wins_b), "p_paired": paired_test(a, b, seed=seed),
            "method": "per user, the arm with more credited engagements wins; two-sided sign test over users "
                      "with a preference (exact binomial up to 2000); paired: sign-flip test on per-user credits"})
    return results


def _days(cells: dict[str, np.ndarray], rows: np.ndarray, alpha: float) -> dict[str, dict]:
    days = cells["day"][rows]
    out = {}
    for day in np.unique(days):
        mine = rows[days == day]
        label = datetime.fromtimestamp(int(day) * 86_400, timezone.utc).strftime("%Y-%m-%d")
        out[label] = summary(by_user(cells, mine), coverage=None, bootstrap=None, alpha=alpha, seed=0)
    return out


def _num(x) -> float | None:
    """A float for JSON (NaN, e.g. a rate with no denominator, as None)."""
    x = float(x)
    return None if math.isnan(x) else x
