"""Metrics and the evaluation runner.

Standard metrics come from the field's libraries (rouge-score, sacrebleu); accuracy, F1,
confusion and calibration are a few lines each and are written here.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import asdict, dataclass, field

from .calibration import calibrated
from .engine import Engine
from .prompts import PromptBuilder, assemble
from .task import Example, Task, primary_metric

# ---------------------------------------------------------------- metrics


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower()).strip(" .")


def accuracy(preds: list[str], golds: list[str]) -> float:
    return sum(p == g for p, g in zip(preds, golds)) / max(len(golds), 1)


def exact_match(preds: list[str], golds: list[str]) -> float:
    return sum(normalize(p) == normalize(g) for p, g in zip(preds, golds)) / max(len(golds), 1)


def confusion_matrix(preds: list[str], golds: list[str], labels: list[str]) -> list[list[int]]:
    """rows: gold label, columns: predicted label (a prediction outside `labels` is dropped
    from the matrix; accuracy still counts it as wrong)."""
    index = {l: i for i, l in enumerate(labels)}
    m = [[0] * len(labels) for _ in labels]
    for p, g in zip(preds, golds):
        if p in index and g in index:
            m[index[g]][index[p]] += 1
    return m


def macro_f1(preds: list[str], golds: list[str], labels: list[str]) -> float:
    f1s = []
    for label in labels:
        tp = sum(p == label and g == label for p, g in zip(preds, golds))
        fp = sum(p == label and g != label for p, g in zip(preds, golds))
        fn = sum(p != label and g == label for p, g in zip(preds, golds))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(f1s) / max(len(f1s), 1)


@functools.cache
def _rouge_scorer():
    from rouge_score import rouge_scorer
    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge_pair(pred: str, ref: str) -> dict[str, dict[str, float]]:
    """ROUGE-1/2/L precision, recall and F1 of one prediction against its reference."""
    return {k: {"precision": s.precision, "recall": s.recall, "f1": s.fmeasure}
            for k, s in _rouge_scorer().score(ref, pred).items()}


def rouge(preds: list[str], refs: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 over the pairs."""
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for p, r in zip(preds, refs):
        for k, s in rouge_pair(p, r).items():
            totals[k] += s["f1"]
    return {k: v / max(len(refs), 1) for k, v in totals.items()}


@functools.cache
def _rouge_tokenizer():
    from rouge_score import tokenizers
    return tokenizers.DefaultTokenizer(use_stemmer=True)   # the tokens ROUGE-1/2/L above count


def skip_bigrams(tokens: list[str], max_skip: int | None = None) -> dict[tuple[str, str], int]:
    """Every in-order word pair (tokens[i], tokens[j]), i < j, with at most `max_skip` words
    between them (None: any gap; 0: plain bigrams), counted (Lin 2004, section 5)."""
    counts: dict[tuple[str, str], int] = {}
    for i, a in enumerate(tokens):
        last = len(tokens) if max_skip is None else min(len(tokens), i + max_skip + 2)
        for b in tokens[i + 1:last]:
            counts[(a, b)] = counts.get((a, b), 0) + 1
    return counts


def rouge_s_tokens(pred: list[str], ref: list[str], max_skip: int | None = None,
                   beta: float = 1.0) -> dict[str, float]:
    """ROUGE-S (Lin 2004): skip-bigram co-occurrence of a prediction and its reference.
    recall = matches / skip-bigrams of the reference, precision = matches / skip-bigrams of the
    prediction (C(n, 2) each without a skip limit), F = (1 + b^2) R P / (R + b^2 P); a pair
    occurring k times in one and l in the other matches min(k, l) times."""
    p, r = skip_bigrams(pred, max_skip), skip_bigrams(ref, max_skip)
    hits = sum(min(n, r[k]) for k, n in p.items() if k in r)
    precision = hits / sum(p.values()) if p else 0.0
    recall = hits / sum(r.values()) if r else 0.0
    f = (1 + beta ** 2) * recall * precision / (recall + beta ** 2 * precision) if hits else 0.0
    return {"precision": precision, "recall": recall, "f1": f}


def rouge_s(preds: list[str], refs: list[str], max_skip: int | None = None) -> float:
    """Mean ROUGE-S F1 (ROUGE-S4: max_skip=4; ROUGE-S*: None) over the pairs, on the tokens
    (lower-cased, stemmed) that ROUGE-1/2/L count."""
    tok = _rouge_tokenizer()
    scores = [rouge_s_tokens(tok.tokenize(p), tok.tokenize(r), max_skip)["f1"] for p, r in zip(preds, refs)]
    return sum(scores) / max(len(scores), 1)


def bleu(preds: list[str], refs: list[str]) -> float:
    import sacrebleu
    return sacrebleu.corpus_bleu(preds, [refs]).score / 100


def chrf(preds: list[str], refs: list[str]) -> float:
    import sacrebleu
    return sacrebleu.corpus_chrf(preds, [refs]).score / 100


def ece(confidences: list[float], correct: list[bool], n_bins: int = 10) -> float:
    """Expected calibration error: |accuracy - confidence| averaged over equal-width bins,
    weighted by the share of predictions in each bin."""
    n = len(confidences)
    if not n:
        return float("nan")
    bins: list[list[int]] = [[] for _ in range(n_bins)]
    for i, c in enumerate(confidences):
        bins[min(int(c * n_bins), n_bins - 1)].append(i)
    total = 0.0
    for b in bins:
        if b:
            acc = sum(correct[i] for i in b) / len(b)
            conf = sum(confidences[i] for i in b) / len(b)
            total += len(b) / n * abs(acc - conf)
    return total


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# ---------------------------------------------------------------- predictions


@dataclass
class Prediction:
    id: str
    prediction: str
    target: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float   # wall time of the batch that computed it (0 when cached)
    cached: bool = False
    probs: dict[str, float] | None = None  # per label or choice (classify / choice tasks)
    shots: int = 0
    shots_dropped: int = 0
    prompt: str = ""
    retrieved: list[dict] | None = None   # the passages shown, in rank order: chunk id, document id, score
    passages_dropped: int = 0             # retrieved passages left out to fit the prompt budget
    cited: list[str] | None = None        # chunk ids the answer cited as [n] (generate tasks)
    cited_out_of_range: int = 0           # [n] with no passage n
    uncalibrated: str | None = None       # a calibrated arm's answer before its label prior was divided out
    grade: float | None = None            # the task's grader's score of this answer (tailor.graders), its primary metric

    def to_json(self) -> dict:
        return asdict(self)


def predict(engine: Engine, builder: PromptBuilder, task: Task, examples: list[Example],
            shots_for=None, passages_for=None, max_new_tokens: int = 64,
            length_norm: bool = False, calibration: dict | None = None) -> list[Prediction]:
    """Formats every example with the one prompt builder and runs it through the engine.
    `shots_for(example)` supplies in-context examples; `passages_for(examples)` the retrieved
    passages of every example (one batch of queries), most relevant first.
    length_norm: rank options by mean log-probability per token instead of the sum (options of
    different lengths, as in general benchmarks; the sum favours short options).
    calibration: a recipe's label prior (tailor.calibration), divided out of every row's scores."""
    prompts, retrieved = assemble(builder, examples, shots_for, passages_for)
    texts = [p.text for p in prompts]
    out = []
    if task.kind in ("classify", "choice"):
        options = [task.labels if task.kind == "classify" else ex.choices for ex in examples]
        scores = engine.score(texts, [[builder.target_text(o) for o in opts] for opts in options])
        for ex, p, opts, s in zip(examples, prompts, options, scores):
            raw = s.mean_logprobs if length_norm else s.logprobs
            lps = calibrated(opts, raw, calibration["log_prior"]) if calibration else raw
            probs = _softmax(lps)
            best = max(range(len(opts)), key=lambda j: lps[j])
            out.append(Prediction(ex.id, opts[best], ex.target, s.prompt_tokens, sum(s.n_tokens),
                                  s.latency_s, s.cached, dict(zip(opts, probs)), p.shots_used,
                                  p.shots_dropped, p.text))
            if calibration:
                out[-1].uncalibrated = opts[max(range(len(opts)), key=lambda j: raw[j])]
    else:
        gens = engine.generate(texts, max_new_tokens=max_new_tokens)
        for ex, p, g in zip(examples, prompts, gens):
            out.append(Prediction(ex.id, g.text.strip(), ex.target, g.prompt_tokens, g.completion_tokens,
                                  g.latency_s, g.cached, None, p.shots_used, p.shots_dropped, p.text))
    if passages_for:
        for pred, prompt, ps in zip(out, prompts, retrieved):
            _record_passages(pred, ps[:len(prompt.passages)], prompt.passages_dropped, task.kind == "generate")
    return out


def _record_passages(pred: Prediction, shown: list, dropped: int, generated: bool) -> None:
    pred.retrieved = [{"id": p.id, "doc": p.doc_id, "score": round(p.score, 6)} for p in shown]
    pred.passages_dropped = dropped
    if generated:
        numbers, bad = parse_citations(pred.prediction, len(shown))
        pred.cited, pred.cited_out_of_range = [shown[n - 1].id for n in numbers], len(bad)
        pred.prediction = strip_citations(pred.prediction)   # scored as the answer, its citations apart


_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")   # [2] or [1, 3]: the passages a prompt numbers [1]..[n]


def parse_citations(text: str, n_passages: int) -> tuple[list[int], list[int]]:
    """([n, ...] cited in order, first mention only, within 1..n_passages; [out-of-range numbers])."""
    cited, bad = [], []
    for m in _CITATION.finditer(text):
        for part in m.group(1).split(","):
            n = int(part)
            target = cited if 1 <= n <= n_passages else bad
            if n not in target:
                target.append(n)
    return cited, bad


def strip_citations(text: str) -> str:
    return re.sub(r"\s*\[\d+(?:\s*,\s*\d+)*\]", "", text).strip()


def _softmax(logprobs: list[float]) -> list[float]:
    m = max(logprobs)
    e = [math.exp(x - m) for x in logprobs]
    z = sum(e)
    return [x / z for x in e]


# ---------------------------------------------------------------- scoring a set of predictions


@dataclass
class Report:
    metrics: dict[str, float]
    confusion: list[list[int]] | None = None
    labels: list[str] | None = None
    cost: dict[str, float] = field(default_factory=dict)


def score_predictions(task: Task, preds: list[Prediction]) -> Report:
    p = [x.prediction for x in preds]
    g = [x.target for x in preds]
    metrics: dict[str, float] = {}
    confusion = None
    if task.kind in ("classify", "choice"):
        metrics["accuracy"] = accuracy(p, g)
        conf = [max(x.probs.values()) for x in preds]
        metrics["ece"] = ece(conf, [a == b for a, b in zip(p, g)])
        if task.kind == "classify":
            metrics["macro_f1"] = macro_f1(p, g, task.labels)
            confusion = confusion_matrix(p, g, task.labels)
    else:
        metrics["exact_match"] = exact_match(p, g)
        metrics.update(rouge(p, g))
        metrics["rougeS4"], metrics["rougeS"] = rouge_s(p, g, 4), rouge_s(p, g)   # skip-bigrams (Lin 2004)
        metrics["bleu"] = bleu(p, g)
        metrics["chrf"] = chrf(p, g)
    graded = [x.grade for x in preds if x.grade is not None]
    if task.grader and graded:   # the grader's mean is the primary metric (tailor.task.primary_metric)
        metrics[primary_metric(task)] = sum(graded) / len(graded)
    n = max(len(preds), 1)
    cost = {
        "requests": len(preds),
        "prompt_tokens_per_request": sum(x.prompt_tokens for x in preds) / n,
        "completion_tokens_per_request": sum(x.completion_tokens for x in preds) / n,
        "cached_share": sum(x.cached for x in preds) / n,
        "shots_dropped": sum(x.shots_dropped for x in preds),
    }
    return Report(metrics, confusion, task.labels if task.kind == "classify" else None, cost)
