"""etl-gate: a high-throughput event-governance gate for Kafka."""

__version__ = "0.1.0"
