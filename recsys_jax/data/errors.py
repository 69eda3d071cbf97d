"""Errors raised for bad input data: each names the file (and line) and what is wrong."""

from __future__ import annotations

import os


class DataError(ValueError):
    """Malformed, empty, inconsistent or corrupted input data.

    The message always starts with the offending file (and line, where there is one) so a
    user can open it and see the problem.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None,
                 line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}, line {line}"
            where += ": "
        super().__init__(where + message)


class ChecksumError(DataError):
    """A download does not match its pinned or published checksum (the download is deleted)."""


class UnknownIdError(KeyError):
    """Ids that the encoder was not fitted on (reported by value, never as an IndexError)."""

    def __init__(self, kind: str, unknown: list, total_unknown: int):
        self.kind = kind
        self.unknown = unknown
        self.total_unknown = total_unknown
        shown = ", ".join(map(repr, unknown))
        more = "" if total_unknown <= len(unknown) else f" (and {total_unknown - len(unknown)} more)"  # noqa: E501
        super().__init__(f"{total_unknown} unknown {kind} id(s): {shown}{more}")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message.
        return self.args[0]
