"""The files of an online report: ``results.json`` (everything, numbers as numbers),
``report.md`` and ``report.html`` (the same tables and notes) and, when matplotlib imports
(``pip install groundrec[offline]``), PNG plots: click-through per day per version, and per
arm with its interval."""

from __future__ import annotations

import html
import json
from datetime import date
from pathlib import Path

PLOTS_NEED = "plots need matplotlib (pip install groundrec[offline])"
COLUMNS = [("impressions", "impressions"), ("clicks", "clicks"), ("conversions", "conversions"), ("users", "users"),
           ("CTR", "ctr"), ("CVR", "cvr"), ("mean position", "mean_position"), ("coverage", "coverage")]


def write(results: dict, out: Path) -> list[str]:
    """Write the report into ``out`` (created); the names of the files written."""
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(results, out)
    results = {**results, "plots": plots}
    if not plots:
        results["notes"] = [*results.get("notes", []), PLOTS_NEED]
    (out / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False))
    sections = _sections(results)
    (out / "report.md").write_text(_markdown(sections, plots))
    (out / "report.html").write_text(_html(sections, plots))
    return ["results.json", "report.md", "report.html", *plots]


def _g(value) -> str:
    """A difference, a standard error or a p-value in 3 significant digits (4 fixed decimals
    printed p = 3e-7 as 0.0000 and a CVR difference of 4e-5 as -0.0000); a p that underflowed to
    0 as below the smallest float."""
    if value is None or value != value:
        return "–"
    return "< 1e-300" if value == 0 else f"{value:.3g}"


def _fmt(value, ci=None) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    text = f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    if ci and ci[0] is not None and ci[1] is not None:
        text += f" [{ci[0]:.4f}, {ci[1]:.4f}]" if abs(value) < 10 else f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return text


def _group_table(groups: dict[str, dict], label: str) -> tuple[list[str], list[list[str]]]:
    header = [label] + [name for name, key in COLUMNS if any(key in g for g in groups.values())]
    rows = []
    for name, g in groups.items():
        rows.append([name] + [_fmt(g.get(key), g.get(f"{key}_ci")) for col, key in COLUMNS
                              if any(key in h for h in groups.values())])
    return header, rows


def _sections(r: dict) -> list[tuple[str, list[str], tuple | None]]:
    """(title, paragraphs, table or None) in the order shown."""
    a = r["attribution"]
    s = r["settings"]
    out = [("Attribution", [
        f"Events read: {a['events']}; credited by recommendation id: {a['by_id']}; by the window "
        f"({s['window_s']:g} s, no id): {a['by_window']}; unverified (an id unknown, another user's, or not showing "
        f"the item): {a['unverified']}; unattributed: {a['unattributed']}. Impressions: {a['impressions']} "
        f"(and {a['context_impressions']} from before the period, read only to credit its events).",
        f"Rates: CTR = impressions with any credited event / impressions; CVR = impressions with a credited event "
        f"of type {', '.join(s['purchase_types'])} / impressions; mean position = mean 1-based position of the "
        f"engaged items. Intervals at {1 - s['alpha']:.0%}, the user the unit."], None)]
    out.append(("Per version", [f"Intervals: bootstrap over users ({s['bootstrap']} resamples, seed {s['seed']})."],
                _group_table(r["versions"], "version")))
    served = r.get("arm_versions", {})
    out.append(("Per arm", ["An arm's lists: those logged with it, interleaved or not. Served by: " + "; ".join(
        f"{arm}: " + ", ".join(f"{v} ({n} lists)" for v, n in sorted(vs.items())) for arm, vs in served.items())
        + ". An arm served by a version other than its own (its pinned version did not load, or not yet) is "
          "served by the current one under its own name."], _group_table(r["arms"], "arm")))
    if r["ab_tests"]:
        rows = [[t["a"], t["b"], t["metric"], _g(t["diff"]), _g(t["se"]), _g(t["p"]), _g(t.get("p_holm")),
                 t.get("test", ""), f"{t['users_a']} / {t['users_b']}", str(t["users_in_both"])] for t in r["ab_tests"]]
        same = sorted({(t["a"], t["b"], t["one_version"]) for t in r["ab_tests"] if t.get("one_version")})
        out.append(("A/B tests between arms", [
            "; ".join(sorted({t["method"] for t in r["ab_tests"]})) + "; diff = b − a; lists not interleaved only. "
            "p (Holm): adjusted over every pair of arms on the same metric (with more than two arms, read that one). "
            "Users in both arms break the test's independence: it should be 0 with sticky assignment.",
            *(f"Arms {a} and {b} were both served by version {v} alone: their test compares their request "
              "defaults on that one version (an arm pinned to another version that did not load was served by the "
              "current one)." for a, b, v in same)],
            (["a", "b", "metric", "diff", "se", "p", "p (Holm)", "p by", "users a / b", "in both"], rows)))
    if r["interleaving"]:
        rows = [[t["a"], t["b"], str(t["users"]), f"{t['wins_a']} / {t['wins_b']} / {t['ties']}",
                 _fmt(t["preference_a"]), _g(t["p_sign"]), _g(t["p_paired"]), _g(t.get("p_paired_holm"))]
                for t in r["interleaving"]]
        out.append(("Interleaving (team draft)", [r["interleaving"][0]["method"] + "; p (paired, Holm): adjusted "
                                                  "over every pair of teams."],
                    (["a", "b", "users", "wins a / b / ties", "share preferring a", "p (sign)", "p (paired)",
                      "p (paired, Holm)"], rows)))
    out.append(("Per day", ["Intervals: delta method over users."], _group_table(r["days"], "day (UTC)")))
    for version, days in r["days_by_version"].items():
        out.append((f"Per day, version {version}", [], _group_table(days, "day (UTC)")))
    if r.get("notes"):
        out.append(("Notes", list(r["notes"]), None))
    return out


def _cell(text) -> str:
    """A Markdown table cell: a ``|`` (a team-draft list's versions, ``v1|v2``) would start a new
    cell and shift the row's figures under the wrong headers."""
    return str(text).replace("|", "\\|")


def _markdown(sections, plots: list[str]) -> str:
    lines = ["# groundrec online report", ""]
    for title, paragraphs, table in sections:
        lines += [f"## {title}", ""]
        for p in paragraphs:
            lines += [p, ""]
        if table:
            header, rows = table
            lines += ["| " + " | ".join(map(_cell, header)) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]
            lines.append("")
    lines += [f"![{p}]({p})\n" for p in plots]
    return "\n".join(lines)


def _html(sections, plots: list[str]) -> str:
    e = html.escape
    body = ["<h1>groundrec online report</h1>"]
    for title, paragraphs, table in sections:
        body.append(f"<h2>{e(title)}</h2>")
        body += [f"<p>{e(p)}</p>" for p in paragraphs]
        if table:
            header, rows = table
            body.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
            body += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
            body.append("</table>")
    body += [f'<p><img src="{e(p)}" alt="{e(p)}"></p>' for p in plots]
    style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>groundrec online report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def _plots(r: dict, out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    files = []
    if r["days_by_version"]:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for version, days in r["days_by_version"].items():
            x = [date.fromisoformat(d) for d in days]  # dates: versions with different days stay in order
            ctr = [d["ctr"] for d in days.values()]
            # a day with one user has no interval: drawn as its point (NaN leaves a gap, never an error)
            lo = [d["ctr_ci"][0] if d["ctr_ci"][0] is not None else float("nan") for d in days.values()]
            hi = [d["ctr_ci"][1] if d["ctr_ci"][1] is not None else float("nan") for d in days.values()]
            axes[0].plot(x, ctr, marker="o", label=version)
            axes[0].fill_between(x, lo, hi, alpha=0.2)
            axes[1].plot(x, [d["impressions"] for d in days.values()], marker="o", label=version)
        axes[0].set_ylabel(f"click-through rate ({1 - r['settings']['alpha']:.0%} interval)")
        axes[1].set_ylabel("impressions")
        for ax in axes:
            ax.tick_params(axis="x", labelrotation=60, labelsize=7)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "per_day.png", dpi=110)
        plt.close(fig)
        files.append("per_day.png")
    for kind in ("arms", "versions"):
        groups = {k: g for k, g in r[kind].items() if g["ctr"] is not None}
        if not groups:
            continue
        fig, ax = plt.subplots(figsize=(7, 0.5 * len(groups) + 1.5))
        names = list(groups)
        ctr = [groups[n]["ctr"] for n in names]
        bound = lambda n, i, c: c if groups[n]["ctr_ci"][i] is None else groups[n]["ctr_ci"][i]  # noqa: E731 (0 is a bound)
        err = [[c - bound(n, 0, c) for c, n in zip(ctr, names)], [bound(n, 1, c) - c for c, n in zip(ctr, names)]]
        ax.barh(range(len(names)), ctr, xerr=err, capsize=4, color="#48c")
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlabel(f"click-through rate per {kind[:-1]} ({1 - r['settings']['alpha']:.0%} bootstrap interval over users)")
        fig.tight_layout()
        fig.savefig(out / f"ctr_per_{kind[:-1]}.png", dpi=110)
        plt.close(fig)
        files.append(f"ctr_per_{kind[:-1]}.png")
    return files
