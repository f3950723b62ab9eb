"""``python -m etl_gate.fastpath``: build the C fast path ahead of time (the
Dockerfile does) and say where it is and which librdkafka it runs with."""

from .build import build, load

print(build())
print("librdkafka", load().librdkafka_version())
