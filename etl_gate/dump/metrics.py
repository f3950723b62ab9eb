"""The dump stage's Prometheus metrics, in their own registry (one per dump
process; the gate's live in etl_gate/metrics.py). Labels are bounded: a
priority, a roll reason, a janitor action. Counted per batch, roll or janitor
pass, never per event."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class DumpMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.events = Counter("etl_gate_dump_events_total", "Events consumed by the dump",
                              ["priority"], registry=r)
        self.input_bytes = Counter("etl_gate_dump_input_bytes_total",
                                   "Raw event bytes consumed by the dump", ["priority"], registry=r)
        self.unparsed = Counter("etl_gate_dump_unparsed_events_total",
                                "Dumped values that are not a JSON object (typed columns null)",
                                ["priority"], registry=r)
        self.time_fallbacks = Counter("etl_gate_dump_time_fallback_events_total",
                                      "Events partitioned by Kafka timestamp (no usable event time)",
                                      ["priority"], registry=r)
        self.rolls = Counter("etl_gate_dump_rolls_total", "Rolls published, by reason",
                             ["priority", "reason"], registry=r)
        self.files = Counter("etl_gate_dump_files_total", "Parquet files published",
                             ["priority"], registry=r)
        self.parquet_bytes = Counter("etl_gate_dump_parquet_bytes_total",
                                     "Parquet bytes published", ["priority"], registry=r)
        self.commit_failures = Counter("etl_gate_dump_commit_failures_total",
                                       "Offset commits that failed (retried)", registry=r)
        self.recovered = Counter("etl_gate_dump_uncommitted_files_deleted_total",
                                 "Published files of uncommitted rolls deleted on assignment "
                                 "(their offsets are consumed again)", ["priority"], registry=r)
        self.open_files = Gauge("etl_gate_dump_open_files", "Parquet files being written",
                                ["priority"], registry=r)
        self.janitor_runs = Counter("etl_gate_dump_janitor_runs_total", "Janitor passes",
                                    ["priority"], registry=r)
        self.janitor_partitions = Counter(
            "etl_gate_dump_janitor_partitions_total",
            "Expired hour partitions: deleted, would_delete (dry run), skipped_active "
            "(still being written)", ["priority", "action"], registry=r)
        self.janitor_errors = Counter("etl_gate_dump_janitor_errors_total",
                                      "Partitions the janitor failed to delete (retried next pass)",
                                      ["priority"], registry=r)
        self.janitor_oldest = Gauge("etl_gate_dump_oldest_partition_age_seconds",
                                    "Age of the oldest hour partition kept, after a janitor pass",
                                    ["priority"], registry=r)

    def serve(self, listen: str) -> None:
        from prometheus_client import start_http_server

        host, _, port = listen.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0", registry=self.registry)
