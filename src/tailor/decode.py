"""Decoding many sequences at once, with sequences joining and leaving between steps.

A `Decoder` holds the running batch: one KV cache, left-padded, with an attention mask marking
each row's real tokens. `join` prefills new sequences together (one forward) and merges their
cache into the running batch; `step` runs one forward over every row's last token and picks each
row's next token (greedy, or sampled with the row's own seeded generator); rows that finish leave.
So a server can let a new request join a batch that is mid-generation (continuous batching) and
a batch job runs the same code; rows of different LoRA adapters share every forward (the
engine's mixed-adapter rows).

What a row gets is what it would get alone: its positions count its own tokens only, padding is
masked, and its sampling draws from its own generator.

Prompts of one arm start alike (its instruction, chat template, fixed examples): a prompt that
begins with at least `REUSE_MIN` tokens of an earlier prompt of the same adapter reuses their keys
and values instead of prefilling them again (vLLM's automatic prefix caching, in its simplest
form: one remembered prompt per adapter, the longest of the last prefill that reused nothing).
Rows that join together with nothing to reuse (a batch job's chunk, a burst of requests) let one
of them lead: its prompt is prefilled first, and the others reuse its start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

# transformers (heavy) is imported where a cache is built: modules that only name the engine
# (evaluate, measure) do not load it

@dataclass
class Sequence:
    prompt: list[int]
    adapter: str | None = None
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    on_text: Callable[..., None] | None = None   # receives the text as it grows (streaming); with `logprobs`,
                                                   # also the `scored` entries of the tokens that text completes
    # Log-probabilities of the generated tokens, for the rows that ask (None: not recorded, nothing
    # computed): per token, its log-probability and its `logprobs` likeliest alternatives. As vLLM
    # reports them by default (its V1 sampler's logprobs_mode "raw_logprobs": "the original logits,
    # before any penalties or temperature scaling") and as OpenAI documents them (the model's
    # log-probability of the token): log_softmax of the model's logits in float32, before temperature
    # and top_p, whatever the row samples with. So a temperature-0 token is its distribution's top-1,
    # and a token drawn at temperature 1.5 reports the model's own probability of it, not the flattened one.
    logprobs: int | None = None
    scored: list = field(default_factory=list)     # per token in `tokens`: (token, piece, logprob, [(id, logprob)...])
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None               # "stop" (EOS or a stop string) | "length" | "cancelled"
    _sent: int = 0
    _gen: torch.Generator | None = None
    _prefix: int = 0     # incremental detokenising: tokens[_prefix:_read] were decoded last time
    _read: int = 0
    _sent_scored: int = 0  # streaming with logprobs: entries of `scored` already handed to on_text

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


REUSE_MIN = 16      # a shorter shared start saves too little prefill to track
REMEMBER_MAX = 4096  # the longest prompt remembered for reuse (its keys and values, one row)
LEAD_MIN = 64       # the reusable tokens a leader must bring its followers to earn its own forward


class Decoder:
    """Runs over an engine (`tailor.engine.Engine`): its model and tokenizer, its padding id and
    device, its `rows` (which adapter each row of a forward runs) and its prompt-token counts."""

    def __init__(self, engine):
        self.engine, self.model, self.tok = engine, engine.model, engine.tok
        self.eos = end_tokens(self.model, self.tok)
        # an empty prompt starts from the beginning-of-text token (GPT-2-style tokenizers have none
        # of their own: their end-of-text token is both)
        start = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id
        self.start = [start] if start is not None else []
        self.rows: list[Sequence] = []
        self.cache = None
        self.mask: torch.Tensor | None = None   # [rows, width]: 1 on real tokens
        self._remembered: dict[str | None, tuple[list[int], list]] = {}   # adapter -> (prompt, [(keys, values)])

    @property
    def busy(self) -> bool:
        return bool(self.rows)

    @torch.inference_mode()
    def join(self, seqs: list[Sequence]) -> None:
        """Prefills `seqs` and adds them to the running batch: prompts of near-equal length share
        a forward (left-padded), others get their own, so no prefill computes much padding; a
        prompt that starts like its adapter's remembered one prefills only the rest."""
        seqs = [s for s in seqs if not s.done]
        for s in seqs:
            if s.max_new_tokens < 1:
                s.finish_reason = "length"
            if not s.prompt:
                s.prompt = list(self.start)
        seqs = [s for s in seqs if not s.done]
        leaders = self._leaders(seqs)
        for group in _prefill_groups(leaders):
            self._prefill(group, [0] * len(group))
        seqs = [s for s in seqs if all(s is not x for x in leaders)]
        reuse = {id(s): self._reusable(s) for s in seqs}
        # the starts `reuse` was counted against: a group's prefill may remember another start for its
        # adapter (a shorter prompt), whose cache a later group's rows must not read (found by
        # bench/serve_soak.py: "expanded size of the tensor (26) must match the existing size (5)")
        starts = dict(self._remembered)
        for group in _prefill_groups(seqs, lambda s: len(s.prompt) - reuse[id(s)]):
            self._prefill(group, [reuse[id(s)] for s in group], starts)

    def _leaders(self, seqs: list[Sequence]) -> list[Sequence]:
        """For each adapter with several joining rows and none able to reuse a remembered start:
        its longest prompt, when the starts the others share with it would spare at least
        `LEAD_MIN` tokens of prefill."""
        by_adapter: dict[str | None, list[Sequence]] = {}
        for s in seqs:
            by_adapter.setdefault(s.adapter, []).append(s)
        leaders = []
        for rows in by_adapter.values():
            if len(rows) < 2 or any(self._reusable(s) for s in rows):
                continue
            lead = max(rows, key=lambda s: len(s.prompt))
            if len(lead.prompt) > REMEMBER_MAX:
                continue
            shared = (shared_start(lead.prompt, s.prompt, len(s.prompt) - 1) for s in rows if s is not lead)
            if sum(n for n in shared if n >= REUSE_MIN) >= LEAD_MIN:
                leaders.append(lead)
        return leaders

    def _reusable(self, s: Sequence) -> int:
        """How many of `s`'s first tokens its adapter's remembered prompt shares (0: too few)."""
        if s.adapter not in self._remembered:
            return 0
        # the last token is always prefilled: its logits pick the first new one
        n = shared_start(self._remembered[s.adapter][0], s.prompt, len(s.prompt) - 1)
        return n if n >= REUSE_MIN else 0

    def _prefill(self, seqs: list[Sequence], reuse: list[int], starts: dict | None = None) -> None:
        """One forward over `seqs`' prompts, rows of any adapters. Row i's first `reuse[i]`
        tokens (shared with its adapter's remembered prompt) come from that prompt's cache,
        right-aligned in the widest reused span; the rest of the prompt is prefilled, left-padded
        after it. The padding is masked, so it may sit in the middle of a row."""
        from transformers import DynamicCache

        ids, mask = left_pad([s.prompt[n:] for s, n in zip(seqs, reuse)], self.engine.pad_id, self.engine.device)
        cache, width = DynamicCache(config=self.model.config), max(reuse)
        if width:
            starts = self._remembered if starts is None else starts
            spans = [(i, n, starts[s.adapter][1]) for i, (s, n) in enumerate(zip(seqs, reuse)) if n]
            for layer, (k, v) in enumerate(spans[0][2]):
                keys = k.new_zeros(len(seqs), k.shape[1], width, k.shape[3])
                values = v.new_zeros(len(seqs), v.shape[1], width, v.shape[3])
                for i, n, kv in spans:
                    keys[i, :, width - n:] = kv[layer][0][0, :, :n]
                    values[i, :, width - n:] = kv[layer][1][0, :, :n]
                cache.update(keys, values, layer)
            known = mask.new_zeros(len(seqs), width)
            for i, n, _ in spans:
                known[i, width - n:] = 1
            mask = torch.cat([known, mask], 1)
        with self.engine.rows([s.adapter for s in seqs]):
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask)[:, width:],
                             cache=cache, use_cache=True, logits_to_keep=last_position(ids))
        counts = self.engine.prompt_tokens
        counts["reused"] += sum(reuse)
        counts["prefilled"] += sum(len(s.prompt) - n for s, n in zip(seqs, reuse))
        self._remember([s for s, n in zip(seqs, reuse) if not n], [i for i, n in enumerate(reuse) if not n], out.cache)
        for s in seqs:
            if s.temperature > 0:
                s._gen = torch.Generator(device=ids.device).manual_seed(rng_seed(s.seed or 0))
        self._merge(out.cache, mask, seqs)
        self._advance(out.logits[:, -1], seqs)

    def _remember(self, seqs: list[Sequence], rows: list[int], cache) -> None:
        """Each adapter's longest prompt prefilled whole (`seqs`, rows `rows` of the cache, their
        real tokens its last columns): what later prompts of the adapter may reuse."""
        # rows come sorted by the tokens they prefill (for these, the whole prompt): the last is the longest
        longest = {s.adapter: (s, row) for s, row in zip(seqs, rows) if len(s.prompt) <= REMEMBER_MAX}
        for adapter, (s, row) in longest.items():
            n = len(s.prompt)
            self._remembered[adapter] = (list(s.prompt), [
                (layer.keys[row:row + 1, :, -n:].clone(), layer.values[row:row + 1, :, -n:].clone())
                for layer in cache.layers])

    @torch.inference_mode()
    def step(self) -> None:
        """One token for every running row (a row finished from outside, e.g. cancelled because
        its client left, is dropped first)."""
        if any(s.done for s in self.rows):
            self._keep([i for i, s in enumerate(self.rows) if not s.done])
        if not self.rows:
            return
        last = torch.tensor([[s.tokens[-1]] for s in self.rows], device=self.mask.device)
        positions = self.mask.sum(-1, keepdim=True)
        self.mask = torch.cat([self.mask, torch.ones_like(last)], -1)
        with self.engine.rows([s.adapter for s in self.rows]):
            out = self.model(input_ids=last, attention_mask=self.mask, position_ids=positions, cache=self.cache,
                             use_cache=True)
        self._advance(out.logits[:, -1], self.rows)

    def run(self, seqs: list[Sequence]) -> list[Sequence]:
        """Decodes `seqs` to the end (the batch path: everything joins at once)."""
        self.join(seqs)
        while self.busy:
            self.step()
        return seqs

    # ------------------------------------------------------------ internals

    def _advance(self, logits: torch.Tensor, seqs: list[Sequence]) -> None:
        """The next token of each of `seqs` (aligned with `logits`); finished rows leave."""
        for i, (s, t) in enumerate(zip(seqs, self._choose(logits, seqs))):
            # after the choice, from the same logits: recording never changes what a row samples
            self._append(s, t, None if s.logprobs is None else _logprob(logits[i], t, s.logprobs))
        keep = [i for i, s in enumerate(self.rows) if not s.done]
        if len(keep) < len(self.rows):
            self._keep(keep)

    def _choose(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        logits = logits.float()
        out = logits.argmax(-1).tolist()
        for i, s in enumerate(seqs):
            if s.temperature > 0:
                # shifted so the best logit is 0, and the temperature kept above float32's zero: a tiny
                # one (a client may send 5e-324) sharpens towards greedy instead of giving 0/0
                probs = torch.softmax((logits[i] - logits[i].max()) / max(s.temperature, 1e-6), -1)
                if s.top_p < 1.0:
                    sorted_p, order = probs.sort(descending=True)
                    # keep the smallest set whose mass reaches top_p (the first token always)
                    drop = sorted_p.cumsum(0) - sorted_p > s.top_p
                    probs[order[drop]] = 0
                out[i] = int(torch.multinomial(probs, 1, generator=s._gen))
        return out

    def _append(self, s: Sequence, token: int, scored: tuple[float, list] | None = None) -> None:
        end = token in self.eos
        if end:
            s.finish_reason = "stop"
        else:
            s.tokens.append(token)
            if len(s.tokens) >= s.max_new_tokens:
                s.finish_reason = "length"
        before = len(s.text)
        self._detokenize(s, final=s.done)
        if scored is not None:
            # each token's piece is the text it added (a token that starts a character another
            # completes adds "", the completing one the character), so the pieces join to the text;
            # the end token is not recorded (it adds no text and is not counted), what its final
            # flush adds goes to the last token
            if not end:
                s.scored.append((token, s.text[before:], *scored))
            elif s.scored and len(s.text) > before:
                t, piece, *rest = s.scored[-1]
                s.scored[-1] = (t, piece + s.text[before:], *rest)
        for stop in s.stop:
            if stop and stop in s.text:
                s.text, s.finish_reason = s.text[:s.text.index(stop)], "stop"
        if s.on_text is not None:
            # Hold back what could still become a stop string.
            hold = 0 if s.done else max((len(x) - 1 for x in s.stop), default=0)
            upto = len(s.text) - hold
            if s.logprobs is not None:
                self._stream_scored(s, upto)
            elif upto > s._sent:
                s.on_text(s.text[s._sent:upto])
                s._sent = upto

    @staticmethod
    def _stream_scored(s: Sequence, upto: int) -> None:
        """Streaming with logprobs: text is sent up to the last token boundary before `upto`, with
        the entries of the tokens it completes, so each chunk's pieces join to its text and the
        chunks' entries add up to `covered(s)`; when the row is done, the rest."""
        entries = covered(s) if s.done else s.scored
        k, end = s._sent_scored, s._sent
        while k < len(entries) and (s.done or end + len(entries[k][1]) <= upto):
            end += len(entries[k][1])
            k += 1
        if end > s._sent or (s.done and k > s._sent_scored):
            s.on_text(s.text[s._sent:end], entries[s._sent_scored:k])
            s._sent, s._sent_scored = end, k

    def _detokenize(self, s: Sequence, final: bool = False) -> None:
        """Appends the new tokens' text. Decoding all tokens at every step would cost O(n^2) per
        row; decoding from the last token boundary gives the same text, and a half-decoded
        character (U+FFFD) waits for the token that completes it (unless the row is done)."""
        before = self.tok.decode(s.tokens[s._prefix:s._read], skip_special_tokens=True)
        after = self.tok.decode(s.tokens[s._prefix:], skip_special_tokens=True)
        if len(after) > len(before) and (final or not after.endswith("\ufffd")):
            s.text += after[len(before):]
            s._prefix, s._read = s._read, len(s.tokens)

    def _merge(self, cache, mask: torch.Tensor, seqs: list[Sequence]) -> None:
        """Adds a prefilled batch to the running one: both are left-padded to one width."""
        if not self.rows:
            self.cache, self.mask, self.rows = cache, mask, list(seqs)
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for ours, theirs in zip(self.cache.layers, cache.layers):
            ours.keys = torch.cat([_pad_left(ours.keys, width), _pad_left(theirs.keys, width)])
            ours.values = torch.cat([_pad_left(ours.values, width), _pad_left(theirs.values, width)])
        self.mask = torch.cat([_pad_left(self.mask, width, dim=1), _pad_left(mask, width, dim=1)])
        self.rows += seqs

    def _keep(self, keep: list[int]) -> None:
        """Drops finished rows, and the columns no remaining row needs."""
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = self.mask = None
            return
        index = torch.tensor(keep, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        first = int((mask.cumsum(-1) == 0).sum(-1).min())   # leading columns that are padding in every row
        self.mask = mask[:, first:]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, first:]
            layer.values = layer.values.index_select(0, index)[:, :, first:]


def _logprob(logits: torch.Tensor, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
    """`token`'s log-probability under one row's next-token `logits` (float32 log_softmax of the raw
    logits, see `Sequence.logprobs`) and the `top` likeliest tokens, likeliest first: one
    log_softmax over the vocabulary, paid only by rows that ask."""
    lp = torch.log_softmax(logits.float(), -1)
    values, ids = lp.topk(top)
    return float(lp[token]), list(zip(ids.tolist(), values.tolist()))


def covered(s: Sequence) -> list[tuple]:
    """The `scored` entries of the tokens that make `s.text`, each (token, piece, logprob,
    alternatives). A stop string cuts the text, and with it the tokens: those whose pieces end
    within the returned text are kept, the one the cut falls inside is kept with its piece cut to
    the text's end, the rest are dropped (their text is not returned). So the pieces join to
    exactly `s.text`, and without a cut every generated token is there."""
    out, start = [], 0
    for token, piece, lp, top in s.scored:
        end = start + len(piece)
        if end > len(s.text):
            if start < len(s.text):
                out.append((token, piece[:len(s.text) - start], lp, top))
            break
        out.append((token, piece, lp, top))
        start = end
    return out


_MASK64 = (1 << 64) - 1


def rng_seed(seed: int) -> int:
    """A request's seed (any integer a client or a trainer sends) as the 32 bits torch's CPU
    generator keeps: it drops the high 32, so seeds that differ only there (GRPO's samples of two
    runs, `(run seed << 40) + ...`) would draw the same numbers. splitmix64's finaliser mixes all
    64 bits into the low 32, the same on every device."""
    z = (seed + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & 0xFFFFFFFF


def supported(model) -> bool:
    """Rows can join and leave a running batch when every layer's cache is a plain one (sliding-
    window layers keep a rolling buffer that cannot be padded and merged this way) and the model
    is no prompt-learning adapter (peft prepends its virtual tokens inside its own forward)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer
    if getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
        return False
    config = getattr(model, "get_base_model", lambda: model)().config
    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=config).layers)


def end_tokens(model, tok) -> set[int]:
    """The token ids that end a generation: the tokenizer's EOS and the model's generation config's."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    configured = [] if configured is None else list(configured) if isinstance(configured, (list, tuple)) else [configured]
    return {t for t in {tok.eos_token_id, *configured} if t is not None}


def left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of `seqs`, left-padded to the longest (the layout generation needs)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, width - len(s):] = torch.tensor(s)
        mask[row, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def last_position(ids: torch.Tensor) -> torch.Tensor:
    """`logits_to_keep` for the last position only, as an index tensor, not the int 1: transformers
    slices `hidden[:, -1:]`, a strided view of a batch, and linear() on a non-contiguous 3-D input
    falls back to a batched matmul that copies the vocabulary head once per row (49152 x 576 for
    SmolLM2: 1.7 s of a 2.5 s prefill of 32 short prompts on a 2-core CPU). Indexing with a
    tensor gives a contiguous [rows, 1, hidden], projected by one matmul."""
    return torch.tensor([ids.shape[1] - 1], device=ids.device)


def shared_start(a: list[int], b: list[int], limit: int) -> int:
    """How many first tokens `a` and `b` share, at most `limit`."""
    n, limit = 0, min(limit, len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def _prefill_groups(seqs: list[Sequence], length=lambda s: len(s.prompt), waste: float = 0.1) -> list[list[Sequence]]:
    """Prompts sorted by `length` (the tokens to prefill), cut into runs whose padding is at most
    `waste` of their tokens: a padded token costs a real token's compute in the prefill
    (bench/predict_throughput.py: 500-token documents of mixed lengths, padded together, made
    batch prediction slower than a one-row loop), while the padding left in the cache costs little
    once decoding starts."""
    groups: list[list[Sequence]] = []
    for s in sorted(seqs, key=length):
        group = groups[-1] if groups else None
        if group and length(s) * (len(group) + 1) <= (1 + waste) * (sum(map(length, group)) + length(s)):
            group.append(s)
        else:
            groups.append([s])
    return groups


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _pad_left(t: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim)

