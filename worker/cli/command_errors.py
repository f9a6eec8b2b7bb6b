"""What a command reports when it cannot do its work, and the exit codes of the contract."""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A command cannot do its work: a machine-readable code, one line of message, an exit code."""

    def __init__(
        self,
        code: str,
        message: str,
        exit_code: int = EXIT_FAILED,
        fields: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code
        self.fields = fields or {}  # beside "error" in the JSON object: what can be followed up


class UsageError(CommandError):
    """Bad usage or bad input: exit code 2."""

    def __init__(self, message: str, code: str = "usage") -> None:
        super().__init__(code, message, EXIT_USAGE)
