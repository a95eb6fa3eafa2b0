"""Every Prometheus metric idsync exports, in one place (Prometheus naming: base units, _total).

Components import the metric they update; the admin server exposes the registry at /metrics.
Labels are low-cardinality by construction: object kinds, operations, phases and results.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

INFO = Gauge(
    "idsync_info", "Build and identity of this instance", ["version", "node", "cluster"], registry=REGISTRY
)
LEADER = Gauge("idsync_leader", "1 while this node is the fenced leader, else 0", registry=REGISTRY)
ROLE = Gauge("idsync_role", "1 for the role this node is in (leader, staging)", ["role"], registry=REGISTRY)
EPOCH = Gauge("idsync_epoch", "The leadership epoch this node last saw", registry=REGISTRY)
PROMOTIONS = Counter("idsync_promotions_total", "Times this node became leader", registry=REGISTRY)
PAUSED = Gauge("idsync_paused", "1 while exports are paused cluster-wide", registry=REGISTRY)
ZK_CONNECTED = Gauge(
    "idsync_zookeeper_connected", "1 while the ZooKeeper session is connected", registry=REGISTRY
)

PENDING = Gauge("idsync_pending_exports", "Pending export operations by operation", ["op"], registry=REGISTRY)
QUARANTINED = Gauge(
    "idsync_quarantined_objects", "Objects set aside with a reason, by phase", ["phase"], registry=REGISTRY
)
PRIVILEGED_REFUSALS = Counter(
    "idsync_privileged_refusals_total",
    "Changes or deletes of a user holding a directory role that Graph refused (403), by operation",
    ["op"],
    registry=REGISTRY,
)
PRIVILEGED_QUARANTINED = Gauge(
    "idsync_quarantined_privileged_users",
    "Users quarantined because Graph refused to change or delete them: they hold a directory role",
    registry=REGISTRY,
)
UNEQUAL_QUARANTINED = Counter(
    "idsync_unequal_exports_quarantined_total",
    "Operations quarantined because the target kept differing after each export (a value Graph"
    " normalises or ignores)",
    registry=REGISTRY,
)
GUARD_HOLDING = Gauge(
    "idsync_deletion_guard_holding", "1 while the deletion guard holds all exports back", registry=REGISTRY
)
GUARD_DELETES = Gauge(
    "idsync_deletion_guard_deletes", "Deletes pending while the guard evaluated the cycle", registry=REGISTRY
)
STAGING_DRIFT = Gauge(
    "idsync_staging_drift_operations",
    "On a staging node: what it would export while the leader reports nothing pending",
    registry=REGISTRY,
)

LAST_SUCCESS = Gauge(
    "idsync_last_success_timestamp_seconds",
    "Unix time of the last successful run of a phase (cycle, source_import, target_import, sync, export)",
    ["phase"],
    registry=REGISTRY,
)
PHASE_SECONDS = Histogram(
    "idsync_phase_duration_seconds",
    "Duration of each phase of a cycle",
    ["phase"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
    registry=REGISTRY,
)
DUPLICATES_REMOVED = Counter(
    "idsync_duplicate_objects_removed_total",
    "Younger duplicates of an anchor deleted from the target (the oldest is kept)",
    ["type"],
    registry=REGISTRY,
)
CYCLES = Counter("idsync_cycles_total", "Cycles run, by result", ["result"], registry=REGISTRY)

IMPORTED = Counter(
    "idsync_imported_objects_total",
    "Objects imported, by side (source, target) and result (added, updated, deleted, unchanged, error)",
    ["side", "result"],
    registry=REGISTRY,
)
EXPORTED = Counter(
    "idsync_exported_operations_total",
    "Export operations, by operation and result (ok, adopted, retry, error)",
    ["op", "result"],
    registry=REGISTRY,
)
WRITEBACK_WRITES = Counter(
    "idsync_writeback_writes_total",
    "LDAP writes to on-premises AD by writeback, by operation and result (ok, adopted, retry, error)",
    ["op", "result"],
    registry=REGISTRY,
)
USERS_RESTORED = Counter(
    "idsync_users_restored_total",
    "User creates done by restoring the deleted user carrying the anchor from Graph's recycle bin",
    registry=REGISTRY,
)
GRAPH_THROTTLED = Counter(
    "idsync_graph_throttled_total", "Graph requests or batch items answered 429", registry=REGISTRY
)
GRAPH_WRITE_RATE = Gauge(
    "idsync_graph_write_rate",
    "The write pacing rate the exporter currently allows itself, in writes per second",
    registry=REGISTRY,
)
GRAPH_THROTTLE_LIMIT = Gauge(
    "idsync_graph_throttle_limit_ratio",
    "The last x-ms-throttle-limit-percentage Graph sent on a write (0.8-1.8; 0 when under 0.8)",
    registry=REGISTRY,
)
GRAPH_RETRIES = Counter(
    "idsync_graph_retries_total",
    "Graph requests retried, by reason (throttled, server, connection)",
    ["reason"],
    registry=REGISTRY,
)

HEALTHY = Gauge(
    "idsync_healthy",
    "1 while this node passes the checks a node must pass to take over (set when scraped)",
    registry=REGISTRY,
)

# Known label values start at 0, so rate() and increase() see a node that never succeeded.
for _result in ("ok", "failed"):
    CYCLES.labels(_result)
for _op in ("update", "delete"):
    PRIVILEGED_REFUSALS.labels(_op)
