"""The dump stage (``etl-gate dump``): priority topics to Parquet under Hive
partitions, nothing lost and nothing counted twice, with a TTL janitor.

    partition.py  event time -> dt/hour (pure)
    schema.py     Arrow schema, rows from messages (pure)
    layout.py     names under <root>/<priority>/ (pure)
    fs.py         local filesystem or a pyarrow/fsspec filesystem URI
    writer.py     one partition's rolling files: temporary, durable, named by offsets
    journal.py    published but maybe uncommitted rolls; cleanup on assignment
    janitor.py    TTL deletion per priority
    metrics.py    the dump's Prometheus metrics
    consumer.py   the Kafka loop: commit only after the files are published

Design and readers (DuckDB, Spark, Hive): docs/DUMP.md.
"""
