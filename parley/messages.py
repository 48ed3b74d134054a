"""Message parts that stream/ writes and train/ reads: the ``labelling-queue`` contract, and the
prediction parts it shares with ``utterance-labels``.

They live here, below both, because the two deployables meet only through Kafka: the worker
(stream/labelling_queue.py) sends :class:`LabellingCandidate`, the labeller (``parley train label
--from-topic``) decodes it with :func:`decode_candidate`. stream.contracts re-exports them, and its
schema snapshot in docs/schemas is the published form.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictStr

from parley.contracts import check_schema_version, decode_object, validate

SCHEMA_VERSION: Final = 1
SUPPORTED_VERSIONS: Final = (1,)
MAX_CANDIDATE_BYTES: Final = 1024 * 1024
"""Largest labelling-queue message the labeller decodes (the worker's texts are far below it)."""

# An identifier: 1-256 characters, no control characters (it becomes a Kafka key and a Redis key).
Identifier = Annotated[StrictStr, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LabelScore(Message):
    label: str
    score: float = Field(ge=0.0, le=1.0)


class TaskPrediction(Message):
    """The engine's answer for one task: the top label, its probability and the next best ones."""

    label: str
    score: float = Field(ge=0.0, le=1.0)
    top_k: list[LabelScore] = Field(default_factory=list)


class ModelRef(Message):
    """Which engine produced a prediction."""

    name: str
    version: str
    backend: str = Field(description="e.g. 'onnxruntime-cpu', 'tensorrt'")


class PreviousTurn(Message):
    """A turn before the selected utterance, as the worker's conversation state kept it."""

    utterance_id: str
    text: str


class SelectionScores(Message):
    """Why the worker chose an utterance for labelling (stream/selection.py); each score in [0, 1]."""

    score: float = Field(ge=0.0, le=1.0, description="What the choice ranked by: the largest of the three.")
    reason: Literal["uncertain", "rare", "disagreement"] = Field(description="Which score was the largest.")
    task: str = Field(
        description="The task that gave the largest score; its predicted label counts to its quota."
    )
    uncertainty: dict[str, float] = Field(description="Per task: 1 − (top probability − second).")
    rarity: dict[str, float] = Field(
        description="Per task: how much rarer than uniform the predicted label has been (0: as common "
        "or more)."
    )
    disagreement: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Share of tasks whose top label the previous engine gave differently.",
    )


class LabellingCandidate(Message):
    """An utterance the worker chose for labelling: one message on ``labelling-queue``."""

    schema_version: Literal[1] = SCHEMA_VERSION
    conversation_id: Identifier
    utterance_id: Identifier
    turn: int | None = Field(None, ge=0)
    speaker: str | None = None
    text: str
    context: list[PreviousTurn] = Field(
        default_factory=list, description="The turns before it that Redis still held, oldest first."
    )
    predictions: dict[str, TaskPrediction] = Field(
        min_length=1, description="The serving engine's, per task."
    )
    scores: SelectionScores
    model: ModelRef
    selected_at: AwareDatetime
    worker: str | None = Field(None, description="The worker instance that chose it.")


def decode_candidate(raw: bytes | None, max_bytes: int = MAX_CANDIDATE_BYTES) -> LabellingCandidate:
    """Bytes from ``labelling-queue`` to a LabellingCandidate, or a ContractError with every reason."""
    obj = decode_object(raw, contract="labelling_candidate", max_bytes=max_bytes)
    check_schema_version(obj, contract="labelling_candidate", supported=SUPPORTED_VERSIONS)
    return validate(LabellingCandidate, obj, contract="labelling_candidate")
