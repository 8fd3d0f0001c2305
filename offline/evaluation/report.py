"""The evaluation report: results.json (every number), report.md, report.html and PNG plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic_core import to_json

PLOT_METRICS = ("recall", "ndcg")


def _fmt(m: dict) -> str:  # one user has no interval
    ci = "no interval: one user" if m["ci_low"] is None or np.isnan(m["ci_low"]) else f"{m['ci_low']:.4f}, {m['ci_high']:.4f}"
    return f"{m['mean']:.4f} [{ci}]"


def _sig(row: dict) -> str:
    vs = row.get("vs_best")
    if vs is None:
        return "best"
    return f"{'**yes**' if vs['significant'] else 'no'} (p={vs['p']:.3g}{_holm(vs)})"


def summary_table(result: dict, k: int | None = None) -> str:
    """The Markdown results table: primary metric family at one cut-off, with the CIs at 1 - alpha."""
    primary = result["protocol"]["primary_metric"]
    k = k or int(primary.split("@")[1])
    level = round(100 * (1 - result["protocol"]["alpha"]))
    head = (f"| System | Representation | Recall@{k} [{level}% CI] | NDCG@{k} [{level}% CI] | HitRate@{k} | MRR@{k} "
            f"| Coverage@{k} | ARP@{k} | Diversity@{k} | Differs from best ({primary}, Holm) |")
    lines = [head, "|" + "---|" * 10]
    for r in result["rows"]:
        m = r["metrics"]
        rep = r["representation"] + (" ⚠" if r.get("note") else "")
        params = ", ".join(f"{a}={b}" for a, b in r["params"].items() if a != "strategy" or b != "mean")
        lines.append(f"| {r['system']}{f' ({params})' if params else ''} | {rep} | {_fmt(m[f'recall@{k}'])} | "
                     f"{_fmt(m[f'ndcg@{k}'])} | {m[f'hit_rate@{k}']['mean']:.4f} | {m[f'mrr@{k}']['mean']:.4f} | "
                     f"{r['lists'][f'coverage@{k}']:.3f} | {r['lists'][f'arp@{k}']:.1f} | "
                     f"{_diversity(r, k)} | {_sig(r)} |")
    return "\n".join(lines)


def _diversity(row: dict, k: int) -> str:
    value = row["lists"].get(f"diversity@{k}")
    return "-" if value is None else f"{value:.3f}"


BASELINES = ("Random", "Most popular", "Item-item co-occurrence", "ALS (implicit)", "SASRec")  # names' starts
VLM_REPS = ("vlm_free", "vlm_structured", "vlm_free_title")
CATALOG_REPS = ("title", "metadata", "description")


def slices_table(result: dict) -> list[str]:
    """Recall on the held-out items that had no training interaction (cold) and on the rest."""
    k = result["protocol"]["primary_metric"].split("@")[1]  # the slices are recall at the primary metric's k
    names = list(result["rows"][0].get("slices") or {})
    if not names:
        return []
    lines = ["| System | Representation | " + " | ".join(f"recall@{k} on {n} [users]" for n in names) + " |",
             "|---|---|" + "---|" * len(names)]
    for r in result["rows"]:
        cells = [f"{_fmt(v)} [{v['users']}]" if v["users"] else "- [0]" for v in (r["slices"][n] for n in names)]
        lines.append(f"| {r['system']} | {r['representation']} | " + " | ".join(cells) + " |")
    return lines


def _slice_loss(width: dict, name: str) -> str:
    part = (width.get("slices") or {}).get(name)
    return f"{part['loss']:.4f} [{part['se']:.4f}] ({part['users']} users)" if part else ""


def width_lines(result: dict) -> list[str]:
    """What width costs: each width a hybrid row's width rule tried on validation, its loss on
    all users and on each slice (cold: users with a held-out item new to training), and the
    rule applied to one half of the users and checked on the other."""
    lines, folds = [], []
    for r in result["rows"]:
        for w in r.get("width") or []:
            if not lines:
                lines = ["| System | Rank | Projected | Validation score | Loss vs full [standard error] | Cold users: "
                         "loss [se] | Warm users: loss [se] | Within the rule |", "|---|---|---|---|---|---|---|---|"]
            lines.append(f"| {r['label']} | {w['rank']} | {'yes' if w['projected'] else 'no'} | {w['score']:.4f} | "
                         f"{w['loss']:.4f} [{w['se']:.4f}] | {_slice_loss(w, 'cold')} | {_slice_loss(w, 'warm')} | "
                         f"{'yes' if w['within'] else 'no'} |")
        for f in r.get("width_folds") or []:
            folds.append(f"- **{r['label']}**: chosen on {f['users']} users, rank {f['rank']}"
                         f"{' projected' if f['projected'] else ''}; on the other {f['other_users']} its loss "
                         f"{f['loss_on_other']:.4f}: {'within' if f['holds'] else 'beyond'} the tolerance")
    return lines + ([""] + folds if folds else [])


def warnings_lines(result: dict) -> list[str]:
    """Grid values added beyond an edge while tuning, and values still on an edge."""
    return ([f"- **{r['label']}**: {w['axis']} widened to {w['value']:g}" for r in result["rows"]
             for w in r.get("widened") or []]
            + [f"- **{r['label']}**: {w}" for r in result["rows"] for w in r.get("warnings") or []])


def _compare(result: dict, a: dict, b: dict) -> str:
    primary = result["protocol"]["primary_metric"]
    pair = next(p for p in result["pairwise"] if {p["a"], p["b"]} == {a["label"], b["label"]})
    ma, mb = a["metrics"][primary]["mean"], b["metrics"][primary]["mean"]
    verdict = "significant" if pair["significant"] else "not significant"
    tiny = [r["label"] for r in (a, b) if r.get("note")]
    caveat = (f" ⚠ {' and '.join(tiny)} built with a tiny random-weight model: this comparison proves the code "
              "path only, it says nothing about quality") if tiny else ""
    return (f"**{a['label']}** {primary} {ma:.4f} vs **{b['label']}** {mb:.4f}: "
            f"{'higher' if ma > mb else 'lower' if ma < mb else 'equal'}, {verdict} (p={pair['p']:.3g}{_holm(pair)}){caveat}")


def _holm(test: dict) -> str:
    """The Holm-adjusted p beside a raw one (what the verdict compares with alpha)."""
    return f", Holm-adjusted {test['p_holm']:.3g}" if test.get("p_holm") is not None else ", Holm"


def verdict(result: dict) -> list[str]:
    """Plain answers to the questions the evaluation exists for, baselines included."""
    primary = result["protocol"]["primary_metric"]
    rows = result["rows"]
    lines = []
    best = max(rows, key=lambda r: r["metrics"][primary]["mean"])  # what the test says, as it is

    def best_of(rs: list[dict]) -> dict | None:
        """The row a comparison takes from a group: the best on validation when every row has a
        validation score (the best of several on test would bias the difference upward), else on test."""
        valid = f"valid_{primary}"
        by = (lambda r: r[valid]) if rs and all(r.get(valid) is not None for r in rs) else (
            lambda r: r["metrics"][primary]["mean"])
        return max(rs, key=by) if rs else None

    base = best_of([r for r in rows if r["system"].startswith(BASELINES)])
    collaborative = ("EASE", "groundrec hybrid", "groundrec published", "groundrec sequence encoder")
    content = best_of([r for r in rows if not r["system"].startswith(BASELINES + collaborative)])
    if best["system"].startswith(BASELINES):
        lines.append(f"- A baseline is best overall: **{best['label']}**.")
    if base and content:
        lines.append(f"- Best content-based system vs best baseline: {_compare(result, content, base)}.")
    ref = [r for r in rows if r["system"].startswith("VLM4Rec")]
    vlm = best_of([r for r in ref if r["representation"] in VLM_REPS])
    cat = best_of([r for r in ref if r["representation"] in CATALOG_REPS])
    if vlm and cat:
        lines.append(f"- VLM grounding vs catalog text (VLM4Rec algorithm): {_compare(result, vlm, cat)}.")
    vis = next((r for r in ref if r["representation"] == "visual"), None)
    if vlm and vis:
        lines.append(f"- VLM grounding vs raw visual features: {_compare(result, vlm, vis)}.")
    hybrid = next((r for r in rows if r["system"].startswith("groundrec hybrid")), None)
    if hybrid and base:
        lines.append(f"- groundrec hybrid vs best baseline: {_compare(result, hybrid, base)}.")
    if hybrid and content:
        lines.append(f"- groundrec hybrid vs best content-only system: {_compare(result, hybrid, content)}.")
    full = next((r for r in rows if r["system"].startswith("groundrec hybrid at full width")), None)
    if hybrid and full:
        lines.append(f"- the hybrid as published (narrower or projected) vs at its full width: "
                     f"{_compare(result, hybrid, full)}.")
    cf = next((r for r in rows if r["system"].startswith("EASE factorised (")), None)
    if hybrid and cf:
        lines.append(f"- groundrec hybrid vs its collaborative part alone: {_compare(result, hybrid, cf)}.")
    published = next((r for r in rows if r["system"] == "groundrec published"), None)
    sasrec = next((r for r in rows if r["system"].startswith("SASRec")), None)
    recency = next((r for r in rows if "+ recency" in r["system"] and r["system"].startswith("EASE")), None)
    for other, what in ((recency, "recency-weighted EASE"), (hybrid, "eval's hybrid"), (sasrec, "SASRec as published")):
        if published and other:
            lines.append(f"- what the job would publish vs {what}: {_compare(result, published, other)}.")
    encoder = next((r for r in rows if r["system"] == "groundrec sequence encoder"), None)
    for other, what in ((hybrid, "eval's hybrid"), (recency, "recency-weighted EASE"), (sasrec, "SASRec as published")):
        if encoder and other:
            lines.append(f"- the learned profile encoder vs {what}: {_compare(result, encoder, other)}.")
    tuned = best_of([r for r in rows if r["system"].startswith("groundrec") and not r["system"].startswith(collaborative)])
    plain = next((r for r in ref if r["representation"] == (tuned or {}).get("representation")), None)
    if tuned and plain:
        lines.append(f"- groundrec's tuned profiles vs VLM4Rec on the same representation: {_compare(result, tuned, plain)}.")
    return lines


def _plots(result: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    primary = result["protocol"]["primary_metric"]
    rows = result["rows"]
    labels = [r["label"] for r in rows]
    files = []
    mean = np.array([r["metrics"][primary]["mean"] for r in rows])
    err = np.array([[mean[i] - r["metrics"][primary]["ci_low"], r["metrics"][primary]["ci_high"] - mean[i]]
                    for i, r in enumerate(rows)]).T
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.5))
    ax.barh(range(len(rows)), mean, xerr=err, color=["#c44" if r.get("note") else "#48c" for r in rows], capsize=3)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    level = round(100 * (1 - result["protocol"]["alpha"]))
    ax.set_xlabel(f"{primary} on test users ({level}% bootstrap CI; red: tiny/smoke-test model)")
    fig.tight_layout()
    fig.savefig(out / "primary_metric.png", dpi=120)
    plt.close(fig)
    files.append("primary_metric.png")
    ks = result["protocol"]["ks"]
    for metric in PLOT_METRICS:
        fig, ax = plt.subplots(figsize=(8, 5))
        for r in rows:
            ax.plot(ks, [r["metrics"][f"{metric}@{k}"]["mean"] for k in ks], marker="o", label=r["label"],
                    linestyle="--" if r.get("note") else "-")
        ax.set_xlabel("K")
        ax.set_ylabel(f"{metric}@K")
        ax.legend(fontsize=6, loc="upper left")
        fig.tight_layout()
        fig.savefig(out / f"{metric}_at_k.png", dpi=120)
        plt.close(fig)
        files.append(f"{metric}_at_k.png")
    return files


def markdown(result: dict, plots: list[str]) -> str:
    p = result["protocol"]
    reps = result["representations"]
    lines = ["# groundrec evaluation", "",
             "## Protocol", "",
             f"- Split: {p['split']}. Seed {p['seed']}. Interactions per part: {p['split_counts']}.",
             f"- Interactions used: {p['interactions_used']} ({p['interactions_unknown_item_dropped']} dropped: item not in the catalog); "
             f"{p['users']} users.",
             f"- Test users: {p['test_users']} (dropped: {p['test_users_dropped']}). Validation users: {p['valid_users']} "
             f"(dropped: {p['valid_users_dropped']}).",
             f"- Full ranking over all {p['catalog_items']} catalog items, each user's seen items excluded; relevant = "
             "held-out items the user had not seen before.",
             f"- Metrics at K in {p['ks']}; {round(100 * (1 - p['alpha']))}% confidence intervals by bootstrap over users "
             f"({p['bootstrap']} resamples); paired sign-flip randomisation test ({p['permutations']} flips) between every "
             f"pair of systems on {p['primary_metric']}, Holm-corrected at α={p['alpha']}.",
             "- Hyper-parameters (representation, profile strategy, half-life, interests, popularity weight, fusion weight, "
             "EASE regularisation, hybrid weight) "
             "chosen on validation users only; every number below is on test users.",
             "- Coverage@K: share of the catalog in anybody's top K. ARP@K: mean training-interaction count of the "
             "recommended items (popularity bias). Diversity@K: mean cosine distance between the items of a list "
             f"in {result.get('diversity_space') or 'the first text representation'}'s space (intra-list diversity).",
             "",
             "## Results (test users)", "",
             summary_table(result), "",
             f"Best on {p['primary_metric']}: **{result['best']}**. ⚠ = built with a tiny random-weight model "
             "(proves the path only) or with unreadable images; see the notes below.", "",
             "## Verdict", "", *verdict(result), ""]
    if slices_table(result):
        lines += ["## Cold and warm items (test users)", "",
                  "Cold items had no interaction in the training part; a user counts in a slice when one of their "
                  "held-out items is in it.", "", *slices_table(result), ""]
    if width_lines(result):
        lines += ["## What width costs (validation)", "",
                  "Each width the width rule tried, against the full model on the same validation users (all, and "
                  "the cold and warm slices: users with and without a held-out item new to training); the "
                  "narrowest within the rule is published. Then the rule applied to one half of the users, its "
                  "choice's loss on the other half.", "", *width_lines(result), ""]
    if warnings_lines(result):
        lines += ["## Tuning grids widened, and values still on an edge", "", *warnings_lines(result), ""]
    for f in plots:
        lines += [f"![{f}]({f})", ""]
    lines += ["## Representations", "", "| Name | What | Status | Note | Example text |", "|---|---|---|---|---|"]
    for r in reps:
        status = "run" if r["status"] == "run" else f"**not run**: {r['reason']}"
        example = (r.get("example") or "").replace("|", "/")[:120]
        lines.append(f"| {r['name']} | {r['description']} | {status} | {r.get('note') or ''} | {example} |")
    fid = result.get("fidelity") or {}
    if fid.get("fields"):
        lines += ["", "## Grounding fidelity (structured VLM fields vs catalog attributes)", ""]
        if fid.get("note"):
            lines += [f"⚠ {fid['note']}", ""]
        lines += ["| Field | Items | Accuracy | Answered | Majority baseline |", "|---|---|---|---|---|"]
        for f, v in fid["fields"].items():
            acc = "-" if v["accuracy"] is None else f"{v['accuracy']:.3f}"
            ans = "-" if v["answered"] is None else f"{v['answered']:.3f}"
            maj = "-" if v["majority_baseline"] is None else f"{v['majority_baseline']:.3f}"
            lines.append(f"| {f} | {v['n']} | {acc} | {ans} | {maj} |")
    lines += ["", "## All metrics (test users, mean)", ""]
    metrics = list(result["rows"][0]["metrics"])
    lines += ["| System | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for r in result["rows"]:
        lines.append(f"| {r['label']} | " + " | ".join(f"{r['metrics'][m]['mean']:.4f}" for m in metrics) + " |")
    lines += ["", f"Timings (s): {result['timings_s']}", ""]
    return "\n".join(lines)


def results_json(result: dict) -> bytes:  # strict JSON: a NaN (one user's interval) as null, numpy's numbers as floats
    return to_json(result, indent=2, inf_nan_mode="null", fallback=float)


def write_report(result: dict, out: Path) -> None:
    from markdown_it import MarkdownIt

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_bytes(results_json(result))
    plots = _plots(result, out)
    md = markdown(result, plots)
    (out / "report.md").write_text(md)
    # html off: a catalog's or a VLM's text in a cell (HTML from a scraped catalog) is shown as
    # text, never run as script where `serve --report` serves this page on the API's origin
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(md)
    (out / "report.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>groundrec evaluation</title><style>"
        "body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}</style></head><body>"
        f"{body}</body></html>")
