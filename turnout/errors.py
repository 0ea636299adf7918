"""Errors of the Turnout application.

    TurnoutError
     ├── ConfigError      bad input: a file, a flag, a request body (says what and where)
     ├── StackError       the local stack failed to start, or is not running
     └── ApiError         the control API refused a request or could not be reached
"""


class TurnoutError(Exception):
    """Base class of Turnout's own errors; the CLI prints these without a traceback."""


class ConfigError(TurnoutError):
    """Invalid input. The message names the file, line or field."""


class StackError(TurnoutError):
    """The local stack could not be started, stopped or found."""


class ApiError(TurnoutError):
    """The control API answered with an error, or did not answer."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)
