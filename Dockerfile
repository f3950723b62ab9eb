# etl-gate daemon image. Build: docker build -t etl-gate .
# Run:   docker run --rm -v $PWD/config:/etc/etl-gate etl-gate run --config /etc/etl-gate/gate.toml
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY etl_gate ./etl_gate
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# tini: forwards SIGTERM to the supervisor, which drains and commits.
RUN apt-get update && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 gate
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config /etc/etl-gate
USER gate
ENTRYPOINT ["/usr/bin/tini", "--", "etl-gate"]
CMD ["run", "--config", "/etc/etl-gate/gate.toml"]
