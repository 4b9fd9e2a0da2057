"""The LLM's training text, obtained without downloads outside the package registries, with its provenance.

Preferred: the King James Bible as Debian's `bible-kjv` package prints it (`bible -f "Gen1:1-Rev22:21"`,
4.4 MB, public domain); each line is `Ge1:1 In the beginning ...`, the reference is dropped and the verse
kept. Fallback when the package is missing: a seeded generated English corpus (simple sentences from a small
grammar), so the trainer still runs anywhere; the provenance says which one was used. Either way the sha256 of
the exact text trained on is recorded in every version's lineage.

Held-out split: every 20th verse goes to validation (never trained on), which spreads it over every book.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
from dataclasses import dataclass

BIBLE_RANGE = "Gen1:1-Rev22:21"
VAL_EVERY = 20


@dataclass
class Corpus:
    train: list[str]
    val: list[str]
    provenance: dict[str, object]


def _bible_verses() -> list[str] | None:
    exe = shutil.which("bible")
    if exe is None:
        return None
    # argv list, no shell; the range is a constant
    out = subprocess.run([exe, "-f", BIBLE_RANGE], capture_output=True, text=True, timeout=60, check=True).stdout
    verses = []
    for line in out.splitlines():
        ref, _, text = line.partition(" ")
        if text.strip() and ":" in ref:
            verses.append(text.strip())
    return verses if len(verses) > 30_000 else None


_SUBJECTS = ["the king", "a farmer", "the old woman", "my brother", "the children", "a stranger", "the captain",
             "our neighbour", "the teacher", "the merchant", "her daughter", "the soldiers"]
_VERBS = ["saw", "found", "carried", "remembered", "built", "sold", "lost", "followed", "painted", "opened"]
_OBJECTS = ["a small house", "the river", "an old boat", "the letters", "a bright lamp", "the gate", "the garden",
            "a loaf of bread", "the long road", "the silver cup", "a wooden chair", "the northern hills"]
_TAILS = ["before the rain came", "in the morning", "and went home", "with great care", "while the town slept",
          "and said nothing", "at the end of the summer", "because it was late"]


def _generated_verses(seed: int = 7, n: int = 40_000) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}."
        out.append(s[0].upper() + s[1:])
    return out


def load_corpus(prefer: str = "bible-kjv", seed: int = 7) -> Corpus:
    """The verses split train/val, and provenance {source, command or seed, verses, bytes, sha256}."""
    verses = _bible_verses() if prefer == "bible-kjv" else None
    if verses is not None:
        provenance: dict[str, object] = {
            "source": "bible-kjv", "command": f'bible -f "{BIBLE_RANGE}"',
            "package": "Debian bible-kjv (King James Version, public domain)",
        }
    else:
        verses = _generated_verses(seed)
        provenance = {"source": "generated", "seed": seed, "generator": "services.llm.corpus._generated_verses"}
    text = "\n".join(verses).encode()
    provenance.update({"verses": len(verses), "bytes": len(text), "sha256": hashlib.sha256(text).hexdigest(),
                       "val_every": VAL_EVERY})
    train = [v for i, v in enumerate(verses) if i % VAL_EVERY]
    val = [v for i, v in enumerate(verses) if i % VAL_EVERY == 0]
    return Corpus(train, val, provenance)
