"""The Ollama Modelfile beside an exported GGUF: FROM the file, the arm's instruction as SYSTEM,
fixed in-context examples as MESSAGE turns, the arm's prompt format as a TEMPLATE in Go-template
syntax (Ollama's), and PARAMETER stop for what ends an answer.

The TEMPLATE is not translated from the Jinja chat template by hand: the per-role text around each
message is read off THE prompt builder (`PromptBuilder.render`) on probe conversations, and the
same pieces, put back together, must reproduce the builder's render of the arm's own kinds of
conversation (system and user; with example turns; without a system) before they are written.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import TailorError
from ..prompts import PromptBuilder
from ..task import Example

ROLES = ("system", "user", "assistant")
_MARK = {r: f"\x00{r.upper()}\x00" for r in ROLES}


@dataclass
class Format:
    """A prompt as `head + sep.join(pre[role] + content + post[role]) + tail`."""

    head: str
    sep: str
    pre: dict[str, str]
    post: dict[str, str]
    tail: str                # the generation prompt: where the answer begins

    def render(self, messages: list[dict]) -> str:
        return self.head + self.sep.join(self.pre[m["role"]] + m["content"] + self.post[m["role"]]
                                         for m in messages) + self.tail

    def go_template(self) -> str:
        """The same format for Ollama (Go text/template over .Messages)."""
        def lit(s: str) -> str:   # literal text; a "{{" in it would open an action
            return s.replace("{{", '{{ "{{" }}')
        branches = "".join(f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{r}" }}}}{lit(self.pre[r])}{{{{ .Content }}}}'
                           f'{lit(self.post[r])}' for i, r in enumerate(ROLES))
        sep = f"{{{{ if $i }}}}{lit(self.sep)}{{{{ end }}}}" if self.sep else ""
        return f"{lit(self.head)}{{{{ range $i, $_ := .Messages }}}}{sep}{branches}{{{{ end }}}}{{{{ end }}}}{lit(self.tail)}"


def prompt_format(builder: PromptBuilder) -> Format:
    """The builder's layout as per-role pieces, or a TailorError when they do not compose back
    into what the builder renders (a template with per-position logic)."""
    sys_, user, asst = ({"role": r, "content": _MARK[r]} for r in ROLES)
    if builder.chat:
        def render(msgs: list[dict], gen: bool) -> str:
            return builder.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen,
                                                   chat_template=builder.chat_template)
        # each message's block is what it adds to the conversation before it
        pieces, before = {}, ""
        for i, m in enumerate((sys_, user, asst)):
            now = render([sys_, user, asst][: i + 1], gen=False)
            if not now.startswith(before) or now[len(before):].count(m["content"]) != 1:
                raise TailorError("the chat template does not render each message as a block of its own: "
                                  "no Ollama TEMPLATE can be derived from it")
            pieces[m["role"]] = now[len(before):].split(m["content"])
            before = now
        with_user = render([sys_, user], gen=False)
        fmt = Format("", "", {r: p[0] for r, p in pieces.items()}, {r: p[1] for r, p in pieces.items()},
                     render([sys_, user], gen=True)[len(with_user):])
    else:
        fmt = Format(builder.tok.bos_token or "", "\n\n", {"system": "", "user": "Input: ", "assistant": "Answer: "},
                     {r: "" for r in ROLES}, "\n\nAnswer:")
    # the conversations an arm's prompts are: an instruction and the input, with example turns
    for probe in ([sys_, user], [sys_, user, asst, user]):
        if fmt.render(probe) != builder.render(probe):
            raise TailorError(f"the prompt format does not compose from per-role pieces (it renders "
                              f"{[m['role'] for m in probe]} otherwise): no Ollama TEMPLATE can be derived")
    return fmt


def default_system(builder: PromptBuilder, fmt: Format) -> str | None:
    """The system text a template inserts when a conversation has none (SmolLM2's "You are a
    helpful AI assistant named SmolLM..."), or None when it inserts nothing."""
    user = {"role": "user", "content": _MARK["user"]}
    rendered, alone = builder.render([user]), fmt.render([user])
    if rendered == alone:
        return None
    block = rendered[: len(rendered) - len(alone)] if rendered.endswith(alone) else ""
    pre, post = fmt.pre["system"], fmt.post["system"]
    if not (block.startswith(pre) and block.endswith(post)):
        raise TailorError("the chat template renders a conversation without a system message in a way "
                          "no Ollama TEMPLATE derived from it reproduces")
    return block[len(pre): len(block) - len(post)]


def stop_strings(builder: PromptBuilder) -> list[str]:
    """What ends an answer as the arm was trained and measured: the builder's end-of-turn, the EOS."""
    out = []
    for s in (builder.answer_suffix.strip(), builder.tok.eos_token or ""):
        if s and s not in out:
            out.append(s)
    return out


def _quoted(text: str) -> str:
    if '"""' in text:
        raise TailorError('a Modelfile value cannot hold three double quotes in a row ("""); edit the instruction')
    return f'"""{text}"""'


def modelfile(gguf_name: str, builder: PromptBuilder, shots: list[Example] = (),
              notes: list[str] = ()) -> tuple[str, str | None]:
    """The Modelfile text, and why it has no TEMPLATE (None when it has one: then Ollama formats
    requests as the arm's prompts were formatted). `shots`: fixed in-context examples, shown as
    MESSAGE turns before every request, as the arm's prompt shows them."""
    lines = [f"# {line}" for line in notes]
    lines.append(f"FROM ./{gguf_name}")
    try:
        fmt = prompt_format(builder)
        system = builder.instruction or default_system(builder, fmt) or ""
        lines.append(f"TEMPLATE {_quoted(fmt.go_template())}")
        no_template = None
    except TailorError as e:   # the GGUF still carries the chat template, which Ollama may recognise
        system, no_template = builder.instruction, str(e)
        lines.append(f"# no TEMPLATE: {no_template}")
    if system:
        lines.append(f"SYSTEM {_quoted(system)}")
    if shots:
        turns = builder.messages(Example("_", "_", ""), list(shots))
        for m in turns[(1 if turns[0]["role"] == "system" else 0):-1]:
            lines.append(f"MESSAGE {m['role']} {_quoted(m['content'])}")
    for s in stop_strings(builder):
        lines.append(f'PARAMETER stop "{s}"' if '"' not in s and "\n" not in s else f"PARAMETER stop {_quoted(s)}")
    lines.append("PARAMETER temperature 0")   # Tailor measured greedy answers
    return "\n".join(lines) + "\n", no_template
