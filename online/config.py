"""The online service's configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

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
    half_life_days: float = Field(30.0, gt=0)
    n_interests: int = Field(3, ge=1, le=16)
    max_per: dict[str, Annotated[int, Field(ge=1)]] | None = Field(
        None, description="default of a request's max_per: at most this many items per value of a column, e.g. "
        "{product_code: 1}; note that it sends every request through the per-user path (no shared batch search)")
    max_k: int = Field(100, ge=1)
    max_history: int = Field(MAX_HISTORY, ge=1, description="a profile uses the latest this many known history "
                             "items (eval does the same); older ones still count as seen, the answer's "
                             "history_ignored says how many were left out")
    max_text_chars: int = Field(1000, ge=1)
    max_batch: int = Field(256, ge=1)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    api_key_env: str = Field("GROUNDREC_API_KEY", description="if this variable is set, clients must send X-API-Key")
    body_timeout_s: float = Field(10.0, gt=0, description="a request body not received within this is refused (408)")
    # Throughput: threads, micro-batching, admission control, processes.
    compute: Literal["process", "thread"] = Field(
        "process", description="where retrieval runs: 'process', a child process per server that holds the version "
        "(the event loop and the scoring stop taking turns on one GIL); 'thread', a worker thread in the server process")
    compute_threads: int = Field(1, ge=1, description="BLAS/OpenMP/FAISS/onnxruntime threads of the process that scores")
    compute_timeout_s: float = Field(30.0, gt=0, description="a batch the compute process has not answered within "
                                     "this is refused (503) and the process is stopped; the next check starts a new one")
    batching: bool = Field(True, description="gather concurrent /recommend and /search requests into one search")
    batch_max_size: int = Field(64, ge=1, description="most requests scored together")
    batch_max_wait_ms: float = Field(0.0, ge=0, description="longest a request waits for others to join its batch; 0: take what is queued when the worker frees up (no added latency when idle)")
    max_queue: int = Field(64, ge=1, description="requests waiting beyond this are refused at once (503, Retry-After): "
                           "about one batch, so an accepted request waits at most ~two batches")
    gil_switch_interval_ms: float = Field(0.5, gt=0, description="Python's thread switch interval in the server "
                                          "process (what the event loop and a 'thread' worker share)")
    retry_after_s: int = Field(1, ge=0, description="Retry-After sent with a 503")
    workers: int = Field(1, ge=1, description="server processes; each loads the version and hot-reloads on its own")
    access_log: bool = Field(False, description="log every request (costly at high rates), with the client address "
                             "from X-Forwarded-For when the proxy is trusted (uvicorn's FORWARDED_ALLOW_IPS)")

    @field_validator("artifacts", mode="before")
    @classmethod
    def _path_to_text(cls, v):
        return str(v) if isinstance(v, Path) else v
