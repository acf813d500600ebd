"""Graders in OpenAI's grader JSON shapes: string_check, text_similarity, score_model, label_model,
python and multi (one file per kind), each a typed spec with `grade(samples, items) -> scores`.

    from tailor.graders import load_grader, item_of
    grader = load_grader("grader.json")            # or a dict; errors are one line naming file and field
    scores = grader.grade(samples, [item_of(ex) for ex in rows])   # one float per sample

A kind registers itself by subclassing `base.Grader` with `kind: ClassVar[str] = "name"` in a
module of this package; every module here is imported below, so a new file is all a new kind
takes. Importing this package is light (no torch): model judges load their model when they grade.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import GRADERS, Grader, grade_predictions, item_of, load_grader, sample_of, task_grader

# every module of the package, imported for the grader kinds it registers (a new kind is a new file)
for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _mod != "base":
        importlib.import_module(f"{__name__}.{_mod}")

__all__ = ["GRADERS", "Grader", "grade_predictions", "item_of", "load_grader", "sample_of", "task_grader"]
