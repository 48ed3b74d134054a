"""The answer cache: one SQLite file, one row per request key, committed after every batch.

The key hashes the backend kind, the model, the rendered prompt and the label set, so a changed
template or model is a new request and an unchanged one is never paid for twice. SQLite's WAL mode
lets a reader (a report, a test) look while a run writes; a killed run loses at most the batch in
flight. Failed requests are not stored, so the next run asks them again.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from train.label.backend import Answer
from train.label.spec import Rendered


def request_key(kind: str, model: str, prompt: Rendered, labels: Sequence[str]) -> str:
    payload = json.dumps([kind, model, prompt.system, prompt.user, list(labels)], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class AnswerCache:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL)")
        self._db.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, Answer]:
        out: dict[str, Answer] = {}
        keys = list(dict.fromkeys(keys))
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self._db.execute(
                f"SELECT key, answer FROM answers WHERE key IN ({','.join('?' * len(chunk))})", chunk
            )
            out.update({k: Answer.from_json(json.loads(a)) for k, a in rows})
        return out

    def put_many(self, items: Iterable[tuple[str, Answer]]) -> int:
        rows = [(k, json.dumps(a.to_json(), ensure_ascii=False)) for k, a in items if a.failed is None]
        self._db.executemany("INSERT OR REPLACE INTO answers (key, answer) VALUES (?, ?)", rows)
        self._db.commit()
        return len(rows)

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        self._db.close()
