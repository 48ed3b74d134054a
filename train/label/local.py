"""A local causal LM as a labelling backend: each label is scored by its likelihood as the answer.

For a prompt p and a label ℓ (tokens t₁…t_k, then the end-of-turn token), the score is
log P(t₁…t_k, end | p); a softmax over the task's labels turns them into a distribution. Nothing is
generated, so every answer is a label: a small model that cannot follow the answer format still
gives usable (if weak) scores. The prompt runs once; its key/value cache is repeated for the labels,
which run together as one batch of short continuations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from train.label.backend import Answer, LabelRequest
from train.label.causal_lm import load_causal_lm


class LocalBackend:
    kind = "local"

    def __init__(
        self,
        model: str | None = None,
        batch_size: int = 8,
        device: str = "cpu",
        max_prompt_tokens: int = 1024,
        loaded: tuple[Any, Any, str] | None = None,
    ) -> None:
        """``loaded``: an already loaded (tokenizer, model, name), to share one model between users."""
        self.tokenizer, self.lm, self.model = loaded or load_causal_lm(model, device)
        self.device = device
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens
        self._lock = asyncio.Lock()

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        return None

    async def score(self, requests: Sequence[LabelRequest]) -> list[Answer]:
        async with self._lock:  # one model, one batch at a time; the event loop stays free
            return await asyncio.to_thread(self.score_sync, requests)

    def _chat(self, request: LabelRequest) -> str:
        messages = request.prompt.messages()
        if getattr(self.tokenizer, "chat_template", None):
            return str(
                self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            )
        return "\n\n".join(m["content"] for m in messages) + "\nAnswer: "

    def _label_ids(self, labels: Sequence[str]) -> list[list[int]]:
        end = self.tokenizer.eos_token_id
        return [
            self.tokenizer(label, add_special_tokens=False).input_ids + ([end] if end is not None else [])
            for label in labels
        ]

    def score_sync(self, requests: Sequence[LabelRequest]) -> list[Answer]:
        out: list[Answer] = []
        for start in range(0, len(requests), self.batch_size):
            out += self._batch(requests[start : start + self.batch_size])
        return out

    def _batch(self, requests: Sequence[LabelRequest]) -> list[Answer]:
        import torch

        tok = self.tokenizer
        tok.padding_side = "left"
        enc = tok(
            [self._chat(r) for r in requests],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.max_prompt_tokens,
            add_special_tokens=False,
        ).to(self.device)
        prompt_mask = enc.attention_mask
        positions = (prompt_mask.cumsum(1) - 1).clamp(min=0)
        with torch.inference_mode():
            first = self.lm(
                input_ids=enc.input_ids, attention_mask=prompt_mask, position_ids=positions, use_cache=True
            )
            first_logp = torch.log_softmax(first.logits[:, -1].float(), -1)  # (B, V)
            # label continuations: row (i, ℓ) feeds t₁…t_{k-1}… and predicts t₂…end
            per_request = [self._label_ids(r.labels) for r in requests]
            repeats = torch.tensor([len(ids) for ids in per_request], device=self.device)
            rows = [ids for request_ids in per_request for ids in request_ids]
            width = max(len(ids) for ids in rows) - 1
            first_rows = torch.stack(
                [first_logp[i, ids[0]] for i, request_ids in enumerate(per_request) for ids in request_ids]
            )
            if width > 0:
                pad = tok.pad_token_id
                cont = torch.full((len(rows), width), pad, dtype=torch.long, device=self.device)
                cont_mask = torch.zeros((len(rows), width), dtype=torch.long, device=self.device)
                target = torch.full((len(rows), width), pad, dtype=torch.long, device=self.device)
                for r, ids in enumerate(rows):
                    n = len(ids) - 1
                    if n:
                        cont[r, :n] = torch.tensor(ids[:-1])
                        target[r, :n] = torch.tensor(ids[1:])
                        cont_mask[r, :n] = 1
                cache = first.past_key_values
                cache.batch_repeat_interleave(int(repeats[0])) if bool(
                    (repeats == repeats[0]).all()
                ) else self._select(cache, repeats)
                mask = torch.cat([prompt_mask.repeat_interleave(repeats, 0), cont_mask], 1)
                start = prompt_mask.sum(1).repeat_interleave(repeats, 0)
                pos = start[:, None] + torch.arange(width, device=self.device)[None]
                logits = self.lm(
                    input_ids=cont, attention_mask=mask, position_ids=pos, past_key_values=cache
                ).logits
                logp = torch.log_softmax(logits.float(), -1).gather(2, target[..., None])[..., 0]
                rest = (logp * cont_mask).sum(1)
            else:
                rest = torch.zeros(len(rows), device=self.device)
            total = (first_rows + rest).cpu()
        answers: list[Answer] = []
        offset = 0
        for request, request_ids in zip(requests, per_request, strict=True):
            values = total[offset : offset + len(request_ids)]
            offset += len(request_ids)
            probs = torch.softmax(values, 0).tolist()
            answers.append(
                Answer(
                    scores=dict(zip(request.labels, probs, strict=True)),
                    prompt_tokens=int(prompt_mask[len(answers)].sum()),
                    completion_tokens=sum(len(ids) for ids in request_ids),
                )
            )
        return answers

    @staticmethod
    def _select(cache: Any, repeats: Any) -> None:
        import torch

        index = torch.repeat_interleave(torch.arange(len(repeats), device=repeats.device), repeats)
        cache.batch_select_indices(index)
