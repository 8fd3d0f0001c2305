"""The online service's configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from groundrec.online.experiments import Experiment
from groundrec.shared.scoring.profiles import MAX_HISTORY
from groundrec.shared.config import StrictModel

class ServeConfig(StrictModel):
    """The online service. Limits apply per request; violations get a 4xx naming the field."""

    artifacts: str = Field(description="artifacts directory, or an fsspec URI such as s3://bucket/groundrec")
    version_cache_dir: Path | None = Field(None, description="where versions from a URI are copied; default under /tmp")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    encoder_variant: Literal["fp32", "int8"] = "fp32"
    reload_interval_s: float = Field(5.0, gt=0, description="how often CURRENT is checked for a new version")
    fallback: Literal["popular", "error"] = "popular"
    interactions: Path | None = Field(None, description="Parquet/CSV/JSONL of interactions: item popularity")
    interactions_item_column: str = "item_id"
    half_life_days: float | None = Field(None, gt=0, description="the recency strategy's half-life in days; None: "
                                         "the version's own (chosen by its job for a content-only version, then "
                                         "its default strategy), else 30")
    n_interests: int = Field(3, ge=1, le=16)
    max_per: dict[str, Annotated[int, Field(ge=1)]] | None = Field(
        None, description="default of a request's max_per: at most this many items per value of a column, e.g. "
        "{product_code: 1}; requests with it still share the batched search")
    max_k: int = Field(100, ge=1)
    max_history: int = Field(MAX_HISTORY, ge=1, description="a profile uses the latest this many known history "
                             "items (eval does the same); older ones still count as seen, the answer's "
                             "history_ignored says how many were left out")
    max_seen: int = Field(5_000, ge=1, description="events read per user_id from the store: all of them count as "
                          "seen (as in eval, which excludes a whole history), the profile uses their latest "
                          "max_history known items; at least max_history")
    max_text_chars: int = Field(1000, ge=1)
    max_batch: int = Field(256, ge=1)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    api_key_env: str = Field("GROUNDREC_API_KEY", description="if this variable is set, clients must send X-API-Key")
    read_api_key_env: str = Field("GROUNDREC_READ_API_KEY", description="if this variable is set, its key opens "
                                  "every route but the writes (POST /events, DELETE /users/...)")
    # Events: what users do, stored durably; /recommend reads a user's history from them.
    events: str = Field("auto", description="the event store: sqlite:///path/events.db, redis://host:port/0, 'auto' "
                        "(a SQLite file events/events.db in a local artifacts directory) or 'none'")
    event_types: dict[Annotated[str, Field(min_length=1, max_length=32)], Annotated[float, Field(ge=0, le=1e6)]] = Field(
        default_factory=lambda: {"view": 0.2, "cart": 0.5, "purchase": 1.0}, min_length=1,
        description="the event types accepted and the weight each gives a history item")
    default_event_type: str = Field("purchase", description="the type of an event sent without one")
    max_events: int = Field(1000, ge=1, description="most events in one POST /events")
    popularity_window_days: float | None = Field(30.0, gt=0, description="with events on: popularity (the prior "
                                                 "and the popular fallback) is the summed event weight per item over "
                                                 "this many days, read from the store in the background (once the "
                                                 "window holds an event; until then, --interactions); None: off")
    popularity_refresh_s: float = Field(60.0, gt=0, description="how often that popularity is read again")
    # Online evaluation: every answer has a recommendation_id; the lists shown are logged.
    impressions: float = Field(1.0, ge=0, le=1, description="share of users whose lists are logged as impressions "
                               "in the event store (1: all, 0: none; whole users, by a hash of their id)")
    experiment: Experiment | None = Field(None, description="arms compared on live traffic (A/B or team_draft "
                                          "interleaving): each a version ('current' or an id) plus request defaults")
    # The live catalog: PUT/PATCH/DELETE /items, stored in the event store, applied online.
    live_poll_s: float = Field(0.25, gt=0, description="how often changes stored through other workers and replicas "
                               "are read and applied (this server's own are applied before it answers)")
    max_item_chars: int = Field(10_000, ge=1, description="longest text value of an item sent to the items API")
    max_items_batch: int = Field(1000, ge=1, description="most items in one POST /items")
    body_timeout_s: float = Field(10.0, gt=0, description="a request body not received within this is refused (408)")
    # Throughput: threads, micro-batching, admission control, processes.
    compute: Literal["process", "thread"] = Field(
        "process", description="where retrieval runs: 'process', a child process per server that holds the version "
        "(the event loop and the scoring stop taking turns on one GIL); 'thread', a worker thread in the server process")
    compute_threads: int = Field(1, ge=1, description="BLAS/OpenMP/FAISS/onnxruntime threads of the process that scores")
    compute_standby: bool = Field(True, description="keep a second compute process with the version loaded, idle: "
                                  "one that dies or hangs is replaced at once and its batch retried there (costs "
                                  "the version's memory once more per server)")
    standby_encodes: bool = Field(True, description="the standby compute process encodes half of a write group's "
                                  "live items (the items API) while the primary encodes the rest: about half the "
                                  "time per group where a core is free; false: the primary encodes them all")
    live_encode_chunk: int = Field(8, ge=0, description="texts of a write group the compute process encodes per call, "
                                   "scoring the request batches waiting in between (0: its whole share in one call)")
    compute_timeout_s: float = Field(2.0, gt=0, description="a compute process that has not answered a batch within "
                                     "this (plus 0.25 s a text to encode) is taken for hung: stopped, and the batch "
                                     "retried on its replacement (p99.9 of a batch: <= 0.02 s on H&M, "
                                     "docs/benchmarks.md; raise it for a "
                                     "version whose batches take longer, e.g. large HNSW with text queries)")
    batching: bool = Field(True, description="gather concurrent /recommend and /search requests into one search")
    batch_max_size: int = Field(64, ge=1, description="most requests scored together")
    batch_max_wait_ms: float = Field(0.0, ge=0, description="longest a request waits for others to join its batch; 0: take what is queued when the worker frees up (no added latency when idle)")
    max_queue: int = Field(64, ge=1, description="requests waiting beyond this are refused at once (503, Retry-After): "
                           "about one batch, so an accepted request waits at most ~two batches")
    gil_switch_interval_ms: float = Field(0.5, gt=0, description="Python's thread switch interval in the server "
                                          "process (what the event loop and a 'thread' worker share)")
    retry_after_s: int = Field(1, ge=0, description="Retry-After sent with a 503")
    workers: int = Field(1, ge=1, description="server processes; each loads the version and hot-reloads on its own")
    report: Path | None = Field(None, description="an evaluation report folder (groundrec eval --out) shown by the "
                                "web page's version view")
    access_log: bool = Field(False, description="log every request (costly at high rates), with the client address "
                             "from X-Forwarded-For when the proxy is trusted (uvicorn's FORWARDED_ALLOW_IPS)")

    @model_validator(mode="after")
    def _seen_holds_a_history(self) -> "ServeConfig":
        if self.max_seen < self.max_history:
            raise ValueError(f"max_seen={self.max_seen} is below max_history={self.max_history}: a profile could not "
                             f"be read whole; raise max_seen")
        return self

    @model_validator(mode="after")
    def _arms_within_limits(self) -> "ServeConfig":
        for arm in self.experiment.arms if self.experiment else ():
            if arm.defaults.get("k", 0) > self.max_k:
                raise ValueError(f"experiment arm {arm.name!r}: default k={arm.defaults['k']} exceeds max_k={self.max_k}")
        return self

    @field_validator("events")
    @classmethod
    def _events_is_a_store(cls, v: str) -> str:
        from groundrec.shared.events.store import SCHEMES, is_store_url

        if v not in ("auto", "none") and not is_store_url(v):
            raise ValueError(f"events {v!r} is not an event store: give sqlite:///path/events.db, "
                             f"redis://host:port/0 (schemes {list(SCHEMES)}), auto or none")
        return v

    @model_validator(mode="after")
    def _default_type_known(self) -> "ServeConfig":
        if self.default_event_type not in self.event_types:
            raise ValueError(f"default_event_type {self.default_event_type!r} is not one of event_types "
                             f"{sorted(self.event_types)}")
        return self

    def events_url(self) -> str | None:
        """The event store's URL; None when events are off (or 'auto' with artifacts at a URI)."""
        if self.events == "none":
            return None
        if self.events != "auto":
            return self.events
        if "://" in self.artifacts:
            return None
        return f"sqlite://{(Path(self.artifacts) / 'events' / 'events.db').resolve()}"

    @field_validator("artifacts", mode="before")
    @classmethod
    def _path_to_text(cls, v):
        return str(v) if isinstance(v, Path) else v
