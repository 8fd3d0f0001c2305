"""The web page's HTML (``online/ui.py`` serves it): the layout and style, item cards and grids,
what an item shares with a history, and the ``max_per`` field every list's form carries
(``title:1``, several as ``title:1,colour:2``; empty: the server's default; ``none``: no
limit). Standard library only."""

from __future__ import annotations

from html import escape
from urllib.parse import quote, unquote, urlencode

from fastapi.responses import HTMLResponse

from groundrec.online.client_bodies import segment
from groundrec.shared.errors import UserError

PLACEHOLDER = (b'<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256" viewBox="0 0 256 256">'
               b'<rect width="256" height="256" fill="#e8e8e8"/><text x="128" y="136" font-family="sans-serif" '
               b'font-size="20" fill="#888" text-anchor="middle">no image</text></svg>')
STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#222}
header{background:#1f2937;color:#fff;padding:.6rem 1rem;display:flex;gap:1.2rem;align-items:center;flex-wrap:wrap}
header a{color:#fff}
main{padding:1rem}
form.inline{display:flex;gap:.5rem;align-items:center;flex-wrap:wrap}
.grid{list-style:none;padding:0;display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:.8rem}
.card{border:1px solid #ddd;border-radius:6px;padding:.5rem;display:flex;flex-direction:column;gap:.3rem}
.card img{width:100%;height:170px;object-fit:contain;background:#f4f4f4}
.card a:focus,.card button:focus{outline:3px solid #2563eb}
.why{font-size:.85rem;color:#555}
.score{font-variant-numeric:tabular-nums;color:#444;font-size:.85rem}
.history{display:flex;gap:.4rem;flex-wrap:wrap;list-style:none;padding:0}
.history img{width:64px;height:64px;object-fit:contain;background:#f4f4f4}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
pre{background:#f6f6f6;padding:.6rem;overflow:auto;max-height:30rem}
.error{color:#b91c1c}
"""


def root(request) -> str:  # the prefix a proxy serves the page under (``root_path``): its links are relative to it
    return request.scope.get("root_path") or ""


def page(title: str, body: str, version: str | None = None, root: str = "") -> HTMLResponse:
    """A page whose links are relative to ``<base href="{root}/">`` (``root``: the proxy's prefix,
    the request's ``root_path``): served under /api, its links, images and forms stay under /api."""
    nav = ('<header><strong>groundrec</strong><nav aria-label="pages" style="display:flex;gap:1rem">'
           '<a href="./">Items</a><a href="ui/user">A user\'s list</a><a href="ui/version">Version</a><a href="ui/online">Online</a></nav>'
           + (f'<span style="margin-left:auto">version {escape(version)}</span>' if version else "") + "</header>")
    return HTMLResponse(f'<!doctype html><html lang="en"><head><meta charset="utf-8"><base href="{escape(root)}/">'
                        f'<meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,">'
                        f'<title>{escape(title)} · groundrec</title><style>{STYLE}</style></head>'
                        f'<body>{nav}<main><h1>{escape(title)}</h1>{body}</main></body></html>')


def title_of(item: dict) -> str:
    fields = item.get("fields") or {}
    return str(fields.get("title") or fields.get("text") or item["item_id"])


def thumb(item_id: str, alt: str, css: str = "") -> str:
    return (f'<img src="items/{segment(item_id)}/thumbnail" alt="{escape(alt)}" loading="lazy"'
            f'{f" class={css!r}" if css else ""}>')


def card(item: dict, history: list[str], why: str = "", score: bool = False, keep: dict | None = None) -> str:
    """``keep``: the user page's settings its "add to history" link carries on."""
    iid, title = item["item_id"], title_of(item)
    add = urlencode({**(keep or {}), "h": joined([*history, iid])})
    return (f'<li class="card" data-item="{escape(iid)}">{thumb(iid, title)}'
            f'<a href="ui/items/{segment(iid)}">{escape(title[:80])}</a>'
            + (f'<span class="score">score {item["score"]:.4f}</span>' if score else "")
            + (f'<span class="score parts">{parts(item["parts"])}</span>' if item.get("parts") else "")
            + (f'<span class="why">{why}</span>' if why else "")
            + f'<a class="add" href="ui/user?{add}" aria-label="add {escape(title[:60])} to the history">'
              f'+ add to history</a></li>')


def grid(items: list[dict], history: list[str], label: str, whys: dict | None = None, score: bool = False,
         keep: dict | None = None) -> str:
    if not items:
        return "<p>Nothing to show.</p>"
    return (f'<ul class="grid" aria-label="{escape(label)}">'
            + "".join(card(i, history, (whys or {}).get(i["item_id"], ""), score, keep) for i in items) + "</ul>")


def joined(history: list[str]) -> str:
    """A history as the page's ``h`` parameter: ids joined by commas, each percent-quoted (an id
    may hold a comma); ``split`` reads it back."""
    return ",".join(quote(i, safe="") for i in history)


def split(text: str | None) -> list[str]:
    return [unquote(x) for x in (text or "").split(",") if x]


def parts(values: dict) -> str:
    return " · ".join(f"{escape(name)} {value:+.3f}" for name, value in values.items())


def why(fields: dict, history: list[dict]) -> str:
    """The grounded fields an item shares with the history, in words a person reads."""
    shared = []
    for name, value in fields.items():
        if not name.startswith("vlm_") or name == "vlm_text" or value in (None, ""):
            continue
        n = sum(1 for h in history if str(h.get(name) or "").lower() == str(value).lower())
        if n:
            shared.append(f"{escape(name.removeprefix('vlm_'))}: {escape(str(value))} (like {n} in the history)")
    return "; ".join(shared)


# --- max_per on the page -------------------------------------------------------------
def parse_max_per(text: str | None) -> dict[str, int] | None:
    """The page's ``max_per`` as the API's: None (absent or empty: the server's default), {}
    (``none``: no limit) or ``{column: N}`` from ``column:N`` pairs separated by commas.
    UserError naming the field for anything else."""
    text = (text or "").strip()
    if not text:
        return None
    if text.lower() == "none":
        return {}
    out: dict[str, int] = {}
    for pair in text.split(","):
        column, _, n = pair.strip().rpartition(":")
        if not column.strip() or not (n.strip().isascii() and n.strip().isdigit()) or len(n.strip()) > 6 or int(n) < 1:
            raise UserError(f"max_per: {pair.strip()[:80]!r} is not column:N with N >= 1 (e.g. title:1; "
                            "several as title:1,colour:2; none for no limit)")
        out[column.strip()] = int(n)
    return out


def format_max_per(max_per: dict[str, int] | None) -> str:
    """``parse_max_per``'s inverse: ``title:1,colour:2``, ``none`` for {}, empty for None."""
    if max_per is None:
        return ""
    return ",".join(f"{c}:{n}" for c, n in max_per.items()) if max_per else "none"


def max_per_field(text: str | None, default: dict[str, int] | None) -> str:
    """The ``max_per`` input of a list's form and, beside it, the limit in force: the one
    given, else the server's default."""
    given = parse_max_per(text)
    used = default if given is None else given
    said = ("no limit" if not used else "at most " + ", ".join(f"{n} per {c}" for c, n in used.items()))
    said += " (the server's default)" if given is None else ""
    return (f'<label for="max_per">at most per value</label><input id="max_per" name="max_per" '
            f'value="{escape(format_max_per(given))}" placeholder="{escape(format_max_per(default) or "e.g. title:1")}" '
            f'size="14"><span id="max_per_used" class="score">{escape(said)}</span>')
