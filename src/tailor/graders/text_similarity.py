"""`text_similarity`: a score from 0 to 1 between the rendered `input` and `reference`, passing at
`pass_threshold` (which OpenAI's shape requires).

The metrics, as OpenAI's graders guide names them:
- fuzzy_match: rapidfuzz's `fuzz.WRatio` on `utils.default_process`ed strings, / 100 (OpenAI's
  grader is documented as a rapidfuzz fuzzy match).
- bleu: sacreBLEU's sentence BLEU / 100 (Papineni et al. 2002; the scorer `tailor.evaluate` uses).
- gleu: NLTK's sentence GLEU on whitespace tokens (Wu et al. 2016, Google's NMT paper).
- rouge_1 ... rouge_5, rouge_l: Google's rouge_score F-measure, Porter-stemmed (Lin 2004).
- cosine: cosine similarity of all-MiniLM-L6-v2 embeddings (the bundled embedder the knowledge
  bases use). OpenAI's uses text-embedding-3-large, so numbers are not comparable with theirs.
- meteor: refused. NLTK's METEOR needs the WordNet corpus, which is downloaded at run time and
  ships in no installed package; a METEOR without its synonym stage would not be METEOR.
"""

from __future__ import annotations

import functools
from typing import ClassVar, Literal

from .base import Grader

Metric = Literal["fuzzy_match", "bleu", "gleu", "meteor", "cosine",
                 "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l"]


@functools.cache
def _rouge(metric: str):
    from rouge_score import rouge_scorer
    key = "rougeL" if metric == "rouge_l" else "rouge" + metric[-1]
    return key, rouge_scorer.RougeScorer([key], use_stemmer=True)


def similarity(metric: str, texts: list[str], refs: list[str]) -> list[float]:
    """The metric of each (text, reference) pair, from 0 to 1."""
    if metric == "fuzzy_match":
        from rapidfuzz import fuzz, utils
        return [fuzz.WRatio(t, r, processor=utils.default_process) / 100 for t, r in zip(texts, refs)]
    if metric == "bleu":
        import sacrebleu
        return [sacrebleu.sentence_bleu(t, [r]).score / 100 for t, r in zip(texts, refs)]
    if metric == "gleu":
        from nltk.translate.gleu_score import sentence_gleu
        return [sentence_gleu([r.split()], t.split()) for t, r in zip(texts, refs)]
    if metric.startswith("rouge_"):
        key, scorer = _rouge(metric)
        return [scorer.score(r, t)[key].fmeasure for t, r in zip(texts, refs)]
    if metric == "cosine":
        import numpy as np

        from ..selectors import Embedder  # sentence-transformers: imported only when cosine is asked
        if not texts:
            return []
        vecs = Embedder().embed(list(texts) + list(refs))   # unit vectors: the dot product is the cosine
        a, b = vecs[:len(texts)], vecs[len(texts):]
        return [float(x) for x in np.clip((a * b).sum(axis=1), -1.0, 1.0)]
    raise ValueError(metric)


class TextSimilarity(Grader):
    kind: ClassVar[str] = "text_similarity"

    type: Literal["text_similarity"]
    input: str
    reference: str
    evaluation_metric: Metric
    pass_threshold: float

    def check(self) -> None:
        if self.evaluation_metric == "meteor":
            raise self.error("evaluation_metric", "meteor needs NLTK's WordNet data, which no installed package "
                                                  "ships (it is downloaded at run time); use rouge_l, bleu, gleu, "
                                                  "fuzzy_match or cosine")
        self.template(self.input, "input")
        self.template(self.reference, "reference")

    def grade(self, samples: list[str], items: list[dict]) -> list[float]:
        from .base import NotJson, sample_of
        if len(samples) != len(items):
            return super().grade(samples, items)   # the length error
        texts, refs, scored = [], [], []
        for i, (s, it) in enumerate(zip(samples, items)):
            sample = sample_of(s)
            try:
                text, ref = self.render(self.input, sample, it, "input"), self.render(self.reference, sample, it, "reference")
            except NotJson:
                continue
            texts.append(text)
            refs.append(ref)
            scored.append(i)
        for _ in range(len(samples) - len(scored)):
            self.not_json()   # counted; scored 0
        out = [0.0] * len(samples)
        for i, score in zip(scored, similarity(self.evaluation_metric, texts, refs) if scored else []):
            out[i] = score
        return out
