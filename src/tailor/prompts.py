"""THE prompt builder. Training and inference both format through it, so they never drift.

A prompt is: the task instruction (system turn), in-context examples as earlier user/assistant
turns, optional retrieved passages, then the input; it ends exactly where the model's answer
begins. The answer (a label, a choice, a completion) is `target_text`: the target followed by the
end-of-turn marker, so a trained model learns to stop.

When the prompt does not fit its token budget, whole examples are dropped (least relevant first,
i.e. from the end of the selector's ranking) and counted; text is never cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .task import Example

PLAIN_SEP = "\n\n"


@dataclass
class Prompt:
    text: str
    n_tokens: int
    shots_used: int = 0
    shots_dropped: int = 0
    over_budget: bool = False  # even with no examples and no passages the input exceeds the budget
    passages: list[str] = field(default_factory=list)   # the passages shown, numbered [1]..[n]
    passages_dropped: int = 0


class PromptBuilder:
    def __init__(self, tokenizer, kind: str, instruction: str, max_prompt_tokens: int | None = None,
                 list_options: bool = True, chat_template: str | None = None):
        self.tok = tokenizer
        # The template is part of an arm's recipe: a reloaded arm renders with the one it was
        # measured with, whatever the tokenizer it is loaded with carries.
        self.chat_template = chat_template if chat_template is not None else getattr(tokenizer, "chat_template", None)
        self.kind = kind
        # Choice items show their options in the prompt unless the task is scored as a cloze
        # (each option as a plain continuation, e.g. PIQA's two long solutions).
        self.list_options = list_options
        self.instruction = instruction
        self.max_prompt_tokens = max_prompt_tokens
        self.chat = bool(self.chat_template)
        self.answer_suffix = self._answer_suffix()
        # The plain layout shows examples as "Answer: label", and the prompt ends at "Answer:";
        # the space belongs to the answer, so a word keeps its usual leading-space token.
        self.answer_prefix = "" if self.chat else " "

    # ------------------------------------------------------------ public

    def build(self, example: Example, shots: list[Example] = (), passages: list[str] = ()) -> Prompt:
        """Over budget, in-context examples go first, then passages, least relevant first."""
        shots, passages = list(shots), list(passages)
        wanted_shots, wanted_passages = len(shots), len(passages)
        budget = self.max_prompt_tokens
        while True:
            text = self.render(self.messages(example, shots, passages))
            n = self.count(text)
            if budget is None or n <= budget or not (shots or passages):
                return Prompt(text, n, len(shots), wanted_shots - len(shots), bool(budget and n > budget),
                              passages, wanted_passages - len(passages))
            if shots:
                shots = shots[:-1]
            else:
                passages = passages[:-1]

    def target_text(self, target: str) -> str:
        return self.answer_prefix + target + self.answer_suffix

    def messages(self, example: Example, shots=(), passages=()) -> list[dict]:
        system = self.instruction
        turns = []
        if isinstance(example.input, list) and example.input and example.input[0]["role"] == "system":
            system = f"{system}\n\n{example.input[0]['content']}".strip()
        msgs = [{"role": "system", "content": system}] if system else []
        for shot in shots:
            turns += self._user_turns(shot) + [{"role": "assistant", "content": shot.target}]
        user = self._user_turns(example)
        if passages:
            context = "\n".join(f"[{i}] {p}" for i, p in enumerate(passages, 1))
            user[-1] = {"role": "user", "content": f"Context:\n{context}\n\n{user[-1]['content']}"}
        return msgs + turns + user

    def render(self, messages: list[dict]) -> str:
        if self.chat:
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                chat_template=self.chat_template)
        # No chat template (a base model): a plain layout with the same structure.
        parts = []
        for m in messages:
            prefix = {"system": "", "user": "Input: ", "assistant": "Answer: "}[m["role"]]
            parts.append(prefix + m["content"])
        bos = self.tok.bos_token or ""
        return bos + PLAIN_SEP.join(parts) + PLAIN_SEP + "Answer:"

    def encode(self, text: str) -> list[int]:
        # Rendered text already carries its special tokens, so none are added here.
        return self.tok(text, add_special_tokens=False).input_ids

    def count(self, text: str) -> int:
        return len(self.encode(text))

    # ------------------------------------------------------------ internals

    def _user_turns(self, example: Example) -> list[dict]:
        if isinstance(example.input, list):
            return [dict(m) for m in example.input if m["role"] != "system"]
        content = example.input
        if (self.kind == "choice" and self.list_options and example.choices
                and not all(c in content for c in example.choices)):
            content += "\nOptions:\n" + "\n".join(f"- {c}" for c in example.choices)
        return [{"role": "user", "content": content}]

    def _answer_suffix(self) -> str:
        """What follows an answer: the chat template's end-of-turn, e.g. '<|im_end|>'."""
        if not self.chat:
            return "\n"
        probe = "\x00ANSWER\x00"
        msgs = [{"role": "user", "content": "q"}]
        full = self.tok.apply_chat_template(msgs + [{"role": "assistant", "content": probe}], tokenize=False,
                                            chat_template=self.chat_template)
        after = full.split(probe, 1)[1]
        eos = self.tok.eos_token or ""
        # Keep up to and including the end-of-sequence token; trailing newlines belong to the
        # next turn, not to this answer.
        return after[: after.index(eos) + len(eos)] if eos and eos in after else after.rstrip("\n")


def builder_for(task, tokenizer, model_config=None, max_new_tokens: int = 64,
                context_cap: int = 2048) -> PromptBuilder:
    """The builder for a task and model: the prompt budget is the model's context (capped, since
    long prompts are slow on a CPU) minus room for the answer."""
    context = getattr(model_config, "max_position_embeddings", None) or context_cap
    return PromptBuilder(tokenizer, task.kind, task.instruction,
                         max_prompt_tokens=min(context, context_cap) - max_new_tokens)


def assemble(builder: PromptBuilder, examples: list[Example], shots_for=None, passages_for=None):
    """THE assembly of an arm's prompts, for measurement, prediction, serving, judging and
    labelling alike: each example through the builder with its in-context shots
    (`shots_for(example)`) and its retrieved passages (`passages_for(examples)`: one batch of
    queries, most relevant first). Returns (prompts, retrieved passages per example)."""
    retrieved = passages_for(examples) if passages_for else [[] for _ in examples]
    prompts = [builder.build(ex, shots_for(ex) if shots_for else (), [p.text for p in ps])
               for ex, ps in zip(examples, retrieved)]
    return prompts, retrieved
