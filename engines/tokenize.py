"""Tokenisation for every backend: Hugging Face ``tokenizers`` (Rust), length bucketing, tight padding.

Padding is the enemy on CPU (docs/engines.md, "Calls sized by tokens": unsorted batches of 32 ran
about 3x slower than length-sorted ones), so texts are tokenised without padding, ordered by length,
cut into batches of at most ``max_batch`` and each batch is padded only to its own longest sequence.
``restore`` puts results back in the caller's order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding

from engines.errors import EngineError

TOKENIZER_DIR: Final = "tokenizer"
TOKENIZER_FILE: Final = "tokenizer.json"


@dataclass(frozen=True, slots=True)
class Batch:
    """One padded batch: ``indices`` are the positions of its rows in the caller's list."""

    indices: npt.NDArray[np.int64]
    feeds: dict[str, npt.NDArray[np.int64]]

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.feeds["input_ids"].shape
        return int(rows), int(cols)


class Tokenizer:
    """A bundle's tokenizer with truncation at ``max_length`` and no padding (batches pad themselves).

    With contexts (models that read previous turns) every input is a pair — the utterance, then its
    context, ``""`` where there is none — and truncation cuts the context first (``only_second``);
    an utterance too long to leave room for any context is encoded with an empty context and cut
    itself. Training encodes through this same class (``Tokenizer.from_hf``), so a checkpoint sees
    at serving time exactly the inputs it was trained on.
    """

    def __init__(self, path: Path, max_length: int, input_names: Sequence[str]) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        file = path / TOKENIZER_FILE if path.is_dir() else path
        try:
            tok = HFTokenizer.from_file(str(file))
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise EngineError(f"{file} is not a readable tokenizer: {exc}") from None
        self._setup(tok, max_length, input_names)

    @classmethod
    def from_hf(cls, hf_tokenizer: object, max_length: int, input_names: Sequence[str]) -> Tokenizer:
        """The same rules over a ``transformers`` fast tokenizer's Rust backend (a copy of it)."""
        from tokenizers import Tokenizer as HFTokenizer

        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise EngineError(f"{type(hf_tokenizer).__name__} is not a fast tokenizer (no tokenizer.json)")
        self = cls.__new__(cls)
        self._setup(HFTokenizer.from_str(backend.to_str()), max_length, input_names)
        return self

    def _setup(self, tok: object, max_length: int, input_names: Sequence[str]) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        assert isinstance(tok, HFTokenizer)
        self._tok = tok
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_length)
        self._pair_tok = HFTokenizer.from_str(tok.to_str())
        self._pair_tok.enable_truncation(max_length=max_length, strategy="only_second")
        self.max_length = max_length
        self.input_names = list(input_names)
        pad = self._tok.padding or {}
        self.pad_id = int(pad.get("pad_id", self._tok.token_to_id("[PAD]") or 0))

    def lengths(self, texts: Sequence[str], pairs: Sequence[str | None] | None = None) -> list[int]:
        return [len(e.ids) for e in self._encode(texts, pairs)]

    def _encode(self, texts: Sequence[str], pairs: Sequence[str | None] | None) -> list[Encoding]:
        if pairs is None:
            return list(self._tok.encode_batch(list(texts)))
        inputs = [(t, p or "") for t, p in zip(texts, pairs, strict=True)]
        try:
            return list(self._pair_tok.encode_batch(inputs))
        except Exception:  # an utterance leaves no room for its context: encode those one by one
            return [self._encode_pair(t, p) for t, p in inputs]

    def _encode_pair(self, text: str, context: str) -> Encoding:
        try:
            return self._pair_tok.encode(text, context)
        except Exception:  # tokenizers' "Truncation error": the utterance alone is too long
            return self._tok.encode(text, "")

    def batches(
        self,
        texts: Sequence[str],
        pairs: Sequence[str | None] | None = None,
        *,
        max_batch: int,
        max_tokens: int | None = None,
        bucket: bool = True,
        max_padding: float | None = None,
    ) -> Iterator[Batch]:
        """Padded batches of at most ``max_batch`` rows and, with ``max_tokens``, at most that many
        padded tokens (rows × width; a single longer row still makes a batch of one). With
        ``bucket``, rows of similar length go together, so a token budget buys many short rows or a
        few long ones and every engine call does about the same work. With ``max_padding``, a call
        also ends before its padding would exceed that share of its real tokens (0.5: at most half
        as many pad tokens as real ones), so a few texts of mixed lengths are not all padded to the
        longest."""
        encodings = self._encode(texts, pairs)
        lengths = [len(e.ids) for e in encodings]
        order = np.argsort(lengths, kind="stable") if bucket else np.arange(len(texts))
        for idx in cut_batches(order, lengths, max_batch, max_tokens, max_padding):
            chosen = [encodings[i] for i in idx]
            sizes = np.array([lengths[i] for i in idx])
            real = np.arange(int(sizes.max())) < sizes[:, None]  # row-major: the ids in order
            ids = np.full(real.shape, self.pad_id, dtype=np.int64)
            ids[real] = np.fromiter(itertools.chain.from_iterable(e.ids for e in chosen), np.int64)
            types = np.zeros(real.shape, dtype=np.int64)
            types[real] = np.fromiter(itertools.chain.from_iterable(e.type_ids for e in chosen), np.int64)
            mask = real.astype(np.int64)
            all_feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            yield Batch(idx, {name: all_feeds[name] for name in self.input_names})


def cut_batches(
    order: npt.NDArray[np.int64],
    lengths: Sequence[int],
    max_batch: int,
    max_tokens: int | None,
    max_padding: float | None = None,
) -> Iterator[npt.NDArray[np.int64]]:
    """Consecutive runs of ``order``: at most ``max_batch`` rows, (rows × longest) ≤ ``max_tokens``,
    and (rows × longest) ≤ (1 + ``max_padding``) × the run's real tokens. A run is cut only where
    the next row would break a limit, and a single row is always a run."""
    start, width, real = 0, 0, 0
    for end in range(len(order)):
        length = lengths[order[end]]
        grown, rows = max(width, length), end - start + 1
        if rows > 1 and (
            rows > max_batch
            or (max_tokens is not None and rows * grown > max_tokens)
            or (max_padding is not None and rows * grown > (1 + max_padding) * (real + length))
        ):
            yield order[start:end].astype(np.int64)
            start, width, real = end, length, length
        else:
            width, real = grown, real + length
    if start < len(order):
        yield order[start:].astype(np.int64)


def restore(
    parts: Sequence[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]], n: int
) -> npt.NDArray[np.float32]:
    """Reassemble per-batch rows into the caller's order."""
    width = parts[0][1].shape[1]
    out = np.empty((n, width), dtype=np.float32)
    for indices, values in parts:
        out[indices] = values
    return out
