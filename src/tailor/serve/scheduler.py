"""Batches requests from a bounded queue: one worker thread per engine owns its model.

Each turn the worker takes what has arrived: classification requests are scored together in one
engine call (rows of different adapters share the forward); generation requests join the
engine's decoder, which is mid-generation for the others (continuous batching: a new request
waits for one decoding step, not for a whole batch). A full queue refuses at once (the server
answers 429), a cancelled request (its client left) gives its row up at the next step, and a
failing batch fails its own requests only: the worker goes on serving.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from ..errors import TailorError

log = logging.getLogger("tailor")


class QueueFull(Exception):
    """The queue has no room now; it will (the server answers 429: retry)."""


class NeverFits(Exception):
    """A request with more jobs (prompts x n) than the queue can ever hold: no retry would help."""


@dataclass
class Answer:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: list | None = None   # echo requests: (token, log-probability, offset, alternatives) per token
    generated: list | None = None  # logprobs requests: (token, piece, log-probability, [(id, log-probability)])
                                   # per generated token of `text` (decode.covered)


@dataclass
class Job:
    arm: object                      # serve.arms.ServedArm
    prompt: str
    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    on_text: Callable[..., None] | None = None     # streamed text (with logprobs, and its tokens' entries),
                                                   # called from the worker thread
    echo: bool = False               # score the prompt's own tokens (and draw max_tokens 0 or 1 after them)
    ids: list[int] | None = None     # an echo request's prompt as token ids, scored exactly as given
    top: int = 0                     # an echo request's logprobs: alternatives per token
    logprobs: int | None = None      # the generated tokens' log-probabilities, with this many alternatives each
    echoed: object = None            # an echo request that generates past one token: its scored prompt (Echo)
    example: object = None           # a program arm's request as a task row (its question and metadata)
    future: Future = field(default_factory=Future)
    cancelled: bool = False
    _seq: object = None

    def cancel(self) -> None:
        self.cancelled = True
        if self._seq is not None and not self._seq.done:
            self._seq.finish_reason = "cancelled"


class Scheduler:
    def __init__(self, engines, batch_size: int = 16, max_queue: int = 256, mix_adapters: bool = True):
        for name, value in (("batch_size", batch_size), ("max_queue", max_queue)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:   # 0 rows a step never ends a request
                raise TailorError(f"{name.replace('_', '-')} is {value!r}; it must be a whole number of requests, "
                                  "at least 1")
        self.batch_size, self.max_queue, self.mix_adapters = batch_size, max_queue, mix_adapters
        self._inboxes = {id(e): queue.Queue() for e in engines}
        self._engines = {id(e): e for e in engines}
        self._lock = threading.Lock()
        self._waiting = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, args=(e,), name=f"tailor-engine-{i}", daemon=True)
                         for i, e in enumerate(engines)]

    def start(self) -> Scheduler:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def prompt_tokens(self) -> dict:
        """Prompt tokens the decoders prefilled, and those whose keys and values they reused
        from an earlier prompt's identical start (instruction, chat template, fixed shots)."""
        return {k: sum(e.prompt_tokens[k] for e in self._engines.values()) for k in ("prefilled", "reused")}

    def submit(self, jobs: list[Job]) -> None:
        """All of a request's jobs are queued, or none (QueueFull; NeverFits when they outnumber the
        whole queue)."""
        if len(jobs) > self.max_queue:
            raise NeverFits(f"this request needs {len(jobs)} generations (prompts x n); this server holds at most "
                            f"{self.max_queue} at once (--max-queue), so it could never be admitted: send fewer "
                            "prompts or a smaller n per request")
        with self._lock:
            if self._waiting + len(jobs) > self.max_queue:
                raise QueueFull(f"{self._waiting} requests are waiting (the limit is {self.max_queue})")
            self._waiting += len(jobs)
        for job in jobs:
            self._inboxes[id(job.arm.engine)].put(job)

    # ------------------------------------------------------------ the worker

    def _work(self, engine) -> None:
        from ..decode import Decoder, supported
        inbox = self._inboxes[id(engine)]
        decoder = Decoder(engine) if supported(engine.model) else None
        pending: list[Job] = []
        live: list[Job] = []
        while not self._stop.is_set():
            busy = bool(pending or live)
            pending += self._take(inbox, block=not busy)
            pending = [j for j in pending if not self._drop_cancelled(j)]
            programs = [j for j in pending if j.example is not None]
            pending = [j for j in pending if j.example is None]
            echoing = [j for j in pending if j.echo and j.echoed is None]
            pending = [j for j in pending if not (j.echo and j.echoed is None)]
            scoring = [j for j in pending if j.arm.kind == "classify" and not j.echo]
            # an echo request past max_tokens 1 generates from its scored prompt, whatever the arm's kind
            generating = [j for j in pending if j.arm.kind != "classify" or j.echo]
            if programs:
                self._programs(engine, programs)
            if echoing:
                generating += self._echo(engine, echoing)
            if scoring:
                self._score(engine, scoring)
            if decoder is None:
                if generating:
                    self._generate_static(engine, generating[: self.batch_size])
                pending = generating[self.batch_size:]
                continue
            joining, pending = self._admit(generating, live)
            live += joining   # before joining: a failing prefill fails these requests too, never loses them
            try:
                if joining:
                    self._join(decoder, joining)
                decoder.step()
            except Exception as e:   # a broken batch fails its requests; the server keeps serving
                log.exception("decoding failed")
                for job in live:
                    self._fail(job, e)
                decoder = Decoder(engine)   # a clean cache
                live = []
                continue
            for job in [j for j in live if j._seq.done]:
                live.remove(job)
                self._finish(job, self._answer(job))

    def _admit(self, generating: list[Job], live: list[Job]) -> tuple[list[Job], list[Job]]:
        """(joining the decoder now, still waiting). Without mixing, only the running adapter's
        requests join until its batch drains; then the oldest waiting request's adapter runs:
        the one-adapter-per-batch switching a server without mixed-adapter forwards must do."""
        room = self.batch_size - len(live)
        if self.mix_adapters:
            return generating[:room], generating[room:]
        if not generating:
            return [], []
        adapter = live[0].arm.adapter if live else generating[0].arm.adapter
        joining = [j for j in generating if j.arm.adapter == adapter][:room]
        chosen = {id(j) for j in joining}
        return joining, [j for j in generating if id(j) not in chosen]

    def _take(self, inbox: queue.Queue, block: bool) -> list[Job]:
        out = []
        try:
            out.append(inbox.get(timeout=0.05) if block else inbox.get_nowait())
            while len(out) < 4 * self.batch_size:
                out.append(inbox.get_nowait())
        except queue.Empty:
            pass
        return out

    def _drop_cancelled(self, job: Job) -> bool:
        if job.cancelled:
            self._finish(job, None)
        return job.cancelled

    def _batched(self, jobs: list[Job], what: str, call):
        """`call()` for a batch of jobs; if it raises, the batch's jobs fail (the worker goes on)."""
        try:
            return call()
        except Exception as e:
            log.exception("%s failed", what)
            for job in jobs:
                self._fail(job, e)
            return None

    def _score(self, engine, jobs: list[Job]) -> None:
        scores = self._batched(jobs, "scoring", lambda: engine.score(
            [j.prompt for j in jobs], [j.arm.options() for j in jobs], adapters=[j.arm.adapter for j in jobs]))
        for job, s in zip(jobs, scores or []):
            lps = job.arm.label_scores(s.logprobs)   # a calibrated arm's prior divided out, as it was measured
            best = max(range(len(lps)), key=lps.__getitem__)
            label = job.arm.labels[best]
            if job.on_text is not None:
                job.on_text(label)
            self._finish(job, Answer(label, "stop", s.prompt_tokens, len(engine.encode(label))))

    def _programs(self, engine, jobs: list[Job]) -> None:
        """Plan-and-execute arms: each arm's program over its requests' rows (one predict call
        per arm, so its model calls batch across requests), answered whole."""
        by_arm: dict[int, list[Job]] = {}
        for job in jobs:
            by_arm.setdefault(id(job.arm), []).append(job)
        for group in by_arm.values():
            arm = group[0].arm
            run = lambda arm=arm, group=group: arm.program.predict(   # noqa: E731
                engine, arm.task, [j.example for j in group], max(j.max_tokens for j in group))
            preds = self._batched(group, f"{arm.name}'s program", run)
            if preds is not None and len(preds) != len(group):   # never leave a request waiting unanswered
                error = RuntimeError(f"{arm.name}'s program answered {len(preds)} of {len(group)} questions")
                for job in group:
                    self._fail(job, error)
                continue
            for job, p in zip(group, preds or []):
                if job.on_text is not None and p.prediction:
                    job.on_text(p.prediction)
                self._finish(job, Answer(p.prediction, "stop", p.prompt_tokens, p.completion_tokens))

    def _echo(self, engine, jobs: list[Job]) -> list[Job]:
        """Echo requests: the prompt scored (and with max_tokens 1 the token drawn after it, in the
        same forward); those asking for more tokens are returned, to generate through the decoder."""
        scored = self._batched(jobs, "prompt scoring", lambda: engine.echo(
            [j.prompt if j.ids is None else j.ids for j in jobs], adapters=[j.arm.adapter for j in jobs],
            top=[j.top for j in jobs],
            sample=[(j.temperature, j.top_p, j.seed or 0) if j.max_tokens == 1 else None for j in jobs]))
        more = []
        for job, e in zip(jobs, scored or []):
            if job.max_tokens > 1:
                job.echoed = e
                more.append(job)
            else:
                self._finish(job, Answer(e.text, e.finish_reason, e.prompt_tokens, e.completion_tokens, e.tokens))
        return more

    @staticmethod
    def _answer(job: Job) -> Answer:
        from ..decode import covered
        s = job._seq
        generated = covered(s) if s.logprobs is not None else None
        if job.echoed is not None:   # the prompt's entries, then the generated tokens'
            return Answer(job.echoed.text + s.text, s.finish_reason, len(s.prompt), len(s.tokens), job.echoed.tokens,
                          generated)
        return Answer(s.text, s.finish_reason, len(s.prompt), len(s.tokens), generated=generated)

    def _join(self, decoder, jobs: list[Job]) -> None:
        from ..decode import Sequence
        for job in jobs:
            # an echo request generates after the tokens it scored (token ids exactly as sent)
            prompt = list(job.ids) if job.echo and job.ids is not None else decoder.engine.encode(job.prompt)
            job._seq = Sequence(prompt, job.arm.adapter, job.max_tokens, job.temperature, job.top_p, job.seed, job.stop,
                                job.on_text, logprobs=job.logprobs)
        decoder.join([j._seq for j in jobs])

    def _generate_static(self, engine, jobs: list[Job]) -> None:
        """Models the decoder cannot run: one transformers batch, answered whole."""
        for job in jobs:
            # as the decoder does: a positive temperature too small for float32 (5e-324) would make
            # transformers' sampling divide by zero; so small a temperature samples the greedy answer
            temperature = max(job.temperature, 1e-6) if job.temperature > 0 else 0.0
            try:
                g = engine.generate([job.prompt], job.max_tokens, temperature, job.top_p, job.stop,
                                    job.seed or 0, adapters=[job.arm.adapter])[0]
            except Exception as e:
                self._fail(job, e)
                continue
            if job.on_text is not None and g.text:
                job.on_text(g.text)
            self._finish(job, Answer(g.text, g.finish_reason, g.prompt_tokens, g.completion_tokens))

    def _finish(self, job: Job, answer: Answer | None) -> None:
        with self._lock:
            self._waiting -= 1
        if not job.future.done():
            job.future.set_result(answer)

    def _fail(self, job: Job, error: Exception) -> None:
        with self._lock:
            self._waiting -= 1
        if not job.future.done():
            job.future.set_exception(error)
