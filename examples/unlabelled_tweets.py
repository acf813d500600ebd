"""Writes tweets of the bundled tweet-sentiment task without their labels: the "unlabelled"
file of examples/tweet-distill-ladder.yaml. They come from the train split only (never dev or
test) and leave out the rows the ladder's arms train on (the seeded max_train_examples sample),
so the teacher labels tweets it has not seen.

    .venv/bin/python examples/unlabelled_tweets.py runs/tweets-unlabelled.jsonl --rows 10000
"""

import argparse
import json
import random

from tailor.datasets.bundled import tweet_sentiment
from tailor.utils import atomic_write_text

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--rows", type=int, default=10000)
parser.add_argument("--train-examples", type=int, default=2000, help="the arms' max_train_examples")
parser.add_argument("--seed", type=int, default=0, help="the arms' seed")
args = parser.parse_args()

train = tweet_sentiment().splits["train"]
trained = {ex.id for ex in random.Random(args.seed).sample(train, args.train_examples)}   # as train_pool draws
rest = [ex for ex in train if ex.id not in trained]
rows = random.Random(f"{args.seed}:unlabelled").sample(rest, min(args.rows, len(rest)))
atomic_write_text(args.out, "".join(json.dumps({"id": ex.id, "text": ex.input}, ensure_ascii=False) + "\n" for ex in rows))
print(f"{len(rows)} unlabelled tweets -> {args.out} ({len(rest) - len(rows)} more train tweets left unused)")
