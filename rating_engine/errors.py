"""One small hierarchy of errors; the CLI maps each to one line and an exit code."""

from __future__ import annotations


class RatingEngineError(Exception):
    """Base of every error this package raises on purpose."""


class InvalidAmount(RatingEngineError, ValueError):
    """A money string that is not an exact decimal amount."""


class TariffError(RatingEngineError, ValueError):
    """A problem in a rate deck or plan, located to the file, line and column."""

    def __init__(self, message: str, file: str = "", line: int = 0, column: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column

    def __reduce__(self) -> tuple[object, ...]:  # a reload's errors come back from another process
        return TariffError, (self.message, self.file, self.line, self.column)

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}"
            if self.column:
                where += f":{self.column}"
        return f"{where}: {self.message}" if where else self.message


class TariffErrors(RatingEngineError, ValueError):
    """Every problem found in a load; nothing of it was applied."""

    def __init__(self, errors: list[TariffError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors

    def __reduce__(self) -> tuple[object, ...]:
        return TariffErrors, (self.errors,)


class ConfigError(RatingEngineError, ValueError):
    """A bad setting in a configuration file or on the command line."""


class StartupError(RatingEngineError):
    """The service could not start (a port taken, the ledger unreachable): exit at once, say why."""
