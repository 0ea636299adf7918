"""Errors raised by the xDS layer.

    XdsError
     └── InconsistentSnapshotError   a snapshot names resources it does not carry
"""


class XdsError(Exception):
    """Base class of every error raised by ``xds_server``."""


class InconsistentSnapshotError(XdsError):
    """A snapshot refers to a cluster, route table or endpoint set that it does not hold."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("inconsistent snapshot: " + "; ".join(problems))
