"""Task specifications and prompt banks, both YAML, and the rendering of one prompt for one utterance.

A task::

    name: dialogue_act
    description: the communicative function of the utterance      # optional
    labels:                                                         # ordered; one-line descriptions
      inform: states a fact, an opinion or an answer
      question: asks for information
    instructions: Label the last utterance only.                    # optional
    examples:                                                       # optional, for few-shot prompts
      - {text: "What time is it?", label: question}
      - {text: "It's five.", label: inform, context: ["What time is it?"]}

A prompt bank::

    prompts:
      - id: definitions
        system: You label utterances of conversations.              # optional
        user: |
          Labels:
          {label_definitions}
          Utterance: "{text}"
          Answer with the label only.
        tasks: [dialogue_act]          # optional: only these tasks (default: every task)
        label_order: given             # given | reversed | alphabetical | shuffled (seeded per prompt)
        context_turns: 0               # previous turns of the dialogue offered as {context}
        examples: 0                    # few-shot examples offered as {examples}

Templates use Python's ``str.format`` fields; literal braces are doubled (``{{`` and ``}}``). The
fields: {task}, {description}, {instructions}, {labels} (comma-separated, in the prompt's order),
{label_definitions} (one "- label: description" line each), {context} (the previous turns, one
"speaker: text" line each, or "(start of the conversation)"), {examples} (the few-shot block),
{speaker} and {text}. An unknown field is an error when the bank is loaded, not mid-run.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from train.errors import TrainError

FIELDS = frozenset(
    {
        "task",
        "description",
        "instructions",
        "labels",
        "label_definitions",
        "context",
        "examples",
        "speaker",
        "text",
    }
)
LabelOrder = Literal["given", "reversed", "alphabetical", "shuffled"]
MAX_TEXT_CHARS = 2000


class SpecError(TrainError, ValueError):
    """A task or prompt file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    context: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelTask:
    name: str
    labels: tuple[str, ...]
    definitions: dict[str, str]
    description: str = ""
    instructions: str = ""
    examples: tuple[Example, ...] = ()

    @classmethod
    def from_dict(cls, spec: Any, source: str) -> LabelTask:
        if not isinstance(spec, dict):
            raise SpecError(f"{source}: a task is a mapping with 'name' and 'labels'")
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise SpecError(f"{source}: the task needs a 'name'")
        raw = spec.get("labels")
        names = (
            list(raw)
            if isinstance(raw, dict)
            else [i.get("name") if isinstance(i, dict) else i for i in raw or []]
        )
        odd = [n for n in names if not isinstance(n, str)]
        if odd:
            raise SpecError(
                f"{source}: task {name!r} has label names that YAML did not read as text: {odd}; "
                "quote them ('yes', 'no', 'on', '1')"
            )
        if isinstance(raw, dict):
            definitions = {str(k): str(v or "") for k, v in raw.items()}
        elif isinstance(raw, list):
            definitions = {}
            for item in raw:
                if isinstance(item, dict) and "name" in item:
                    definitions[str(item["name"])] = str(item.get("description") or "")
                elif isinstance(item, str):
                    definitions[item] = ""
                else:
                    raise SpecError(f"{source}: label entries are names or {{name, description}}")
        else:
            raise SpecError(f"{source}: task {name!r} needs 'labels' (a mapping label: description)")
        if len(definitions) < 2:
            raise SpecError(f"{source}: task {name!r} needs at least two labels")
        examples = []
        for k, ex in enumerate(spec.get("examples") or []):
            if not isinstance(ex, dict) or "text" not in ex or "label" not in ex:
                raise SpecError(f"{source}: example {k} of {name!r} needs 'text' and 'label'")
            if not isinstance(ex["label"], str) or ex["label"] not in definitions:
                raise SpecError(
                    f"{source}: example {k} of {name!r} has label {ex['label']!r}, "
                    f"not one of {list(definitions)}"
                )
            examples.append(
                Example(str(ex["text"]), str(ex["label"]), tuple(map(str, ex.get("context") or ())))
            )
        return cls(
            name,
            tuple(definitions),
            definitions,
            str(spec.get("description") or ""),
            str(spec.get("instructions") or ""),
            tuple(examples),
        )


@dataclass(frozen=True)
class Prompt:
    id: str
    user: str
    system: str = ""
    tasks: tuple[str, ...] = ()
    label_order: LabelOrder = "given"
    context_turns: int = 0
    examples: int = 0

    def applies_to(self, task: str) -> bool:
        return not self.tasks or task in self.tasks


@dataclass(frozen=True)
class PromptBank:
    prompts: tuple[Prompt, ...]

    def for_task(self, task: str) -> list[Prompt]:
        return [p for p in self.prompts if p.applies_to(task)]


@dataclass(frozen=True)
class Turn:
    """What a prompt sees of one utterance: its text, speaker and the turns before it."""

    text: str
    speaker: str | None = None
    previous: Sequence[tuple[str | None, str]] = field(default_factory=tuple)


@dataclass(frozen=True)
class Rendered:
    system: str
    user: str

    def messages(self) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system}] if self.system else []
        return [*out, {"role": "user", "content": self.user}]


def _fields(template: str, where: str) -> set[str]:
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise SpecError(f"{where}: bad template ({exc}); write literal braces as {{{{ and }}}}") from None
    unknown = names - FIELDS
    if unknown:
        raise SpecError(
            f"{where}: unknown template field(s) {sorted(unknown)}; the fields are {sorted(FIELDS)}"
        )
    return names


def load_bank(spec: Any, source: str) -> PromptBank:
    if not isinstance(spec, dict) or not isinstance(spec.get("prompts"), list) or not spec["prompts"]:
        raise SpecError(f"{source}: a prompt bank is a mapping with a non-empty 'prompts' list")
    prompts, seen = [], set()
    for k, p in enumerate(spec["prompts"]):
        where = f"{source}, prompt {k}"
        if not isinstance(p, dict) or not p.get("id") or not p.get("user"):
            raise SpecError(f"{where}: each prompt needs an 'id' and a 'user' template")
        pid = str(p["id"])
        if pid in seen:
            raise SpecError(f"{where}: prompt id {pid!r} appears twice")
        seen.add(pid)
        unknown = set(p) - {"id", "user", "system", "tasks", "label_order", "context_turns", "examples"}
        if unknown:
            raise SpecError(f"{where} ({pid}): unknown keys {sorted(unknown)}")
        used = _fields(str(p["user"]), f"{where} ({pid})") | _fields(
            str(p.get("system") or ""), f"{where} ({pid})"
        )
        if "text" not in used:
            raise SpecError(f"{where} ({pid}): the templates never show the utterance: add {{text}}")
        tasks = p.get("tasks") or ()
        if isinstance(tasks, str):
            tasks = (tasks,)
        if not isinstance(tasks, list | tuple) or not all(isinstance(t, str) for t in tasks):
            raise SpecError(f"{where} ({pid}): 'tasks' is a list of task names")
        order = p.get("label_order", "given")
        if order not in ("given", "reversed", "alphabetical", "shuffled"):
            raise SpecError(f"{where} ({pid}): label_order must be given, reversed, alphabetical or shuffled")
        prompts.append(
            Prompt(
                pid,
                str(p["user"]),
                str(p.get("system") or ""),
                tuple(tasks),
                order,
                int(p.get("context_turns") or 0),
                int(p.get("examples") or 0),
            )
        )
    return PromptBank(tuple(prompts))


def _yaml(path: Path) -> Any:
    import yaml

    if not path.is_file():
        raise SpecError(f"{path} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({exc})") from None


def read_bank(path: Path | None) -> PromptBank:
    """A prompt bank from ``path``, or the default bank shipped with parley."""
    if path is None:
        import yaml

        text = resources.files("train.label").joinpath("default_bank.yaml").read_text(encoding="utf-8")
        return load_bank(yaml.safe_load(text), "the default prompt bank")
    return load_bank(_yaml(path), str(path))


def read_task(ref: str) -> LabelTask:
    """A task from a YAML path, or by name from the tasks shipped with parley (train/label/tasks)."""
    path = Path(ref)
    if not path.exists() and not ref.endswith((".yaml", ".yml")):
        shipped = resources.files("train.label").joinpath("tasks", f"{ref}.yaml")
        if not shipped.is_file():
            names = sorted(
                p.name[:-5]
                for p in resources.files("train.label").joinpath("tasks").iterdir()
                if p.name.endswith(".yaml")
            )
            raise SpecError(f"no task file {ref!r} and no shipped task of that name; shipped: {names}")
        import yaml

        return LabelTask.from_dict(yaml.safe_load(shipped.read_text(encoding="utf-8")), f"shipped task {ref}")
    return LabelTask.from_dict(_yaml(path), str(path))


def ordered_labels(task: LabelTask, prompt: Prompt) -> list[str]:
    labels = list(task.labels)
    if prompt.label_order == "reversed":
        labels.reverse()
    elif prompt.label_order == "alphabetical":
        labels.sort()
    elif prompt.label_order == "shuffled":
        random.Random(f"{prompt.id}/{task.name}").shuffle(labels)
    return labels


def _context(previous: Sequence[tuple[str | None, str]], turns: int) -> str:
    if turns <= 0 or not previous:
        return "(start of the conversation)"
    return "\n".join(
        f"{speaker or 'speaker'}: {text[:MAX_TEXT_CHARS]}" for speaker, text in previous[-turns:]
    )


def _examples(task: LabelTask, count: int) -> str:
    lines = []
    for ex in task.examples[:count]:
        if ex.context:
            lines.append("Context: " + " / ".join(ex.context))
        lines.append(f'Utterance: "{ex.text}"\nLabel: {ex.label}')
    return "\n\n".join(lines) or "(no examples)"


def render(task: LabelTask, prompt: Prompt, turn: Turn) -> Rendered:
    labels = ordered_labels(task, prompt)
    values = {
        "task": task.name.replace("_", " "),
        "description": task.description,
        "instructions": task.instructions,
        "labels": ", ".join(labels),
        "label_definitions": "\n".join(
            f"- {label}: {task.definitions[label]}" if task.definitions[label] else f"- {label}"
            for label in labels
        ),
        "context": _context(turn.previous, prompt.context_turns),
        "examples": _examples(task, prompt.examples),
        "speaker": turn.speaker or "speaker",
        "text": turn.text[:MAX_TEXT_CHARS],
    }
    return Rendered(prompt.system.format_map(values).strip(), prompt.user.format_map(values).strip())
