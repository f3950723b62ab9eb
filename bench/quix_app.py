"""The gate's job written as a Quix Streams application: the rival in bench/throughput.py.

One process of the app; the harness starts ``--workers`` of them in one
consumer group (Quix scales by running more replicas of the same app) and
stops them with SIGTERM, which ``Application.run()`` handles by committing
its last checkpoint and closing.

Written the way the Quix Streams docs show it: ``Application`` + ``app.topic``
with the default JSON (de)serializers, ``app.dataframe``, ``sdf.filter`` and
``sdf.to_topic`` with a callable that picks the output topic from the value
("dynamic topic selection" in ``StreamingDataFrame.to_topic``'s docstring).

The decision is reimplemented here on the dict Quix has already parsed, not
imported from ``etl_gate.core``: ``Decider.decide`` takes raw bytes and parses
them itself, so calling it from a JSON dataframe would parse every event twice
(or force the non-idiomatic ``bytes`` deserializer). A Quix user would write a
dict lookup and a hash, which is what this is: the same allow-list (compiled
from the same rules file), the same sampling (SPEC 3.3: mmh3, seed, threshold
``int(rate * 2**32)``, key = first present of the rule's key or
``user_id``/``device_id``), the same route by priority, and events that parse
but are malformed (not an object, bad app or event: SPEC 3.1) go to the DLQ
topic. Differences, all in Quix's favour or neutral for the generated data:

- payloads that are not JSON at all (truncated, invalid UTF-8) fail in Quix's
  deserializer before the dataframe sees them; ``on_consumer_error`` skips them
  (there is no dataframe route for a message Quix cannot deserialize), so they
  do not reach the DLQ. The harness counts them out of the expected outputs.
- outputs carry no ``priority``/``rules-version`` headers and are re-serialized
  by Quix's JSON serializer (orjson; keys keep their order).
- a sampled event with no key value would hash the raw bytes in the gate; here
  the re-serialized dict (every generated event has a ``user_id``).
- only top-level field names, enforce-mode apps and no rate caps (what
  ``etl-gate gen`` writes by default); the app refuses other rules.
- the filter decides once, ``to_topic`` looks the rule up again (a dict lookup,
  no hash) to pick the topic: Quix's ``to_topic`` cannot drop, so dropping is
  the filter's job.

Client settings: the harness passes the gate's own librdkafka tuning (linger,
lz4, batch and fetch sizes) as ``consumer_extra_config`` /
``producer_extra_config``, and ``commit_interval`` = the gate's commit interval
(Quix's default is 5 s), so the comparison is of the frameworks, not of client
settings. Quix's producer is idempotent by default, like the gate's.

    python bench/quix_app.py CONFIG.json      # written by bench/throughput.py
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import mmh3
import orjson
from _rules import compile_rules
from quixstreams import Application

_SKIPPED = 0


def main() -> None:
    conf = orjson.loads(Path(sys.argv[1]).read_bytes())
    try:
        table = compile_rules(orjson.loads(Path(conf["rules"]).read_bytes()), "quix_app")
    except ValueError as e:
        raise SystemExit(str(e)) from None
    seed = conf["seed"]
    default_keys = tuple(conf["sample_keys"])

    def on_consumer_error(exc: Exception, message: Any, logger: logging.Logger) -> bool:
        # Not JSON: Quix's deserializer refused it. Skip it, as its docs suggest.
        global _SKIPPED
        _SKIPPED += 1
        return True

    app = Application(
        broker_address=conf["bootstrap"],
        consumer_group=conf["group"],
        auto_offset_reset="earliest",
        commit_interval=conf["commit_interval"],
        consumer_extra_config=conf["consumer"],
        producer_extra_config=conf["producer"],
        on_consumer_error=on_consumer_error,
        state_dir=conf["state_dir"],
        loglevel="INFO",
        auto_create_topics=False,  # the harness created them
    )
    input_topic = app.topic(conf["input"], value_deserializer="json")
    outputs = [app.topic(name, value_serializer="json") for name in conf["priority_topics"]]
    dlq = app.topic(conf["dlq"], value_serializer="json")

    def rule_of(value: Any) -> Any:
        """The rule for an event; DLQ for a malformed one; None: unregistered."""
        if type(value) is not dict:
            return dlq
        app_id = value.get("app_id")
        if type(app_id) is not str:
            if type(app_id) is int:
                app_id = str(app_id)
            elif type(app_id) is float:
                app_id = orjson.dumps(app_id).decode()
            else:
                return dlq
        event = value.get("event")
        if type(event) is not str:
            return dlq
        return table.get((app_id, event))

    def keep(value: Any) -> bool:
        rule = rule_of(value)
        if rule is None:
            return False  # unregistered: dropped (enforce)
        if rule is dlq:
            return True
        prio, thresh, keys, _rate = rule
        if prio < 0:
            return False  # offline: blocked
        if thresh is not None:
            key: Any = None
            for name in keys or default_keys:
                key = value.get(name)
                if key is not None:
                    break
            kb = key.encode() if type(key) is str else orjson.dumps(key if key is not None else value)
            return mmh3.hash(kb, seed, signed=False) < thresh
        return True

    def topic_of(value: Any, key: Any, timestamp: int, headers: Any) -> Any:
        rule = rule_of(value)
        return rule if rule is dlq else outputs[rule[0]]

    sdf = app.dataframe(input_topic)
    sdf = sdf.filter(keep)
    sdf.to_topic(topic_of)
    app.run()
    print(orjson.dumps({"skipped_undeserializable": _SKIPPED}).decode(), flush=True)


if __name__ == "__main__":
    main()
