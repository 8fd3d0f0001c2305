"""The HTTP API's request and response bodies, shared by the service and the client."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, TypeAdapter,
                      ValidationError, model_validator)
from pydantic_core import to_json

from groundrec.shared.errors import UserError
from groundrec.shared.scoring import STRATEGIES

if TYPE_CHECKING:  # the client imports this module: no numpy or faiss at run time
    from groundrec.online.retrieve import Result


def _utf8(v: str) -> str:
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError("text must be valid Unicode (it holds a lone surrogate such as \\ud800)") from None
    return v


# Text from a request: JSON allows lone surrogates ("\ud800"), which cannot be written back out.
Text = Annotated[str, AfterValidator(_utf8)]
FilterValue = Text | int | float | bool


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


FUTURE_SKEW_S = 86_400.0  # how far past the server's clock an event's time may be (clocks differ), no further


def _not_ahead(timestamp: float | None) -> float | None:
    """An event dated in the future would stay the newest of its user's history, anchor the
    job's window and the gate's cutoff there (no later user left to compare on) and make the
    online report read every list as older than it."""
    now = time.time()
    if timestamp is not None and timestamp > now + FUTURE_SKEW_S:
        raise ValueError(f"timestamp {timestamp:.10g} is more than a day past the server's clock ({now:.0f}): "
                         f"send seconds since the epoch (not milliseconds) from a clock that is set")
    return timestamp


class HistoryEntry(_Body):
    item_id: Text = Field(min_length=1)
    # a time in milliseconds made every item 1000 times older to the recency profile: the last one alone counted
    timestamp: Annotated[float | None, AfterValidator(_not_ahead)] = Field(
        None, description="seconds since the epoch, at most a day past the server's clock", allow_inf_nan=False)
    weight: float = Field(1.0, ge=0, le=1e6, allow_inf_nan=False)


def _history_kind(value) -> str:
    return "id" if isinstance(value, str) else "entry"


# An item id, or an entry with its time and weight: one branch checked, so a refusal names the
# entry's problem alone (not also "history.0.function-after[_utf8(), str]: not a string").
HistoryItem = Annotated[Annotated[HistoryEntry, Tag("entry")] | Annotated[Text, Tag("id")], Discriminator(_history_kind)]


class UserQuery(_Body):
    user_id: Text | None = Field(None, min_length=1, max_length=256,
                                 description="read the history from the event store (the latest max_seen "
                                             "events: all seen, the profile from the latest max_history); a "
                                             "history sent beside it is added after them (newest)")
    history: list[HistoryItem] = Field(default_factory=list, description="item ids, oldest first")
    text: Text | None = None
    k: int = Field(10, ge=1)
    strategy: str | None = Field(None, description="the profile: mean, recency, weighted, multi_interest, or "
                                 "sequence (the version's learned encoder, where it has one); default: the version's "
                                 "default_strategy (mean for versions that do not say)")
    filters: dict[Text, FilterValue | list[FilterValue]] | None = None
    exclude_seen: bool = True
    # How many of ``history``'s first entries the event store gave (``events.with_histories``): the
    # answer's unknown_ids name none of them (a read-only key would read a user's stored items there).
    _stored: int = PrivateAttr(0)
    exclude: list[Text] | None = Field(None, max_length=10_000, description="item ids never to show in this answer "
                                       "(excluded with the seen items; ids the version does not hold are ignored)")
    popularity_weight: float = Field(0.0, ge=0, le=100, allow_inf_nan=False,
                                     description="score = cosine + w * ln(1 + purchases)")
    text_weight: float = Field(0.5, ge=0, le=1)
    fresh_weight: float | None = Field(None, ge=0, le=100, allow_inf_nan=False,
                                       description="hybrid versions: added to the score of an item nobody interacted "
                                                   "with in the job's window (a new item); default: the version's, "
                                                   "chosen on validation")
    fresh_slots: int | None = Field(None, ge=0, description="hybrid versions: of the k places, this many kept for "
                                    "the best new items (no interaction in the job's window), which their content "
                                    "places; default: the version's, chosen on validation; at most k")
    max_per: dict[Text, Annotated[int, Field(ge=1)]] | None = Field(
        None, max_length=4, description="at most this many items per value of a column, e.g. {\"product_code\": 1} "
        "(colour variants of one product); default: the server's max_per; {} for none")
    diversity: float = Field(0.0, ge=0, le=1, allow_inf_nan=False,
                             description="0: the best k; above it, the list is taken greedily by score minus this "
                                         "share of each item's closeness to those already taken (MMR)")
    with_fields: bool = False
    order: Literal["popular", "latest"] | None = Field(
        None, description="with nothing to rank by (no known history, no text): the most popular items, or the "
        "latest (by when each first appeared: a live item's first PUT, else its first interaction); default: the "
        "server's fallback (popular, or a 422 with fallback: error)")
    explain: bool = Field(False, description="each item's score in parts: content cosine, collaborative (weight x "
                          "its score, hybrid versions), prior (popularity, the version's recent popularity and freshness)")

    @model_validator(mode="after")
    def _known_strategy(self) -> "UserQuery":
        if self.strategy is not None and self.strategy not in STRATEGIES:
            raise UserError(f"strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        if self.fresh_slots is not None and self.fresh_slots > self.k:
            raise UserError(f"fresh_slots ({self.fresh_slots}) must be at most k ({self.k})")
        return self


class RecommendRequest(UserQuery):
    """One user (the fields of UserQuery), or many in ``batch`` (then leave the others unset)."""

    batch: list[UserQuery] | None = None

    @model_validator(mode="after")
    def _one_or_batch(self) -> "RecommendRequest":
        if self.batch is not None and (self.history or self.text or self.user_id):
            raise UserError("give either one user's history/text or a batch, not both")
        beside = sorted(self.model_fields_set - {"batch"}) if self.batch is not None else []
        if beside:  # they would be ignored: each user of the batch sets its own
            raise UserError(f"{', '.join(beside)} beside batch: set them on each user of the batch (they apply to "
                            f"one user's request only)")
        return self


class SearchRequest(_Body):
    text: Text = Field(min_length=1)
    k: int = Field(10, ge=1)
    filters: dict[Text, FilterValue | list[FilterValue]] | None = None
    max_per: dict[Text, Annotated[int, Field(ge=1)]] | None = Field(
        None, max_length=4, description="as in /recommend: at most this many items per value of a column")
    with_fields: bool = False


def search_query(body: SearchRequest) -> UserQuery:
    """A text search is a query with text only."""
    return UserQuery(text=body.text, k=body.k, filters=body.filters, max_per=body.max_per,
                     with_fields=body.with_fields)


def similar_fields(item_id: str, k: int, filters: dict | None) -> dict:
    """GET /items/{id}/similar as a request's fields: the item alone as a history (its content
    vector and, in a hybrid version, its collaborative query), the item itself left out, always
    the mean profile (likeness, not what comes next: a version's default may be sequence)."""
    return {"history": [item_id], "k": k, "filters": filters, "exclude": [item_id], "strategy": "mean"}


def ordered_fields(order: str, k: int, filters: dict | None) -> dict:
    """GET /popular or /latest as a request's fields: no history, the list in that order."""
    return {"history": [], "k": k, "filters": filters, "order": order}


class ItemOut(BaseModel):
    item_id: str
    score: float
    fields: dict | None = None
    parts: dict[str, float] | None = None


class ResultOut(BaseModel):
    recommendation_id: str | None = Field(None, description="this answer's id: send it with the events it earns "
                                          "(POST /events) to credit them to this list")
    arm: str | None = Field(None, description="the experiment arm that answered (None without an experiment)")
    items: list[ItemOut]
    teams: list[str | None] | None = Field(None, description="team_draft: the arm that drafted each item (null: "
                                           "filled after one arm's list ran out, credited to neither)")
    unknown_ids: list[str] = Field([], description="ids of the history sent that the version does not hold (not "
                                   "those read from the event store by user_id)")
    fallback: str | None = None
    history_ignored: int = Field(0, description="known history items older than the latest max_history (sequence: "
                                 "the encoder's max_len), left out of the profile (still excluded as seen)")
    version: str | None = None


class BatchOut(BaseModel):
    results: list[ResultOut]
    version: str | None = Field(None, description="the version that answered every entry; null when entries were "
                                                  "answered by different versions (experiment arms: each result "
                                                  "names its own)")


def _printable(x) -> str:
    """A key from the request may hold a lone surrogate: escape it so the error can be sent."""
    return str(x).encode("utf-8", "backslashreplace").decode("utf-8")


def validation_detail(errors: list[dict], prefix: tuple = ()) -> bytes:
    """The 422 body for pydantic validation errors, FastAPI's shape: ``detail`` names every
    field and problem in one line, ``errors`` lists them (``loc`` as FastAPI gives it)."""
    errors = [{"loc": [_printable(p) for p in (*prefix, *e["loc"])], "msg": _printable(e["msg"]), "type": e["type"]}
              for e in errors]
    return to_json({"detail": validation_line(errors), "errors": errors})


def validation_line(errors: list[dict]) -> str:
    """Pydantic validation errors in one line, each ``field.path: problem`` (the 422's detail,
    the page's and the client's refusals)."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in errors)


def result_json(r: Result, version: str) -> bytes:
    """``result_out(r, version)`` as JSON bytes, built without the model (the service's hot path);
    a field's NaN as null and its bytes as base64, as ``answers.item_json`` writes an item (a bare
    NaN is no JSON; bytes that are not UTF-8 raised in the batch, a 500 for every request in it)."""
    return to_json(_result_dict(r, version), inf_nan_mode="null", bytes_mode="base64")


def _result_dict(r: Result, version: str) -> dict:
    return {"items": [{"item_id": i.item_id, "score": i.score, "fields": i.fields,
                       **({"parts": i.parts} if i.parts is not None else {})} for i in r.items],
            "unknown_ids": r.unknown_ids, "fallback": r.fallback, "history_ignored": r.history_ignored,
            "version": version}


def result_out(r: Result, version: str) -> ResultOut:
    # One validation call over plain dicts (done in pydantic-core) is the cheapest way to build it.
    return ResultOut.model_validate(_result_dict(r, version))


# An id the event store keeps: no control characters (as the items API's ids; a store may join
# ids with one, e.g. the Redis store's history members), C0, DEL and C1, nor the line and
# paragraph separators (a log line or a CSV row split in two).
CONTROL = r"\x00-\x1f\x7f-\x9f\u2028\u2029"  # a regex character class's ranges
STORED_BEFORE = r"\x00-\x1f\x7f"  # the class refused until 2026-12-07: ids stored since may hold C1 or U+2028
Id = Annotated[Text, Field(min_length=1, max_length=256, pattern=rf"^[^{CONTROL}]+$")]
_ID, _STORED_ID = TypeAdapter(Id), TypeAdapter(Annotated[Text, Field(min_length=1, max_length=256,
                                                                     pattern=rf"^[^{STORED_BEFORE}]+$")])


def checked_id(value: str, name: str, new: bool = True) -> str:
    """``value`` as the event store keeps ids (``Id``), else ValueError naming ``name`` and the
    problem; ``new`` False: an id that may have been stored before (an erasure: ``STORED_BEFORE``)."""
    try:
        return (_ID if new else _STORED_ID).validate_python(value)
    except ValidationError as e:
        raise ValueError(f"{name} {value!r:.60}: an id is 1-256 characters with no control character "
                         f"({e.errors()[0]['msg']})") from None


class EventIn(_Body):
    user_id: Id
    item_id: Id
    timestamp: Annotated[float | None, AfterValidator(_not_ahead)] = Field(
        None, ge=0, allow_inf_nan=False,
        description="seconds since the epoch, at most a day past the server's clock; default: when the server receives it")
    type: Annotated[Text, Field(min_length=1, max_length=32)] | None = Field(
        None, description="one of the server's event_types (default: its default_event_type)")
    weight: float | None = Field(None, ge=0, le=1e6, allow_inf_nan=False, description="default: the type's weight")
    event_id: Id | None = Field(None, description="makes a retry harmless: an id already stored is skipped")
    recommendation_id: Id | None = Field(None, description="the answer that showed the item (its "
                                         "recommendation_id): the event is credited to that list, its version and arm")


class EventsRequest(_Body):
    events: list[EventIn] = Field(min_length=1)


class EventsOut(BaseModel):
    accepted: int = Field(description="events stored now (durable when this answer is sent)")
    duplicates: int = Field(description="events whose event_id was stored before: skipped")
    unknown_items: int | None = Field(description="events whose item the serving version does not hold (kept: the "
                                                  "next job may publish it)")
    unattributed: int = Field(0, description="events sent with a recommendation_id that was shown to another "
                                             "user, did not show the item or came after the event (stored without "
                                             "it), or whose list is not in the store yet (stored with it: the "
                                             "report checks it against the whole log)")
