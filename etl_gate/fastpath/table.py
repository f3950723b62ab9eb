"""A rules version as the C fast path's lookup table.

The table is built from the Python ``Decider`` in force, not from the rules
document, so that both decide from one compiled version: the plain rules'
priorities, the special rules' compiled forms, the verdicts' tag headers.
Special rules are classified here, once per distinct compiled rule (a 500k
list has a handful: they are shared); the C side walks the plain ones itself.
"""

from __future__ import annotations

from typing import Any

from ..core.decide import Decider, DecisionSettings


class FastpathUnsupported(ValueError):
    """Settings the C fast path does not follow; the worker uses Python."""


def check_settings(settings: DecisionSettings, tag_field: str = "") -> None:
    """Raises FastpathUnsupported for settings the C loop cannot follow (they are
    fixed for a worker's life: rules can change, these cannot)."""
    if tag_field:
        raise FastpathUnsupported("tag.field (the priority written into the payload)")
    for what, path in (("fields.app", settings.app_path), ("fields.event", settings.event_path),
                       *(("fields.sample_keys", k) for k in settings.sample_keys)):
        if "." in path:
            raise FastpathUnsupported(f"{what}: dotted path {path!r}")
    if len(settings.sample_keys) > 6:
        raise FastpathUnsupported("fields.sample_keys: more than 6")
    if not 0 <= settings.seed < 1 << 32:
        raise FastpathUnsupported("sampling_seed: outside 0 .. 2**32-1")


def build_table(decider: Decider, stats: bool = True) -> Any:
    """The C table of ``decider``'s version (``stats``: count per (app, event))."""
    from .build import load

    fp = load()
    st = decider.settings
    check_settings(st)
    default_keys = decider._default_keys
    key_paths = {id(getters): path for path, getters in decider._key_cache.items()}
    passes = decider._passes

    def classify(rule: Any) -> tuple[int, int, int, str | None, Any]:
        prio = rule.vkey[0]
        headers = passes[rule.vkey].headers
        if rule.bucket is not None:
            return fp.K_SLOW, prio, -1, None, None  # a rate cap: its bucket is Python's
        if rule.offline:
            return fp.K_BLOCKED, prio, -1, None, None
        key = None
        if rule.key_getters is not default_keys:
            key = key_paths.get(id(rule.key_getters))
            if key is None or "." in key:
                return fp.K_SLOW, prio, -1, None, None
        if rule.threshold is not None:
            return fp.K_SAMPLED, prio, rule.threshold, key, headers
        return fp.K_PLAIN, prio, -1, key, headers

    return fp.Table(decider._apps, classify, [v.headers for v in decider._plain],
                    str(decider.version), st.seed, st.app_path, st.event_path,
                    tuple(st.sample_keys), decider._quarantine_threshold, stats)
