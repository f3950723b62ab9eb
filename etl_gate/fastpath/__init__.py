"""The worker's per-event loop in C (``kafka.engine = "native"``).

``_fastpath.c`` decides the common events straight from their bytes and
produces them with librdkafka; the worker's Python keeps the consumer,
checkpoints, rules, telemetry and every event the C loop leaves to it (see the
C file's header for which). ``build.py`` compiles it on first use;
``table.py`` turns a Decider into its C lookup table.
"""

from .build import FastpathUnavailable, build, load
from .table import FastpathUnsupported, build_table, check_settings

__all__ = ["FastpathUnavailable", "FastpathUnsupported", "build", "build_table", "check_settings",
           "load"]
