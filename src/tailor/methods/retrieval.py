"""Knowledge-base arms: retrieval-augmented generation (Lewis et al. 2020) and LoRA trained on
retrieved context (RAFT, Zhang et al. 2024). Both keep their retriever in the recipe
(`{kb, kb_id, k, retriever}`), so a saved arm reloads, evaluates and serves with the same
knowledge base, and refuses one that has changed since it was measured.

- `rag`: the top-k passages of the question, numbered in the prompt (the one prompt builder;
  least relevant dropped first when over budget, counted); generate tasks are asked to cite [n].
- `rag+lora`: LoRA trained on prompts that carry the gold passage among distractors (the gold kept
  in `gold_share` of the examples, 80% as in RAFT, so the model also learns to answer when the
  retriever misses), then evaluated with real retrieval.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from ..errors import TailorError
from ..knobs import choices
from ..recipe import Recipe
from ..schema import Options
from .base import Adapted, base_recipe
from .finetune import LoRA
from .prompting import _Calibrated, _Prompting

Retrieval = Literal["hybrid", "bm25", "dense"]
CITE = " Use the numbered context passages, and cite the passage you used as [n]."


def open_retriever(kb: str | None, task, base, k: int, kind: str):
    """The retriever over `kb` (a folder built by tailor index, or a bundled knowledge base, built
    into the cache on first use with the base's tokenizer), or the task's own knowledge base."""
    from ..datasets.knowledge import BUNDLED_KBS, bundled_documents
    from ..retrieval import Chunker, KnowledgeBase, Retriever, build
    from ..retrieval.chunking import tokenizer_id
    from ..utils import cache_dir
    spec = kb or task.knowledge
    if not spec:
        raise TailorError(f"the {task.name} task has no knowledge base: set kb: to a folder built by "
                          f"tailor index, or to a bundled one ({', '.join(BUNDLED_KBS)})")
    if spec in BUNDLED_KBS:
        folder = cache_dir("kb", f"{spec}-{tokenizer_id(base.tokenizer)}")   # chunks count this tokenizer's tokens
        try:
            return Retriever(KnowledgeBase.open(folder), k, kind)
        except TailorError:   # not built yet, or by another Tailor: (re)built, reusing what embeddings it can
            build(bundled_documents(spec), folder, Chunker(base.tokenizer), source=spec)
            return Retriever(KnowledgeBase.open(folder), k, kind)
    return Retriever(KnowledgeBase.open(Path(spec)), k, kind)


def rag_instruction(task, cite: bool) -> str:
    return task.instruction + (CITE if cite and task.kind == "generate" else "")


class _Knowledge(Options):
    """What both arms share: their knowledge-base options, their prompt, their reloaded retriever."""

    kb: str | None = None
    k: int = Field(4, gt=0)
    retriever: Retrieval = "hybrid"
    cite: bool = True

    def knobs(self) -> dict:
        return {**super().knobs(), "k": choices(self.k, 1, 2, 4, 8),
                "retriever": choices(self.retriever, "bm25", "dense", "hybrid")}

    def _retriever_and_builder(self, task, base):
        from ..prompts import builder_for
        retriever = open_retriever(self.kb, task, base, self.k, self.retriever)
        builder = builder_for(task, base.tokenizer, getattr(base.model, "config", None))
        builder.instruction = rag_instruction(task, self.cite)
        return retriever, builder

    @classmethod
    def load(cls, recipe: Recipe, pool, folder, base) -> Adapted:
        from ..retrieval import Retriever
        adapted = super().load(recipe, pool, folder, base)   # the family's own load (prompting, LoRA)
        adapted.passages = Retriever.from_spec(recipe.retriever)
        return adapted


class RAG(_Knowledge, _Calibrated, _Prompting):
    method: ClassVar[str] = "rag"

    def fit(self, task, base, out=None, *, cache=None, **_) -> Adapted:
        self._check_calibrate(task)
        retriever, builder = self._retriever_and_builder(task, base)
        recipe = base_recipe(self, task, base, builder, retriever=retriever.spec())
        # the prompting family's load, with the retriever just opened (not opened a second time from its spec)
        adapted = super(_Knowledge, type(self)).load(recipe, [], None, base)
        adapted.passages = retriever
        return self._calibrated(adapted, task, cache)   # each calibration input's own passages


class RAGLoRA(_Knowledge, LoRA):
    method: ClassVar[str] = "rag+lora"
    trains_on_pool: ClassVar[bool] = False   # rows with retrieved passages, not the plain pool
    gold_share: float = Field(0.8, ge=0, le=1)

    def fit(self, task, base, out: Path | None = None, *, progress: bool = True, budget_s: float | None = None,
            resume: str | None = None, **_) -> Adapted:
        import torch

        from ..train.data import encode_examples
        from ..train.loop import train, train_pool
        from .finetune import log
        retriever, builder = self._retriever_and_builder(task, base)
        rows = train_pool(task, self)
        passages, kept_gold = raft_passages(rows, retriever, self.k, self.gold_share, self.seed)
        data, report = encode_examples(builder, rows, self.seq_len, self.overlong, passages=passages)
        log.info("%s: %d training prompts with %d passages each, the gold passage in %d (%.0f%%)", self.method,
                 len(data), self.k, kept_gold, 100 * kept_gold / max(len(rows), 1))
        torch.manual_seed(self.seed)
        model = self.trainable_model(task, base)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        result = train(model, base.tokenizer, builder, task, self, out, data=data, tag=self.method, progress=progress,
                       resume=resume, budget_s=budget_s, passages_for=retriever)
        train_info = {**result.to_json(), "encode": report.to_json(), "gold_passage_kept": kept_gold}
        adapted = self.trained_arm(model, task, base, builder, train_info, trainable, retriever=retriever.spec())
        adapted.passages = retriever
        return adapted


def raft_passages(rows, retriever, k: int, gold_share: float, seed: int) -> tuple[list[list[str]], int]:
    """Each training row's k passages: with probability `gold_share` its gold passage (the best
    retrieved chunk of a gold document, or the document's first chunk) at a random place among
    k-1 retrieved distractors; otherwise k distractors. Rows that name no gold document get what
    the retriever returns. Seeded per row id, so a rerun trains on the same prompts."""
    kb = retriever.kb
    first_chunk: dict[str, int] = {}
    for i, c in enumerate(kb.chunks):
        first_chunk.setdefault(c.doc_id, i)
    hits = retriever.search([ex.input_text for ex in rows], k + 4)
    out, kept = [], 0
    from ..retrieval.kb import search_text
    for ex, found in zip(rows, hits):
        gold_docs = set(ex.meta.get("gold_passages") or [])
        rng = random.Random(f"{seed}:{ex.id}")
        distractors = [p.text for p in found if p.doc_id not in gold_docs][:k]
        if not gold_docs:
            out.append([p.text for p in found[:k]])
            continue
        gold = next((p.text for p in found if p.doc_id in gold_docs), None)
        if gold is None:
            doc = next((d for d in sorted(gold_docs) if d in first_chunk), None)
            gold = search_text(kb.chunks[first_chunk[doc]]) if doc else None
        if gold is not None and rng.random() < gold_share:
            shown = distractors[:k - 1]
            shown.insert(rng.randrange(len(shown) + 1), gold)
            kept += 1
        else:
            shown = distractors[:k]
        out.append(shown)
    return out, kept
