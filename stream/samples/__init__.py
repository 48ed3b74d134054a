"""Sample conversations written for parley (contact-centre dialogues), used by the demo and tests."""

from importlib.resources import as_file, files
from pathlib import Path


def conversations_path() -> Path:
    """The JSONL file of sample conversations, one utterance per line in the utterances contract."""
    with as_file(files(__name__) / "conversations.jsonl") as path:
        return Path(path)
