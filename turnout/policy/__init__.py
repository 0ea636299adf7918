"""Rollout policies (YAML, ``apiVersion: turnout/v1``, ``kind: Rollout``)."""

from turnout.policy.loader import SCHEMA_PATH, PolicyError, Problem, load_file, load_text
from turnout.policy.model import GateSettings, MetricSpec, Policy, Step, parse_duration

__all__ = [
    "SCHEMA_PATH",
    "GateSettings",
    "MetricSpec",
    "Policy",
    "PolicyError",
    "Problem",
    "Step",
    "load_file",
    "load_text",
    "parse_duration",
]
