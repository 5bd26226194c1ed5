"""The results file an evaluation run appends to: JSON Lines, a header line, then one line per
finished sample.

Each line is flushed and fsync'd as soon as its sample finishes, so a killed run loses at most
the line it was writing. Reopening a file finds the ids already done, drops a truncated last
line, and refuses a file written under another configuration (its fingerprint differs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from idealagent.errors import InputError
from idealagent.evaluation.rows import is_row

log = logging.getLogger(__name__)

FORMAT = 1
# What must match for two runs' lines to belong in one file or one report (limit and shard may
# differ). ``settings`` holds the loop settings and the models (for the openai preset the
# served model names, resolved from the environment); the prompt files and the library
# version change answers too, and ``vqa_metric`` changes the scores.
FINGERPRINT_KEYS = ("benchmark", "split", "preset", "settings", "seed", "baseline", "vqa_metric",
                    "prompts_sha256", "idealagent_version")
# What a header written before a key existed means by its absence: results files from before
# the vqa_metric choice were scored with the pre-2021 processing.
IMPLIED_BY_OLD_HEADERS: dict[str, Any] = {"vqa_metric": "vqa-legacy"}


def header_field(header: dict[str, Any], key: str) -> Any:
    """A header's value for ``key``, with what an older header's missing key meant."""
    return header.get(key, IMPLIED_BY_OLD_HEADERS.get(key))


def fingerprint_of(header: dict[str, Any]) -> dict[str, Any]:
    """The part of a header that decides whether results are comparable, JSON-normalised."""
    fingerprint = {key: header_field(header, key) for key in FINGERPRINT_KEYS}
    return json.loads(json.dumps(fingerprint, sort_keys=True))


def fingerprint_differences(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Each differing fingerprint field, by dotted path into ``settings`` (``settings.models.llm``),
    mapped to its (old, new) values; empty when the two headers are comparable."""
    differences: dict[str, tuple[Any, Any]] = {}

    def compare(path: str, a: Any, b: Any) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                compare(f"{path}.{key}", a.get(key), b.get(key))
        elif a != b:
            differences[path] = (a, b)

    old_print, new_print = fingerprint_of(old), fingerprint_of(new)
    for key in FINGERPRINT_KEYS:
        compare(key, old_print[key], new_print[key])
    return differences


def fingerprint_difference(old: dict[str, Any], new: dict[str, Any], old_label: str = "in the file",
                           new_label: str = "now") -> str | None:
    """``'seed: 0 in the file, 1 now; settings.models.llm: "a" in the file, "b" now'`` naming
    every differing fingerprint field, or None if the headers are comparable."""
    differences = fingerprint_differences(old, new)
    if not differences:
        return None
    return "; ".join(f"{path}: {json.dumps(a)} {old_label}, {json.dumps(b)} {new_label}"
                     for path, (a, b) in differences.items())


def prompts_sha256(directory: Path | None = None) -> str:
    """A short hash of the prompt files (``prompts/*.yaml``, the shipped ones by default): their
    names and bytes. All of them count, not only the roles' of one preset, because which
    answerer prompt is used is known only once the model has loaded."""
    from idealagent.prompts import default_prompts_dir

    folder = directory or default_prompts_dir()
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.yaml")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@dataclass
class DoneSample:
    """What the runner needs to know about a sample an earlier run finished (not its trace)."""

    score: float | None
    baseline_score: float | None
    failed: bool


@dataclass
class ExistingResults:
    """What a results file already holds, read without changing it."""

    path: Path
    header: dict[str, Any] | None = None  # None: no file, or nothing complete in it
    done: dict[str, DoneSample] = field(default_factory=dict)
    complete_bytes: int = 0  # the file's length up to the end of its last complete line
    size: int = 0  # the file's length now; larger than complete_bytes after a killed write

    @property
    def has_torn_tail(self) -> bool:
        """Whether the file ends in a partial line that reopening will cut off."""
        return self.size > self.complete_bytes


@dataclass
class ResultsFile:
    """A results file as read: its header, its sample rows and what was left out."""

    path: Path
    header: dict[str, Any] | None = None  # None: no file (strict reading only)
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one per line skipped (lenient reading only)
    complete_bytes: int = 0  # the file's length up to the end of its last whole line
    size: int = 0  # the file's length now; larger than complete_bytes after a killed write


def read_file(path: Path, *, strict: bool) -> ResultsFile:
    """The one reader of results files: the header line, then one row per sample line.

    A killed write leaves a torn last line; both modes leave it out. ``strict`` is for a file
    the runner is about to append to: a missing file is an empty result, a line without its
    newline is torn even if it parses (the writer cuts it off), and a bad line anywhere else
    means the file was edited or is not ours, an InputError. Otherwise (the report) a missing
    file is an InputError and every unreadable line is skipped with a problem naming it.
    """
    path = Path(path)
    hint = ("choose another --out, or pass --force to overwrite it" if strict
            else "pass a results file written by `idealagent eval`")
    if not path.exists():
        if strict:
            return ResultsFile(path)
        raise InputError(f"{path} not found; {hint}")
    if not path.is_file():
        raise InputError(f"{path} is not a file; {hint}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror}; {hint}") from None
    read = ResultsFile(path, size=len(data))
    lines = data.split(b"\n")  # the last item follows the last newline: b"" unless the line is torn
    # The last line that may be torn: strict reading never reads the one after the last newline.
    readable = lines[:-1] if strict else lines
    last = max((n for n, raw in enumerate(readable, start=1) if raw.strip()), default=0)
    offset = 0
    for number, raw in enumerate(lines, start=1):
        torn = number == len(lines)  # no newline after it
        if torn and (strict or not raw.strip()):
            break
        offset += len(raw) + 1
        if raw.strip():
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                if number == last:  # torn by a kill: strict reading cuts it off on reopening
                    if not strict:
                        read.problems.append(
                            f"{path}:{number}: the last line is truncated (a killed run?); skipped")
                    break
                if strict:
                    raise InputError(f"{path}:{number}: not a valid JSON line; remove that line, "
                                     "or pass --force to start afresh") from None
                read.problems.append(f"{path}:{number}: not valid JSON; skipped")
                continue
            _take(read, record, number, strict, hint)
        read.complete_bytes = min(offset, len(data))
    if read.header is None and not strict:
        raise InputError(
            f"{path} is not an idealagent results file (no results header on its first line); {hint}")
    return read


def _take(read: ResultsFile, record: Any, number: int, strict: bool, hint: str) -> None:
    if read.header is None:
        if not isinstance(record, dict) or not isinstance(record.get("header"), dict):
            raise InputError(f"{read.path} is not an idealagent results file "
                             f"(no results header on its first line); {hint}")
        read.header = record["header"]
    elif is_row(record):
        read.rows.append(record)
    elif strict:
        raise InputError(f"{read.path}:{number}: not a sample line (needs an id, a score and a "
                         "confidence); remove it, or pass --force to start afresh")
    else:
        read.problems.append(
            f"{read.path}:{number}: not a sample line (needs an id, a score and a confidence); skipped")


def read_existing(path: Path) -> ExistingResults:
    """Read a results file's header and finished ids (``read_file`` strictly); a missing file
    is an empty result, a torn last line is left out (``has_torn_tail``)."""
    read = read_file(path, strict=True)
    existing = ExistingResults(path, header=read.header, complete_bytes=read.complete_bytes, size=read.size)
    for row in read.rows:
        if row["id"] in existing.done:
            log.warning("%s: id %s appears again; keeping the first", path, row["id"])
            continue
        baseline = row.get("baseline") or {}
        existing.done[row["id"]] = DoneSample(
            score=row.get("score"), baseline_score=baseline.get("score"), failed=row.get("error") is not None
        )
    return existing


class ResultsWriter:
    """Appends result lines durably; holds an exclusive lock so two runs can't share a file."""

    def __init__(self, existing: ExistingResults, header: dict[str, Any], *, fresh: bool) -> None:
        """Open ``existing.path`` for appending: start it afresh (header first) if ``fresh`` or
        it has no header yet, else cut off a torn last line and go on after the last whole one."""
        self.path = existing.path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = self.path.open("ab")
        try:
            _lock(self._file, self.path)
            if fresh or existing.header is None:
                self._file.truncate(0)
                self.append({"header": header})
            elif existing.has_torn_tail:
                log.warning("%s: dropping a partial last line (%d bytes) left by an interrupted run",
                            self.path, existing.size - existing.complete_bytes)
                self._file.truncate(existing.complete_bytes)
        except BaseException:
            self._file.close()
            raise

    def append(self, record: dict[str, Any]) -> None:
        """Write one line and force it to disk before returning."""
        self.extend([record])

    def extend(self, records: list[dict[str, Any]]) -> None:
        """Write the lines and force them to disk once, after the last."""
        self._file.write(b"".join(json.dumps(r, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"
                                  for r in records))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Release the lock and close the file."""
        self._file.close()


def _lock(handle: IO[bytes], path: Path) -> None:
    """An advisory exclusive lock (POSIX); elsewhere nothing guards against a second writer."""
    try:
        import fcntl
    except ImportError:  # Windows
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise InputError(f"{path} is being written by another idealagent eval; wait for it or "
                         "choose another --out") from None
