# etl-gate daemon image. Build: docker build -t etl-gate .
# Run:   docker run --rm -v $PWD/config:/etc/etl-gate etl-gate run --config /etc/etl-gate/gate.toml
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY etl_gate ./etl_gate
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# The C fast path (kafka.engine = "native") is compiled here, once, into
# ETL_GATE_CACHE, against the librdkafka that confluent-kafka's wheel bundles;
# the compiler and headers are removed again after it.
ENV ETL_GATE_CACHE=/opt/etl-gate-cache
COPY --from=build /wheels /wheels
# tini: forwards SIGTERM to the supervisor, which drains and commits.
RUN apt-get update && apt-get install -y --no-install-recommends tini gcc libc6-dev librdkafka-dev \
    && pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && python -m etl_gate.fastpath \
    && apt-get purge -y gcc libc6-dev librdkafka-dev && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 gate
COPY config /etc/etl-gate
USER gate
ENTRYPOINT ["/usr/bin/tini", "--", "etl-gate"]
CMD ["run", "--config", "/etc/etl-gate/gate.toml"]
