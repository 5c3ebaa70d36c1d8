"""Settings: the one place where allot's configuration, its defaults and their meaning live.

Every setting is read from the environment with the prefix ``ALLOT_`` (``ALLOT_ZK_HOSTS`` sets
``zk_hosts``), is typed, has a default and a one-line description. The README's settings table
is generated from this class (``python -m allot.settings``) and a test keeps the two in step.
Durations are seconds and accept fractions (``ALLOT_NODE_OFFLINE_TIMEOUT=2.5``); the history
settings are days and accept fractions too (``ALLOT_RUN_HISTORY_DAYS=0.5`` keeps 12 hours).
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from allot.errors import ConfigurationError, InvalidNodeKey
from allot.names import validate_node_key


class Settings(BaseSettings):
    """allot's configuration, read from ``ALLOT_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="ALLOT_", extra="ignore", frozen=True)

    cluster: str = Field(
        "default",
        description="Cluster name; used in the default ZooKeeper root.",
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
    )
    zk_hosts: str = Field(
        "127.0.0.1:2181", description="ZooKeeper connection string (host:port[,host:port...])."
    )
    zk_root: str = Field(
        "",
        description="ZooKeeper root of allot's znodes (Amoro's is `/{cluster}/amoro/ams`).",
    )
    zk_session_timeout: float = Field(
        10.0, gt=0, description="ZooKeeper session timeout in seconds."
    )
    zk_auth: str | None = Field(
        None,
        description="`user:password` for digest ACLs on allot's znodes; unset means open ACLs.",
    )
    broker_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker URL (Redis).")
    result_backend: str | None = Field(
        None, description="Celery result backend URL; unset means the broker URL."
    )
    database_url: str = Field(
        "sqlite:///var/allot.db",
        description="SQLAlchemy URL of the SQL database (SQLite or PostgreSQL).",
    )
    bucket_count: int = Field(
        100,
        ge=1,
        le=1_000_000,
        description="Number of buckets, ids 1..N; fixed once the database exists.",
    )
    assign_interval: float = Field(
        30.0, gt=0, description="Seconds between scheduled assignment cycles (Celery beat)."
    )
    node_offline_timeout: float = Field(
        30.0,
        ge=0,
        description="Seconds a departed node keeps its buckets (suspect) before they move.",
    )
    membership_settle: float = Field(
        0.2,
        ge=0,
        description=(
            "Seconds membership must stay unchanged before a membership cycle that finds it "
            "still changing plans (at most ten times this in all; 0: never wait). A single "
            "join or death is not delayed."
        ),
    )
    node_key: str | None = Field(
        None, description="This worker's node key; unset means the Celery worker hostname."
    )
    node_weight: float = Field(
        1.0, gt=0, description="This worker's capacity weight; buckets are shared in proportion."
    )
    strategy: str = Field(
        "balanced", description="Planner strategy: `balanced`, `amoro`, `hrw` or `load`."
    )
    task_modules: str = Field(
        "",
        description="Comma-separated modules with table tasks, imported by every worker.",
        pattern=r"^\s*([A-Za-z_][\w.]*\s*(,\s*[A-Za-z_][\w.]*\s*)*)?$",
    )
    handoff_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a node giving a bucket away lets its running table tasks finish "
        "before it releases the bucket's lease (their commits are then refused).",
    )
    broker_step_aside: float = Field(
        10.0,
        ge=0,
        description="Seconds a worker that cannot consume its bucket queues (the broker does "
        "not answer, or its consumer is wedged) keeps its buckets before it steps aside so "
        "they move; it comes back once the broker answered for as long again. 0: never.",
    )
    run_retries: int = Field(
        20,
        ge=0,
        description="Times a table task run is retried after a database error that may pass "
        "(a lost connection, a locked database), backing off from 1 to 60 s, before it fails.",
    )
    max_abandoned: int = Field(
        3,
        ge=1,
        description="Attempts of a table task run abandoned by a dead pool process (OOM, "
        "segfault) after which the run fails without running its body again.",
    )
    sql_connect_timeout: int = Field(
        10,
        ge=2,
        description="Seconds a worker waits for a PostgreSQL connection before the attempt "
        "fails (and is retried).",
    )
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port on which a worker serves Prometheus metrics (the cluster's gauges and "
        "its own counters) at `/metrics`; 0: no metrics. Several workers on one host need "
        "one port each.",
    )
    redelivery_timeout: float = Field(
        300.0,
        gt=0,
        description="Seconds after which Redis hands a message taken by a worker that never "
        "acknowledged it (killed) to another worker; longer than the longest table task.",
    )

    # -- history kept in SQL (allot.history prunes what is older, in bounded batches) --------
    run_history_days: float = Field(
        7.0,
        gt=0,
        description="Days the attempts of table tasks (`table_task_run`) are kept; never less "
        "than ALLOT_REDELIVERY_TIMEOUT.",
    )
    plan_history_days: float = Field(
        30.0,
        gt=0,
        description="Days plans and their moves are kept; the newest plan, the newest applied "
        "one and any `applying` plan are kept whatever their age.",
    )

    # -- assignment by measured work (strategy `load`, allot.work.load, allot.zk.load) ------
    load_window: float = Field(
        3600.0,
        gt=0,
        description="Seconds of table work a bucket's load sums (a sliding window, kept by "
        "each node in memory: a restarted node starts with an empty one).",
    )
    load_publish_interval: float = Field(
        5.0,
        gt=0,
        description="Seconds between a node's publications of its buckets' load to ZooKeeper "
        "(a cycle reads load up to this stale).",
    )
    load_tolerance: float = Field(
        1.15,
        ge=1,
        description="Load ratio (largest node load over its fair share) above which strategy "
        "`load` moves buckets for load alone.",
    )
    max_load_moves: int = Field(
        10,
        ge=0,
        description="At most this many buckets moved for load alone per cycle (strategy `load`).",
    )

    @field_validator("node_key")
    @classmethod
    def _check_node_key(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                validate_node_key(value)
            except InvalidNodeKey as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("strategy")
    @classmethod
    def _check_strategy(cls, value: str) -> str:
        from allot.planner.strategies import strategy_names

        if value not in strategy_names():
            raise ValueError(
                f"unknown strategy {value!r}; choose one of {', '.join(strategy_names())}"
            )
        return value

    @field_validator("zk_auth")
    @classmethod
    def _check_zk_auth(cls, value: str | None) -> str | None:
        if value is not None and (":" not in value or value.startswith(":")):
            raise ValueError("expected user:password")
        return value

    @field_validator("zk_root")
    @classmethod
    def _check_zk_root(cls, value: str) -> str:
        if value and (not value.startswith("/") or value.endswith("/") or "//" in value):
            raise ValueError("expected an absolute ZooKeeper path without a trailing slash")
        return value

    @model_validator(mode="after")
    def _default_zk_root(self) -> Settings:
        if not self.zk_root:
            object.__setattr__(self, "zk_root", f"/{self.cluster}/allot")
        return self

    @property
    def task_module_names(self) -> list[str]:
        """:attr:`task_modules` as a list of module names."""
        return [name.strip() for name in self.task_modules.split(",") if name.strip()]

    @property
    def celery_result_backend(self) -> str:
        """The result backend Celery uses: ``result_backend`` or else the broker URL."""
        return self.result_backend or self.broker_url


def load_settings() -> Settings:
    """Read the settings from the environment.

    Raises:
        ConfigurationError: a variable is set to a value of the wrong type or out of range; the
            message names the variable.
    """
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "ALLOT_" + str(first["loc"][0]).upper() if first["loc"] else "ALLOT_*"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigurationError(f"invalid setting {name}: {message}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (long-running processes: workers, beat)."""
    return load_settings()


def settings_table() -> str:
    """The README's settings table, as Markdown, generated from :class:`Settings`."""
    rows = ["| Variable | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        type_name = getattr(annotation, "__name__", None) or str(annotation)
        if type_name not in ("str", "int", "float"):
            type_name = str(annotation).replace("typing.", "").replace(" | None", "")
            type_name = type_name.replace("Optional[", "").rstrip("]") + " (optional)"
        default = field.default
        if name == "zk_root":
            shown = "`/{cluster}/allot`"
        elif default is None:
            shown = "unset"
        else:
            shown = f"`{default}`"
        rows.append(f"| `ALLOT_{name.upper()}` | {type_name} | {shown} | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
