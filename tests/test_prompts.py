"""THE prompt builder: a prompt ends exactly where the answer starts, with or without a chat
template, and over-budget prompts lose whole examples (counted), never text."""

from __future__ import annotations

import copy

import pytest

from tailor.prompts import PromptBuilder, builder_for
from tailor.task import Example, Task

EX = Example("q", "I love this phone", "positive")
SHOTS = [Example("s1", "It is fine I guess", "neutral"), Example("s2", "Awful battery", "negative"),
         Example("s3", "Best purchase ever", "positive")]
LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def chat_tok(tiny_base):
    assert tiny_base.tokenizer.chat_template
    return tiny_base.tokenizer


@pytest.fixture(scope="module")
def plain_tok(tiny_base):
    tok = copy.deepcopy(tiny_base.tokenizer)
    tok.chat_template = None  # a base model without a chat template
    return tok


@pytest.fixture(params=["chat", "plain"])
def builder(request, chat_tok, plain_tok):
    tok = chat_tok if request.param == "chat" else plain_tok
    return PromptBuilder(tok, "classify", "Classify the sentiment.")


def test_chat_prompt_ends_where_the_assistant_answer_starts(chat_tok):
    b = PromptBuilder(chat_tok, "classify", "Classify the sentiment.")
    prompt = b.build(EX).text
    full = chat_tok.apply_chat_template(
        [{"role": "system", "content": "Classify the sentiment."}, {"role": "user", "content": EX.input},
         {"role": "assistant", "content": "positive"}], tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert b.target_text("positive") == "positive<|im_end|>"
    # prompt + answer is the template's own rendering of the finished conversation (which only
    # adds the newline that opens the next turn)
    assert full == prompt + b.target_text("positive") + "\n"


def test_plain_prompt_without_chat_template(plain_tok):
    b = PromptBuilder(plain_tok, "classify", "Classify the sentiment.")
    assert not b.chat
    text = b.build(EX, SHOTS[:1]).text
    assert text == (f"{plain_tok.bos_token}Classify the sentiment.\n\nInput: It is fine I guess\n\n"
                    "Answer: neutral\n\nInput: I love this phone\n\nAnswer:")
    assert b.target_text("positive") == " positive\n"


def test_an_answered_prompt_is_exactly_how_that_example_appears_as_a_shot(builder):
    """What training and scoring see (prompt + target_text) matches what few-shot prompts show,
    so the two never drift apart."""
    answered = builder.build(SHOTS[0]).text + builder.target_text(SHOTS[0].target)
    with_shot = builder.build(EX, SHOTS[:1]).text
    assert with_shot.startswith(answered.rstrip("\n"))
    assert SHOTS[0].input in with_shot and EX.input in with_shot


@pytest.mark.parametrize("label", LABELS)
def test_prompt_and_answer_tokenise_at_the_boundary(builder, label):
    # the engine encodes prompt and option separately; that must equal encoding them together
    prompt = builder.build(EX, SHOTS).text
    target = builder.target_text(label)
    assert builder.encode(prompt) + builder.encode(target) == builder.encode(prompt + target)


def test_build_counts_tokens(builder):
    p = builder.build(EX, SHOTS)
    assert p.n_tokens == len(builder.tok(p.text, add_special_tokens=False).input_ids)
    assert (p.shots_used, p.shots_dropped, p.over_budget) == (3, 0, False)
    # the shots appear in the order given, each with its answer
    positions = [p.text.index(s.input) for s in SHOTS] + [p.text.index(EX.input)]
    assert positions == sorted(positions)


def test_whole_shots_dropped_from_the_end_when_over_budget(chat_tok):
    sizes = [PromptBuilder(chat_tok, "classify", "Classify.").build(EX, SHOTS[:k]).n_tokens for k in range(4)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    b = PromptBuilder(chat_tok, "classify", "Classify.", max_prompt_tokens=sizes[1] + 1)
    p = b.build(EX, SHOTS)
    assert (p.shots_used, p.shots_dropped, p.over_budget) == (1, 2, False)
    assert p.n_tokens == sizes[1] <= b.max_prompt_tokens
    # the least relevant (last) shots go first; what stays is whole
    assert p.text == PromptBuilder(chat_tok, "classify", "Classify.").build(EX, SHOTS[:1]).text
    assert SHOTS[0].input in p.text and SHOTS[1].input not in p.text and SHOTS[2].input not in p.text


def test_input_over_budget_is_kept_whole_and_flagged(chat_tok):
    long = Example("long", "word " * 200, "positive")
    b = PromptBuilder(chat_tok, "classify", "Classify.", max_prompt_tokens=50)
    p = b.build(long, SHOTS)
    assert (p.shots_used, p.shots_dropped, p.over_budget) == (0, 3, True)
    assert long.input in p.text and p.n_tokens > 50  # never cut


def test_choices_and_passages_and_chat_inputs(chat_tok):
    b = PromptBuilder(chat_tok, "choice", "Pick one.")
    text = b.build(Example("c", "Capital of France?", "Paris", choices=["Rome", "Paris"])).text
    assert "Capital of France?\nOptions:\n- Rome\n- Paris<|im_end|>" in text
    # choices already written in the question are not repeated
    text = b.build(Example("c", "Capital?\nA. Rome\nB. Paris", "B", choices=["A", "B"])).text
    assert "Options" not in text
    rag = PromptBuilder(chat_tok, "generate", "Answer.").build(EX, passages=["First fact.", "Second fact."])
    assert "Context:\n[1] First fact.\n[2] Second fact.\n\nI love this phone" in rag.text
    assert rag.passages == ["First fact.", "Second fact."]
    chat_ex = Example("m", [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}], "Hello")
    text = PromptBuilder(chat_tok, "generate", "Answer.").build(chat_ex).text
    assert text.startswith("<|im_start|>system\nAnswer.\n\nBe terse.<|im_end|>")
    assert text.count("<|im_start|>system") == 1 and text.endswith("Hi<|im_end|>\n<|im_start|>assistant\n")


def test_builder_for_budget_leaves_room_for_the_answer(tiny_base):
    task = Task("t", "classify", "Classify.", [EX], labels=LABELS)
    b = builder_for(task, tiny_base.tokenizer, tiny_base.model.config, max_new_tokens=64)
    assert b.max_prompt_tokens == min(tiny_base.model.config.max_position_embeddings, 2048) - 64
    assert b.kind == "classify" and b.instruction == "Classify."
