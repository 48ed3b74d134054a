"""``python -m parley.samples PART DIR [TAG]``: write a part of the sample conversations (all, train or
held_out) and its gold labels into DIR, as conversations.jsonl and labels.jsonl, with TAG appended to
every conversation id when given (scripts/demo.sh sends the held-out part, tagged per run, and scores
the worker's labels against it)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import cast, get_args

from parley.samples import Part, read_conversations, write_part


def main(argv: list[str]) -> int:
    parts = get_args(Part)
    if len(argv) not in (2, 3) or argv[0] not in parts:
        print(f"usage: python -m parley.samples {{{','.join(parts)}}} DIR [TAG]", file=sys.stderr)
        return 2
    part, directory = cast(Part, argv[0]), Path(argv[1])
    conversations, labels = write_part(part, directory, argv[2] if len(argv) == 3 else None)
    utterances = read_conversations(part)
    n = len({u.conversation_id for u in utterances})
    print(f"{n} conversations, {len(utterances)} utterances: {conversations} and {labels}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
