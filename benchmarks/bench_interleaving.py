"""Power of an A/B test vs Team-Draft interleaving on the same pair of rankers: how many users
each needs to find the better ranker at p < 0.05 in 80% of seeded simulated experiments.

The shop (planted preferences): ``--items`` items and, per experiment, fresh users; the true
relevance of item i to user u is s(u, i) = <p_u, q_i> / sqrt(d) with p_u, q_i ~ N(0, I_d),
d = 8 (a latent-factor model; s has unit variance). Ranker A ranks by s + N(0, sigma_a^2),
ranker B by s + N(0, sigma_b^2) with sigma_b > sigma_a (defaults 0.5 and 0.8): A is truly
better. Each user makes 1 + Poisson(``--requests-mean`` - 1) requests (default mean 5), each
shown 10 items; users differ in how readily they click: a propensity
exp(``--propensity-sd`` x N(0, 1)) (default sd 1) multiplies their click probabilities.

Clicks (position-based model): the item at 1-based position r is examined with probability
1 / r and, once examined, clicked with probability sigmoid(2 s - 6) (an item of average
relevance: 0.25%, two standard deviations above: 11.9%, three: 50%); clicks are independent.

- A/B: half the users see A's list, half B's; the metric is the click-through rate (lists with
  any click / lists), compared by ``groundrec.shared.stats.two_sample_test`` over users.
- Interleaving: every request shows ``team_draft(A, B)`` (``groundrec.online.interleaving``, a
  fresh coin per request); each click credits the arm that drafted its position; a user
  prefers the arm with more credits over their requests; ``sign_test`` over the users with a
  preference.

An experiment succeeds when p < 0.05 and the better arm (A) is the one found better. Power at
a number of users = share of ``--experiments`` seeded experiments that succeed; the users
needed for 80% power are read off a grid in steps of sqrt(2), interpolated on log(users).

    .venv/bin/python benchmarks/bench_interleaving.py --experiments 100
    .venv/bin/python benchmarks/bench_interleaving.py --experiments 100 --sweep-sigma-b 0.65,0.8,1.0,1.5
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from groundrec.online.interleaving import team_draft  # noqa: E402
from groundrec.shared.stats import paired_test, sign_test, two_sample_test  # noqa: E402

D, K = 8, 10
EXAMINE = 1.0 / np.arange(1, K + 1)


def attraction(s: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(2.0 * s - 6.0)))


def shop(rng: np.random.Generator, users: int, items: int, sigma_a: float, sigma_b: float):
    """True relevance (users x items) and the two rankers' top-K lists."""
    s = rng.standard_normal((users, D)) @ rng.standard_normal((D, items)) / math.sqrt(D)
    lists = []
    for sigma in (sigma_a, sigma_b):
        noisy = s + sigma * rng.standard_normal(s.shape)
        top = np.argpartition(-noisy, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(noisy, top, 1), axis=1)
        lists.append(np.take_along_axis(top, order, 1))
    return s, lists[0], lists[1]


def clicks(rng: np.random.Generator, s: np.ndarray, shown: np.ndarray, propensity: np.ndarray) -> np.ndarray:
    """requests x K booleans: the position-based model on the lists shown, each request's
    click probabilities scaled by its user's propensity."""
    p = EXAMINE[: shown.shape[1]] * attraction(np.take_along_axis(s, shown, 1)) * propensity[:, None]
    return rng.random(p.shape) < np.minimum(p, 1.0)


def users_of(rng: np.random.Generator, users: int, args) -> tuple[np.ndarray, np.ndarray]:
    """Each request's user (users make 1 + Poisson(mean - 1) requests) and each user's click
    propensity (lognormal, median 1)."""
    requests = 1 + rng.poisson(args.requests_mean - 1, users)
    propensity = np.exp(args.propensity_sd * rng.standard_normal(users))
    return np.repeat(np.arange(users), requests), propensity


def ab_p(seed: int, users: int, args) -> tuple[float, bool]:
    rng = np.random.default_rng(seed)
    s, a, b = shop(rng, users, args.items, args.sigma_a, args.sigma_b)
    who, propensity = users_of(rng, users, args)
    in_b = who >= users // 2  # the first half of the users is arm A
    shown = np.where(in_b[:, None], b[who], a[who])
    clicked = clicks(rng, s[who], shown, propensity[who]).any(1)
    num = np.bincount(who, weights=clicked, minlength=users)
    den = np.bincount(who, minlength=users).astype(float)
    half = users // 2
    t = two_sample_test(num[:half], den[:half], num[half:], den[half:])
    return t["p"], t["diff"] < 0  # B - A < 0: A found better


def _interleaved_credits(seed: int, users: int, args) -> tuple[np.ndarray, np.ndarray]:
    """Per user, the clicks credited to A and to B over their team-drafted lists."""
    rng = np.random.default_rng(seed)
    s, a, b = shop(rng, users, args.items, args.sigma_a, args.sigma_b)
    who, propensity = users_of(rng, users, args)
    coin = random.Random(seed)  # the service seeds it per request (from the recommendation id)
    shown = np.empty((len(who), K), np.int64)
    from_a = np.empty((len(who), K), bool)
    lists_a, lists_b = a.tolist(), b.tolist()
    for r, u in enumerate(who.tolist()):
        got, teams = team_draft(lists_a[u], lists_b[u], K, coin)
        shown[r] = got
        from_a[r] = [t == "a" for t in teams]
    c = clicks(rng, s[who], shown, propensity[who])
    credit_a = np.bincount(who, weights=(c & from_a).sum(1), minlength=users)
    credit_b = np.bincount(who, weights=(c & ~from_a).sum(1), minlength=users)
    return credit_a, credit_b


def interleaving_p(seed: int, users: int, args) -> tuple[float, bool]:
    """The sign test over users with a preference (the report's ``p_sign``)."""
    credit_a, credit_b = _interleaved_credits(seed, users, args)
    wins_a, wins_b = int((credit_a > credit_b).sum()), int((credit_b > credit_a).sum())
    return sign_test(wins_a, wins_b), wins_a > wins_b


def interleaving_paired_p(seed: int, users: int, args) -> tuple[float, bool]:
    """The paired sign-flip test on per-user credits (the report's ``p_paired``)."""
    credit_a, credit_b = _interleaved_credits(seed, users, args)
    return paired_test(credit_a, credit_b, n_perm=2000, seed=seed), credit_a.sum() > credit_b.sum()


def users_for_power(method, args, grid: list[int]) -> tuple[float | None, dict[int, float]]:
    power = {}
    for n in grid:
        wins = 0
        for e in range(args.experiments):
            p, right = method(args.seed * 1_000_003 + e * 7919 + n, n, args)
            wins += p < 0.05 and right
        power[n] = wins / args.experiments
        print(f"  {method.__name__:15s} users={n:6d} power={power[n]:.2f}", flush=True)
        if power[n] >= 0.8:
            break
    hit = [n for n in power if power[n] >= 0.8]
    if not hit:
        return None, power
    n1 = hit[0]
    below = [n for n in power if n < n1]
    if not below:
        return float(n1), power
    n0 = below[-1]
    frac = (0.8 - power[n0]) / (power[n1] - power[n0])
    return float(math.exp(math.log(n0) + frac * (math.log(n1) - math.log(n0)))), power


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiments", type=int, default=100)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--sigma-a", type=float, default=0.5)
    ap.add_argument("--sigma-b", type=float, default=0.8)
    ap.add_argument("--requests-mean", type=float, default=5.0, help="mean requests per user (1 + Poisson)")
    ap.add_argument("--propensity-sd", type=float, default=1.0, help="sd of log click propensity across users")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sweep-sigma-b", type=str, default=None,
                    help="comma-separated sigma_b values: measure each (the effect grows with sigma_b) and print "
                         "the ratio at each, e.g. 0.65,0.8,1.0,1.5")
    args = ap.parse_args()
    if not args.sweep_sigma_b:
        print(json.dumps(measure(args)))
        return
    rows = []
    for sigma_b in [float(x) for x in args.sweep_sigma_b.split(",")]:
        args.sigma_b = sigma_b
        r = measure(args)
        rows.append(r)
        print(json.dumps(r), flush=True)
    print("| sigma_b | CTR A | CTR B | relative effect | A/B users | interleaving users | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ab, il, ratio = r["users_for_80_power"]["ab"], r["users_for_80_power"]["interleaving"], r["ratio_ab_over_interleaving"]
        print(f"| {r['sigma_b']} | {r['ctr']['A']:.4f} | {r['ctr']['B']:.4f} | {r['ctr']['A'] / r['ctr']['B'] - 1:+.1%} | "
              f"{ab and round(ab):,} | {il and round(il):,} | {ratio and round(ratio, 1)}x |")


def measure(args) -> dict:
    """Users for 80% power, A/B and interleaving, at ``args``' setting."""
    rng = np.random.default_rng(args.seed)
    s, a, b = shop(rng, 20_000, args.items, args.sigma_a, args.sigma_b)
    who, propensity = users_of(rng, 20_000, args)
    ctr = {name: float(clicks(rng, s[who], lst[who], propensity[who]).any(1).mean()) for name, lst in (("A", a), ("B", b))}
    print(f"effect: CTR A {ctr['A']:.4f}, B {ctr['B']:.4f} (relative {ctr['A'] / ctr['B'] - 1:+.1%}), "
          f"sigma_a={args.sigma_a}, sigma_b={args.sigma_b}, {args.items} items, K={K}, "
          f"{args.requests_mean} requests per user on average, propensity sd {args.propensity_sd}", flush=True)
    grid = [int(round(25 * 2 ** (i / 2))) for i in range(30)]  # steps of sqrt(2)
    il, il_power = users_for_power(interleaving_p, args, grid)
    ilp, ilp_power = users_for_power(interleaving_paired_p, args, grid)
    ab, ab_power = users_for_power(ab_p, args, grid)
    ratio = ab / il if ab and il else None
    return {"sigma_a": args.sigma_a, "sigma_b": args.sigma_b, "ctr": ctr, "experiments": args.experiments,
            "users_for_80_power": {"ab": ab, "interleaving": il, "interleaving_paired": ilp},
            "ratio_ab_over_interleaving": ratio, "ratio_ab_over_interleaving_paired": ab / ilp if ab and ilp else None,
            "power": {"ab": ab_power, "interleaving": il_power, "interleaving_paired": ilp_power}}

if __name__ == "__main__":
    main()
