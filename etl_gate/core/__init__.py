"""The pure decision core: no I/O, no logging, no metrics, no Kafka.

``tests/unit/test_core_purity.py`` checks that nothing here imports an I/O
library; adapters (Kafka workers, replay, control plane) act on its verdicts.
"""

from .decide import (
    BLOCKED,
    MALFORMED,
    MALFORMED_REASONS,
    OUTCOMES,
    PASSED,
    SAMPLED_OUT,
    THROTTLED,
    UNREGISTERED,
    Decider,
    DecisionSettings,
    Verdict,
    build_decider,
    threshold,
)
from .rules import (
    PRIORITIES,
    AppSettings,
    Rule,
    RulesDelta,
    RulesError,
    RulesSnapshot,
    apply_delta,
    check_newer,
    parse_delta,
    parse_snapshot,
)
from .tagging import FieldTagger

__all__ = [
    "BLOCKED", "MALFORMED", "MALFORMED_REASONS", "OUTCOMES", "PASSED", "PRIORITIES",
    "SAMPLED_OUT", "THROTTLED", "UNREGISTERED", "AppSettings", "Decider", "DecisionSettings",
    "FieldTagger", "Rule", "RulesDelta", "RulesError", "RulesSnapshot", "Verdict",
    "apply_delta", "build_decider", "check_newer", "parse_delta", "parse_snapshot", "threshold",
]
