"""The one configuration object. Every field is an env var with the ``DISTILLGATE_`` prefix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.redis_clients import cluster_url

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTILLGATE_", env_file=None, extra="ignore")

    tasks_dir: Path = Field(Path("tasks"), description="Folder of task files (`<task>.toml`).")
    host: str = Field("127.0.0.1", description="Address `distillgate serve` binds.")
    port: int = Field(8000, ge=0, le=65535, description="Port `distillgate serve` binds.")
    api_keys: list[str] = Field(
        default_factory=list,
        description="Client keys (JSON list of keys or `sha256:<hex>` digests); with no keys "
        "here nor in api_keys_file, /v1/ is open.",
    )
    api_keys_file: Path | None = Field(
        None, description="TOML file of named, hashed client keys with scopes and rate limits."
    )
    metrics_access: Literal["open", "client", "admin"] = Field(
        "open",
        description="Who may read /metrics: anyone, any client key (open while there are "
        "none), or the admin key.",
    )
    health_access: Literal["open", "client", "admin"] = Field(
        "open", description="Who may read /healthz and /readyz (probes usually need open)."
    )
    redis_url: str = Field(
        "redis://localhost:6379/0", description="Redis of the capture streams; empty: no capture."
    )
    redis_cluster: bool = Field(
        False,
        description="redis_url names one node of a Redis Cluster (as `redis+cluster://` does): "
        "the gateway discovers the rest.",
    )
    spool_dir: Path | None = Field(
        None,
        description="Capture spool while Redis is unreachable; one per gateway process. "
        "Default: $XDG_STATE_HOME/distillgate/spool/port-<port> (XDG_STATE_HOME defaults to "
        "~/.local/state): the same wherever the gateway starts, so a restart replays it.",
    )
    spool_max_bytes: int = Field(1 << 30, ge=1 << 16, description="Spool size cap (bytes).")
    capture_timeout_s: float = Field(2.0, gt=0, description="Redis write timeout, then spool.")
    capture_dedup_ttl_s: int = Field(
        7 * 24 * 3600, ge=60, description="How long a record id is remembered against replays."
    )
    capture_replica_acks: int = Field(
        0,
        ge=0,
        description="Replicas that must hold a captured batch (Redis WAIT) before it counts as "
        "stored; else it is spooled and replayed. 1 on a cluster or a primary with replicas: "
        "a failover then loses nothing.",
    )
    rate_limits: Literal["redis", "process"] = Field(
        "redis",
        description="Where client keys' limits are kept: `redis` (redis_url; one allowance "
        "across all replicas) or `process` (each replica its own; also with no redis_url).",
    )
    rate_limit_replicas: int = Field(
        1,
        ge=1,
        description="Replicas sharing the limits: while Redis is unreachable each one allows "
        "limit / this.",
    )
    usage_retention_days: int = Field(
        90,
        ge=1,
        description="Days the usage ledger (`distillgate report cost`, `keys usage`) keeps in "
        "Redis.",
    )
    rate_limit_timeout_s: float = Field(
        0.1,
        gt=0,
        description="How long a request waits for the shared limits before deciding alone.",
    )
    audit_window: int = Field(500, ge=10, description="Audits in the live-agreement estimate.")
    admin_key: SecretStr | None = Field(
        None, description="Bearer key of /admin/* (reload, drain); unset: they are off."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Student device.")
    torch_threads: int | None = Field(None, ge=1, description="CPU threads for the student.")
    max_batch_size: int = Field(32, ge=1, description="Requests decoded together per step.")
    max_waiting: int = Field(256, ge=0, description="Queued requests before 429.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body (413).")
    allow_force_route: bool = Field(
        False, description="Honour the x-distillgate-force-route header (tests, load tests)."
    )
    build_missing_students: bool = Field(
        True,
        description="`serve` trains a task's student from its [build] recipe if missing "
        "(tasks without a [loop]; with one, the loop trains it in the background).",
    )
    loop: Literal["in-process", "off"] = Field(
        "in-process",
        description="`in-process`: the gateway runs each [loop] task's worker as a child process "
        "(at a lower priority); `off`: run `distillgate loop` apart (a fleet).",
    )
    registry_poll_s: float = Field(
        2.0, gt=0, description="How often a gateway checks its tasks' registries for a new version."
    )
    shutdown_grace_s: int = Field(
        30, ge=1, description="On SIGTERM, how long in-flight requests may take to finish."
    )
    log_level: str = Field("info", description="Log level of the gateway.")
    access_log: bool = Field(
        False,
        description="One log line per request (method, path, status, milliseconds, request and "
        "trace ids); metrics count every request anyway.",
    )
    otlp_endpoint: str = Field(
        "",
        description="Traces: the OTLP/HTTP endpoint of a collector (`http://otel-collector:4318`); "
        "empty: traces are off (a client's `traceparent` still reaches the teacher).",
    )
    trace_sample_rate: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Share of requests traced when traces are on (a client's `traceparent` "
        "decides for its own request); 0.01-0.1 at high volume.",
    )
    trace_text: bool = Field(
        False,
        description="Put prompt and answer text in spans (`gen_ai.input.messages`, "
        "`gen_ai.output.messages`), redacted as the task's capture is; off: no text in spans.",
    )
    otel_service_name: str = Field(
        "distillgate", description="The `service.name` of the gateway's traces."
    )

    @property
    def redis_target(self) -> str:
        """``redis_url`` with its mode: ``redis+cluster://`` when ``redis_cluster`` is set."""
        if self.redis_cluster and self.redis_url:
            return cluster_url(self.redis_url)
        return self.redis_url

    @property
    def spool_path(self) -> Path:
        """``spool_dir``, or the absolute default for this gateway's port."""
        if self.spool_dir is not None:
            return self.spool_dir
        state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
        return Path(state).absolute() / "distillgate" / "spool" / f"port-{self.port}"
