"""Writes the NarrativeQA stories that the bundled task's test questions ask about as a .jsonl of
{id, title, text} records: the `documents` of the cpt arm in examples/cpt-ladder.yaml. Continued
pre-training then reads the very knowledge the test questions need, several times over (the best
case for it on a small budget); the rag arm searches all 101 stories.

    .venv/bin/python examples/cpt_documents.py runs/narrativeqa-test-stories.jsonl
"""

import argparse
import json

from tailor.datasets.knowledge import bundled_documents, narrativeqa
from tailor.utils import atomic_write_text

parser = argparse.ArgumentParser()
parser.add_argument("out")
args = parser.parse_args()

task = narrativeqa()
test = task.splits["test"]
asked = {ex.meta["document"] for ex in test}
stories = bundled_documents("narrativeqa")
docs = [d for d in stories if d.id in asked]
atomic_write_text(args.out, "".join(json.dumps({"id": d.id, "title": d.title, "text": d.text}, ensure_ascii=False) + "\n"
                                    for d in docs))
print(f"{len(docs)} stories asked about by {len(test)} test questions -> {args.out} "
      f"(the other {len(stories) - len(docs)} stories are left out)")
