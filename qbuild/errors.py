"""User-facing errors: one line that names the problem and the fix."""

import re

# Lines of a (TVM or Python) traceback that say where, not what.
_TRACEBACK_LINE = re.compile(r"^(Traceback \(most recent call last\)|File \"|\d+: )")


class QbuildError(Exception):
    """Bad input or environment, reported as ``<problem>; fix: <fix>`` without a traceback."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem, fix)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.problem}; fix: {self.fix}"


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (TVM's are many lines long)."""
    for line in str(exc).splitlines():
        line = line.strip()
        if line and not _TRACEBACK_LINE.match(line):
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return type(exc).__name__
