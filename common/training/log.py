"""``train_log.jsonl``: one JSON line per epoch (or logged step) of a training run.

Each line is flushed to the disk as it is written (:func:`common.core.files.append_line`). A run killed while writing
leaves at most its last line cut short: reading drops it with a note, and a resumed run first cuts the log back to
the epochs (steps) of the state it continues from, so the log ends as an uninterrupted run's.
"""
import json
import os

from common.core.files import append_line, atomic_write_text

TRAIN_LOG = "train_log.jsonl"


class TrainingLog:
    """The log at ``path``; its records are keyed by ``key`` (``epoch`` or ``step``)."""

    def __init__(self, path, key="epoch"):
        self.path, self.key = path, key

    def records(self):
        """The records in order; a last line cut mid-write is dropped with a note (any other bad line is an error
        of the file, named)."""
        if not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8") as handle:
            lines = [line for line in handle.read().split("\n") if line.strip()]
        records = []
        for number, line in enumerate(lines, start=1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if number < len(lines):
                    from common.core.errors import UserError

                    raise UserError(f"{self.path}: line {number} is not JSON") from None
                print(f"note: {self.path}: its last line was cut mid-write (the run was interrupted); it is dropped")
        return records

    def trim(self, last):
        """Keep the records up to ``last`` (0 or less: start a new log), e.g. before continuing a saved state."""
        if not os.path.exists(self.path):
            return
        kept = [record for record in self.records() if record[self.key] <= last]
        atomic_write_text(self.path, "".join(json.dumps(r, default=float) + "\n" for r in kept))

    def append(self, record):
        append_line(self.path, json.dumps(record, default=float))

    def last(self, field):
        """``field`` of the last record that has it, or None."""
        return next((r[field] for r in reversed(self.records()) if field in r), None)
