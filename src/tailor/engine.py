"""The engine: the only code that runs a model for inference.

- batched greedy or sampled generation with stop strings, max tokens and EOS;
- choice scoring by log-likelihood: each prompt runs once together with all of its options
  (one row, a tree-shaped attention mask), so the prompt is never recomputed per option, and a
  prefix every prompt shares runs once per call;
- many LoRA adapters over one base: each request may name an adapter, and rows of different
  adapters share one forward over the base (peft's mixed-adapter batches: the base's matmuls run
  once for the whole batch, each adapter's low-rank update on its own rows);
- a persistent SQLite result cache keyed by the weights each request ran on (its adapter's),
  prompt and decoding parameters;
- per-request token counts for cost accounting.
"""

from __future__ import annotations

import contextlib
import copy
import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .decode import Decoder, Sequence, end_tokens, last_position, left_pad, rng_seed, shared_start, supported
from .lora_rows import RowLoRA
from .progress import Meter
from .tree import additive_mask, tree_rows
from .utils import cache_dir, sha256_text


@dataclass
class Echo:
    """A prompt scored token by token (and with max_tokens 1, the token drawn after it): what an
    OpenAI completions request with echo and logprobs returns."""
    text: str            # the prompt's text (a token-id prompt decoded), then the drawn token's
    tokens: list         # (token text, log-probability or None, character offset, {alternative: log-probability} or None)
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float  # from the request joining the decoder to its last token (the batch's wall time
                      # where transformers' generate runs)
    finish_reason: str = "stop"
    cached: bool = False


@dataclass
class ChoiceScores:
    logprobs: list[float]  # sum of token log-probabilities of each option
    n_tokens: list[int]
    prompt_tokens: int
    latency_s: float
    cached: bool = False
    # how the scores were made where not by log-likelihood (a remote endpoint without log-
    # probabilities); kept with the result, so a replayed result is counted as the computed one was
    notes: list[str] = field(default_factory=list)

    @property
    def mean_logprobs(self) -> list[float]:
        return [lp / max(n, 1) for lp, n in zip(self.logprobs, self.n_tokens)]


@dataclass
class TopK:
    """The k most likely tokens at each position of a continuation, given everything before it
    (a distillation teacher's soft targets: k per position, not the whole vocabulary)."""
    ids: list[list[int]]         # [positions][k]
    logprobs: list[list[float]]  # [positions][k], log-softmax over the whole vocabulary
    prompt_tokens: int
    latency_s: float
    cached: bool = False


@dataclass
class Reward:
    score: float
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cached: bool = False


class ResultCache:
    """key -> JSON result, in one SQLite file. Safe across threads and processes."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else cache_dir() / "engine.sqlite"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT)")
        self._db.commit()

    def get_many(self, keys: list[str]) -> dict[str, dict]:
        out = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                q = f"SELECT key, value FROM results WHERE key IN ({','.join('?' * len(chunk))})"
                out.update({k: json.loads(v) for k, v in self._db.execute(q, chunk)})
        return out

    def put_many(self, items: dict[str, dict]) -> None:
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?)",
                                 [(k, json.dumps(v)) for k, v in items.items()])
            self._db.commit()


BASE = "__base__"   # peft's name for "no adapter" in a mixed batch


class Engine:
    """Runs `model` for inference. `adapters` (peft adapter name -> weights id) makes it an
    engine of one base with many LoRA adapters loaded into `model` (a PeftModel): a request
    names its adapter, or None for the bare base (`weights_id` is then the base's). Without
    `adapters`, every request runs on `model` as it is."""

    def __init__(self, model, tokenizer, weights_id: str, cache: ResultCache | None = None,
                 batch_size: int = 16, max_batch_tokens: int = 8192, progress: bool = True,
                 adapters: dict[str, str] | None = None):
        self.model, self.tok, self.weights_id = model, tokenizer, weights_id
        self.adapters = dict(adapters or {})
        self.cache = cache
        self.batch_size, self.max_batch_tokens, self.progress = batch_size, max_batch_tokens, progress
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.notes: dict[str, int] = {}   # fallbacks taken, counted: measurements report them
        # prompt tokens the decoder prefilled, and those whose keys and values it reused from an
        # earlier prompt's identical start (instruction, chat template, fixed shots)
        self.prompt_tokens = {"prefilled": 0, "reused": 0}
        self._row_lora = None
        if self.adapters:
            self._row_lora = RowLoRA.attach(model, list(self.adapters))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False).input_ids

    # ------------------------------------------------------------ cache plumbing

    def _key(self, op: str, prompt: str, params: dict, adapter: str | None) -> str:
        weights = self.weights_id if adapter is None else self.adapters[adapter]
        return sha256_text(json.dumps([weights, op, prompt, params], sort_keys=True))

    def _adapters_of(self, n: int, adapters) -> list[str | None]:
        names = list(adapters) if adapters is not None else [None] * n
        if len(names) != n:
            raise ValueError(f"{len(names)} adapter names for {n} requests")
        unknown = sorted({a for a in names if a is not None and a not in self.adapters})
        if unknown:
            raise KeyError(f"unknown adapter(s) {', '.join(unknown)} (loaded: {', '.join(self.adapters) or 'none'})")
        return names

    def rows(self, names: list[str | None]):
        """Within the block, row i of every forward runs adapter names[i]: through the stacked
        adapters of `lora_rows` (plain LoRA), else peft's mixed-batch forward (`adapter_names`)."""
        if not self.adapters:
            return contextlib.nullcontext()
        if self._row_lora is not None:
            return self._row_lora.rows(names, self.device)
        return self.model._enable_peft_forward_hooks(adapter_names=[BASE if a is None else a for a in names])

    def _cached_run(self, op, prompts, params_list, adapters, compute, cls, desc):
        keys = [self._key(op, p, params, a) for p, params, a in zip(prompts, params_list, adapters)]
        found = self.cache.get_many(keys) if self.cache else {}
        results = [cls(**found[k], cached=True) if k in found else None for k in keys]
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            with Meter(len(todo), desc, self.progress) as meter:
                fresh = compute(todo, meter)
            for i, r in zip(todo, fresh):
                results[i] = r
            if self.cache:
                self.cache.put_many({keys[i]: _stored(r) for i, r in zip(todo, fresh)})
        for r in results:
            for note in getattr(r, "notes", ()):
                self.notes[note] = self.notes.get(note, 0) + 1
        return results

    def _batches(self, order: list[int], lengths: dict[int, int]):
        """Length-sorted batches bounded by count and padded tokens (padding wastes compute)."""
        order = sorted(order, key=lambda i: lengths[i])
        batch: list[int] = []
        for i in order:
            if batch and (len(batch) >= self.batch_size
                          or lengths[i] * (len(batch) + 1) > self.max_batch_tokens):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    # ------------------------------------------------------------ choice scoring

    def score(self, prompts: list[str], options: list[list[str]], adapters=None) -> list[ChoiceScores]:
        """Log-likelihood of each option as the continuation of its prompt (request i on
        adapter adapters[i])."""
        names = self._adapters_of(len(prompts), adapters)
        params = [{"options": opts} for opts in options]
        return self._cached_run("score", prompts, params, names,
                                lambda todo, meter: self._score(prompts, options, names, todo, meter),
                                ChoiceScores, "scoring")

    @torch.inference_mode()
    def _score(self, prompts, options, names, todo, meter) -> list[ChoiceScores]:
        enc = {i: self.encode(prompts[i]) for i in todo}
        opt_ids = {i: [self.encode(o) for o in options[i]] for i in todo}
        cost = {i: len(enc[i]) + sum(len(o) for o in opt_ids[i]) for i in todo}
        prefix = self._shared_prefix([enc[i] for i in todo], sorted({names[i] for i in todo}, key=str))
        out: dict[int, ChoiceScores] = {}
        for batch in self._batches(todo, cost):
            t0 = time.perf_counter()
            with self.rows([names[i] for i in batch]):
                sums = self._score_batch([enc[i] for i in batch], [opt_ids[i] for i in batch], prefix,
                                         [names[i] for i in batch])
            dt = time.perf_counter() - t0
            for i, s in zip(batch, sums):
                out[i] = ChoiceScores(s, [len(o) for o in opt_ids[i]], len(enc[i]), dt)
            meter.update(len(batch), sum(cost[i] for i in batch))
        return [out[i] for i in todo]

    def _shared_prefix(self, seqs: list[list[int]], adapters: list[str | None], min_tokens: int = 16):
        """The token prefix every prompt shares (instruction, fixed few-shot examples), run once
        per call and adapter instead of once per prompt; None when too short to be worth it.
        Returns (length, cache with one row per adapter, adapter -> row)."""
        if len(seqs) < 2 or _is_prompt_learning(self.model):
            return None
        n = min(len(s) for s in seqs) - 1  # each prompt keeps at least one token of its own
        for s in seqs[1:]:
            n = shared_start(seqs[0], s, n)
        if n < min_tokens:
            return None
        ids = torch.tensor([seqs[0][:n]] * len(adapters), device=self.device)
        with self.rows(adapters):
            cache = self.model(input_ids=ids, use_cache=True, logits_to_keep=last_position(ids)).cache
        return n, cache, {a: r for r, a in enumerate(adapters)}

    def _score_batch(self, prompts: list[list[int]], options: list[list[list[int]]], prefix=None,
                     names=None) -> list[list[float]]:
        n_pre = prefix[0] if prefix else 0
        longest = n_pre + max(len(p) - n_pre + sum(map(len, o)) for p, o in zip(prompts, options))
        if _is_prompt_learning(self.model) or not _tree_mask_ok(self.model, longest):
            return self._score_batch_whole(prompts, options)
        return self._score_batch_tree(prompts, options, prefix, names or [None] * len(prompts))

    def _score_batch_tree(self, prompts, options, prefix, names) -> list[list[float]]:
        """Each prompt and all of its options in ONE row (`tailor.tree`): every option sees the
        prompt and its own earlier tokens only, with positions restarting after the prompt for
        each option. So a prompt runs once however many options it has, the whole batch is one
        forward pass with no KV copies, and only the hidden states that predict an option token
        are projected onto the vocabulary (the 49k-wide head is a large share of the work on
        short options)."""
        n_pre, cache = 0, None
        if prefix is not None:
            n_pre, shared, row_of = prefix
            cache = copy.deepcopy(shared)
            # The shared prefix (computed once per call and adapter) is visible to every row.
            cache.batch_select_indices(torch.tensor([row_of[a] for a in names], dtype=torch.long, device=self.device))
        t = tree_rows([[(p[n_pre:], opts)] for p, opts in zip(prompts, options)], self.pad_id, offset=n_pre)
        dtype = next(self.model.parameters()).dtype
        causal_lm = causal_lm_of(self.model)
        hidden = causal_lm.get_decoder()(input_ids=t.ids.to(self.device), position_ids=t.positions.to(self.device),
                                         attention_mask=additive_mask(t.allowed, dtype, n_pre).to(self.device),
                                         cache=cache, use_cache=False).last_hidden_state
        picked = hidden[t.rows.to(self.device), t.cols.to(self.device)]
        lp = torch.log_softmax(head_logits(causal_lm, picked).float(), -1)
        lp = lp.gather(-1, t.labels.to(self.device)[:, None]).squeeze(-1)
        sums = torch.zeros(t.n_sequences, device=self.device).index_add_(0, t.sequence.to(self.device), lp).tolist()
        out, r = [], 0
        for opts in options:
            out.append(sums[r:r + len(opts)])
            r += len(opts)
        return out

    def _score_batch_whole(self, prompts, options) -> list[list[float]]:
        """Each prompt + option as its own plain causal sequence, right-padded (positions as in
        training), projecting only the columns that predict option tokens. For soft prompts and
        prefixes (peft prompt learning prepends virtual tokens on every forward call, so no
        custom mask fits) and for rows a sliding-window attention would see differently."""
        seqs = [(b, p + o, len(p), len(o)) for b, (p, opts) in enumerate(zip(prompts, options)) for o in opts]
        width = max(len(s) for _, s, _, _ in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, (_, s, _, _) in enumerate(seqs):
            ids[r, :len(s)] = torch.tensor(s)
            mask[r, :len(s)] = 1
        virtual = self.model.active_peft_config.num_virtual_tokens if _adds_virtual_tokens(self.model) else 0
        start = min(pl for _, _, pl, _ in seqs) - 1
        keep = torch.arange(start, width - 1, device=self.device)
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                            logits_to_keep=keep + virtual, use_cache=False).logits.float()
        lp = torch.log_softmax(logits, -1)
        out: list[list[float]] = [[] for _ in prompts]
        for r, (b, s, pl, ol) in enumerate(seqs):
            cols = torch.arange(pl - 1, pl - 1 + ol) - start
            out[b].append(lp[r, cols, torch.tensor(s[pl:pl + ol])].sum().item())
        return out

    # ------------------------------------------------------------ top-k continuation scores

    def top_logprobs(self, prompts: list[str], continuations: list[str], k: int) -> list[TopK]:
        """For each prompt, the top-k tokens and log-probabilities at every position of its
        continuation (teacher-forced: position j sees the continuation's first j tokens). The
        prompt and continuation are encoded separately, as `score` and training encode them."""
        params = [{"continuation": c, "k": k} for c in continuations]
        return self._cached_run("topk", prompts, params, [None] * len(prompts),
                                lambda todo, meter: self._top_logprobs(prompts, continuations, k, todo, meter),
                                TopK, "teacher top-k")

    @torch.inference_mode()
    def _top_logprobs(self, prompts, continuations, k, todo, meter) -> list[TopK]:
        enc = {i: (self.encode(prompts[i]), self.encode(continuations[i])) for i in todo}
        cost = {i: len(p) + len(c) for i, (p, c) in enc.items()}
        out: dict[int, TopK] = {}
        for batch in self._batches(todo, cost):
            t0 = time.perf_counter()
            width = max(cost[i] for i in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, i in enumerate(batch):   # right-padded: positions as in training
                seq = enc[i][0] + enc[i][1]
                ids[r, :len(seq)], mask[r, :len(seq)] = torch.tensor(seq), 1
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                use_cache=False).logits
            dt = time.perf_counter() - t0
            virtual = self.model.active_peft_config.num_virtual_tokens if _adds_virtual_tokens(self.model) else 0
            for r, i in enumerate(batch):
                prompt, cont = enc[i]
                at = virtual + len(prompt) - 1
                rows = torch.log_softmax(logits[r, at:at + len(cont)].float(), -1)
                top = rows.topk(min(k, rows.shape[-1]), -1)
                out[i] = TopK(top.indices.tolist(), [[round(x, 5) for x in row] for row in top.values.tolist()],
                              len(prompt), dt)
            meter.update(len(batch), sum(cost[i] for i in batch))
        return [out[i] for i in todo]

    # ------------------------------------------------------------ prompt log-probabilities

    @torch.inference_mode()
    def echo(self, prompts: list[str | list[int]], adapters=None, top: list[int] | None = None,
             sample: list[tuple[float, float, int] | None] | None = None) -> list[Echo]:
        """A completions request with `echo` and `logprobs`, as OpenAI and vLLM answer it: each
        prompt's tokens (a text's own, or token ids exactly as given) with the log-probability of
        each given the ones before (None for the first), its `top[i]` likeliest alternatives (the
        token itself always among them, as vLLM does), its character offset; with `sample[i]`
        (temperature, top_p, seed) one more token drawn from the distribution after the prompt
        (max_tokens 1: lm-evaluation-harness's loglikelihood request), in the same forward."""
        names = self._adapters_of(len(prompts), adapters)
        top = list(top) if top is not None else [0] * len(prompts)
        sample = list(sample) if sample is not None else [None] * len(prompts)
        ends = end_tokens(self.model, self.tok)
        out = []
        for i in range(0, len(prompts), self.batch_size):
            seqs, offsets = [], []
            for p in prompts[i:i + self.batch_size]:
                if isinstance(p, str):
                    e = self.tok(p, add_special_tokens=False, return_offsets_mapping=True)
                    seqs.append(list(e.input_ids))
                    offsets.append([o[0] for o in e.offset_mapping])
                else:
                    seqs.append(list(p))
                    offsets.append(None)
            width = max(1, max(map(len, seqs)))
            x = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, seq in enumerate(seqs):
                x[r, :len(seq)] = torch.tensor(seq, dtype=torch.long)
                mask[r, :len(seq)] = 1
            with self.rows(names[i:i + self.batch_size]):
                logits = self.model(input_ids=x.to(self.device), attention_mask=mask.to(self.device),
                                    use_cache=False).logits
            for r, seq in enumerate(seqs):
                k, s = top[i + r], sample[i + r]
                lp = torch.log_softmax(logits[r, :len(seq)].float(), -1).cpu()   # row j: the token after j
                ids = list(seq)
                if s is not None:
                    ids.append(self._draw(lp[-1], *s))
                pieces = [self.tok.convert_tokens_to_string([p]) for p in self.tok.convert_ids_to_tokens(ids)]
                text = self.tok.decode(seq) if offsets[r] is None else prompts[i + r]
                starts = offsets[r] if offsets[r] is not None else [sum(map(len, pieces[:j])) for j in range(len(seq))]
                tokens = []
                for j, tid in enumerate(ids):
                    if j == 0:
                        tokens.append((pieces[0], None, starts[0], None))
                        continue
                    row = lp[j - 1]
                    alts = {int(t): float(v) for v, t in zip(*row.topk(k))} if k else {}
                    alts.setdefault(tid, float(row[tid]))
                    start = starts[j] if j < len(seq) else len(text)
                    tokens.append((pieces[j], float(row[tid]), start,
                                   {self.tok.convert_tokens_to_string([self.tok.convert_ids_to_tokens(t)]): v
                                    for t, v in alts.items()}))
                generated = ids[len(seq):]
                out.append(Echo(text + self.tok.decode(generated), tokens, len(seq), len(generated),
                                "stop" if generated and generated[0] in ends else "length"))
        return out

    @staticmethod
    def _draw(logprobs: torch.Tensor, temperature: float, top_p: float, seed: int) -> int:
        """One token from a next-token distribution: the likeliest at temperature 0, else sampled
        (nucleus top_p) from a generator seeded by the request."""
        if temperature <= 0:
            return int(logprobs.argmax())
        probs = torch.softmax(logprobs / max(temperature, 1e-6), -1)
        if top_p < 1:
            sorted_p, order = probs.sort(descending=True)
            keep = sorted_p.cumsum(-1) - sorted_p < top_p   # the smallest set reaching top_p (the first always)
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
        gen = torch.Generator().manual_seed(rng_seed(seed))
        return int(torch.multinomial(probs, 1, generator=gen))

    # ------------------------------------------------------------ rewards

    def reward(self, prompts: list[str], completions: list[str], adapters=None) -> list[Reward]:
        """A reward model's score of each completion of its prompt (`model`: a sequence
        classifier with one output, e.g. a `reward-model` arm). Prompt and completion are
        encoded separately, as training encodes them (the completion as the prompt builder's
        `target_text`, with its end-of-turn)."""
        names = self._adapters_of(len(prompts), adapters)
        params = [{"completion": c} for c in completions]
        return self._cached_run("reward", prompts, params, names,
                                lambda todo, meter: self._reward(prompts, completions, names, todo, meter),
                                Reward, "rewarding")

    @torch.inference_mode()
    def _reward(self, prompts, completions, names, todo, meter) -> list[Reward]:
        enc = {i: (self.encode(prompts[i]), self.encode(completions[i])) for i in todo}
        cost = {i: len(p) + len(c) for i, (p, c) in enc.items()}
        out: dict[int, Reward] = {}
        for batch in self._batches(todo, cost):
            t0 = time.perf_counter()
            seqs = [enc[i][0] + enc[i][1] for i in batch]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, s in enumerate(seqs):
                ids[r, :len(s)] = torch.tensor(s)
                mask[r, :len(s)] = 1
            with self.rows([names[i] for i in batch]):
                scores = last_token_scores(self.model, ids.to(self.device), mask.to(self.device)).float().tolist()
            dt = time.perf_counter() - t0
            for i, s in zip(batch, scores):
                out[i] = Reward(s, len(enc[i][0]), len(enc[i][1]), dt)
            meter.update(len(batch), sum(cost[i] for i in batch))
        return [out[i] for i in todo]

    # ------------------------------------------------------------ generation

    def generate(self, prompts: list[str], max_new_tokens: int = 64, temperature: float = 0.0,
                 top_p: float = 1.0, stop: list[str] | tuple = (), seed: int | list[int] = 0,
                 adapters=None) -> list[Generation]:
        """`seed`: one for every request, or one per request (GRPO samples a group of answers to
        one prompt: the same prompt under different seeds)."""
        names = self._adapters_of(len(prompts), adapters)
        seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed] * len(prompts)
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} requests")
        params = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "stop": list(stop)}
        per_row = [{**params, "seed": s if temperature > 0 else None} for s in seeds]
        return self._cached_run("generate", prompts, per_row, names,
                                lambda todo, meter: self._generate(prompts, names, todo, per_row, meter),
                                Generation, "generating")

    def _generate(self, prompts, names, todo, per_row, meter) -> list[Generation]:
        params = per_row[todo[0]] if todo else {}
        if not supported(self.model):
            return self._generate_static(prompts, names, todo, per_row, meter)
        # Continuous batching: up to batch_size rows decode together, and a finished row's place
        # goes to the next prompt at once (shortest prompts first), not when the batch ends.
        queue = sorted(todo, key=lambda i: len(prompts[i]))
        decoder, out, started, rows = Decoder(self), {}, {}, {}
        while queue or decoder.busy:
            room = self.batch_size - len(decoder.rows)
            if queue and room > 0:
                joining = queue[:room]
                queue = queue[room:]
                for i in joining:
                    rows[i] = Sequence(self.encode(prompts[i]), names[i], params["max_new_tokens"], params["temperature"],
                                       params["top_p"], per_row[i]["seed"], params["stop"])
                    started[i] = time.perf_counter()
                decoder.join([rows[i] for i in joining])
            else:
                decoder.step()
            for i in [i for i in rows if i not in out and rows[i].done]:
                s = rows[i]
                out[i] = Generation(s.text, len(s.prompt), len(s.tokens), time.perf_counter() - started[i], s.finish_reason)
                meter.update(1, len(s.tokens))
        return [out[i] for i in todo]

    @torch.inference_mode()
    def _generate_static(self, prompts, names, todo, per_row, meter) -> list[Generation]:
        """transformers' generate, batch by batch: for models the decoder does not run (prompt
        learning adapters, sliding-window attention). A batch samples from one seeded generator,
        so rows of different seeds (GRPO's group of samples) go in batches of their own seed: a
        row's answer depends on its seed, never on which rows shared its batch."""
        params = per_row[todo[0]] if todo else {}
        enc = {i: self.encode(prompts[i]) for i in todo}
        cost = {i: len(enc[i]) + params["max_new_tokens"] for i in todo}
        eos = end_tokens(self.model, self.tok)
        out: dict[int, Generation] = {}
        by_seed: dict = {}
        for i in todo:
            by_seed.setdefault(per_row[i]["seed"], []).append(i)
        for batch in (b for rows in by_seed.values() for b in self._batches(rows, cost)):
            params = per_row[batch[0]]
            ids, mask = left_pad([enc[i] for i in batch], self.pad_id, self.device)
            if params["temperature"] > 0:
                torch.manual_seed(rng_seed(params["seed"]))
            t0 = time.perf_counter()
            with self.rows([names[i] for i in batch]):
                seqs = self.model.generate(
                    input_ids=ids, attention_mask=mask, max_new_tokens=params["max_new_tokens"],
                    do_sample=params["temperature"] > 0, temperature=params["temperature"] or None,
                    top_p=params["top_p"] if params["temperature"] > 0 else None, top_k=None,
                    eos_token_id=sorted(eos), pad_token_id=self.pad_id,
                    stop_strings=params["stop"] or None, tokenizer=self.tok if params["stop"] else None)
            dt = time.perf_counter() - t0
            new = seqs[:, ids.shape[1]:].tolist()
            n_new = 0
            for i, toks in zip(batch, new):
                gen = _until_eos(toks, eos, self.pad_id)
                text = self.tok.decode(gen, skip_special_tokens=True)
                finish = "stop" if len(gen) < len(toks) or (toks and toks[-1] in eos) else "length"
                for s in params["stop"]:
                    if s in text:
                        text, finish = text[:text.index(s)], "stop"
                n_new += len(gen)
                out[i] = Generation(text, len(enc[i]), len(gen), dt, finish)
            meter.update(len(batch), n_new)
        return [out[i] for i in todo]


def last_token_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """A sequence classifier's scores ([rows, labels], squeezed to [rows] for one label) read
    at the last REAL token of each right-padded row, found from the lengths (the mask), not from
    the pad id: SmolLM2's pad token is its end-of-turn token, which ends every completion, so
    transformers' "last token that is not pad" would read the token before it. Training and
    inference both score through here."""
    seq = causal_lm_of(model)
    hidden = getattr(seq, seq.base_model_prefix)(input_ids=input_ids, attention_mask=attention_mask,
                                                  use_cache=False).last_hidden_state
    last = attention_mask.sum(-1) - 1
    scores = seq.score(hidden[torch.arange(len(last), device=hidden.device), last])
    return scores.squeeze(-1) if scores.shape[-1] == 1 else scores


def causal_lm_of(model):
    """The transformers model under a peft wrapper (LoRA and IA3 layers sit inside it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def head_logits(causal_lm, hidden: torch.Tensor) -> torch.Tensor:
    """The vocabulary projection of the given hidden states only, with the model's final logit
    soft-capping where it has one (as its own forward would apply)."""
    logits = causal_lm.get_output_embeddings()(hidden)
    cap = getattr(causal_lm.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def _tree_mask_ok(model, length: int) -> bool:
    """A custom 4D mask needs an attention that takes arbitrary masks (sdpa, eager), and one mask
    serves every layer, so sliding-window layers must not be able to tell (rows within the
    window)."""
    config = causal_lm_of(model).config
    window = getattr(config, "sliding_window", None)
    return config._attn_implementation in ("sdpa", "eager") and (not window or length <= window)


def _is_prompt_learning(model) -> bool:
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def _adds_virtual_tokens(model) -> bool:
    """Prompt tuning puts virtual tokens into the sequence; prefix tuning only into the KV cache."""
    return str(getattr(getattr(model, "active_peft_config", None), "peft_type", "")).upper().endswith("PROMPT_TUNING")


def _until_eos(tokens: list[int], eos: set[int], pad: int) -> list[int]:
    """The completion: up to EOS, or up to the padding `generate` puts after a sequence that a
    stop string ended inside a batch (padding is not completion, and costs nothing)."""
    for n, t in enumerate(tokens):
        if t in eos or t == pad:
            return tokens[:n]
    return tokens


def _stored(result) -> dict:
    d = asdict(result)
    d.pop("cached", None)
    return d
