"""Long-document arms: the PEARL plan grammar, the executor's control flow and variable binding
(with a scripted stand-in model: a test of the logic, not of a model), retry counting, action
merging, the extraction schema, the arms on the tiny model (saved and reloaded), NarrativeQA."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from tailor.errors import DataError
from tailor.longdoc.actions import STARTING_ACTIONS, Action, arity, merge, parse_proposal
from tailor.longdoc.execute import Executor
from tailor.longdoc.extract import DEFAULT_SCHEMA, ExtractStats, Schema, merge_records, parse_records
from tailor.longdoc.plan import PlanError, read_plan
from tailor.longdoc.planning import Planner

ARITY = arity(STARTING_ACTIONS)


# ---------------------------------------------------------------- the plan grammar

def test_valid_plans_parse_with_quoted_phrases_fences_and_a_header():
    plan = read_plan('```\nPlan:\nmark = FIND_CHARACTER(document, "Mark, the DJ")\n\n'
                     "why = find_event(document, mark)\nanswer = ANSWER(question, why)\n```", ARITY)
    assert [s.var for s in plan.steps] == ["mark", "why", "answer"] and plan.answer == "answer"
    assert plan.steps[1].action == "FIND_EVENT", "action names are case-insensitive"
    assert [(a.kind, a.value) for a in plan.steps[0].args] == [("input", "document"), ("text", "Mark, the DJ")]
    assert plan.lines == [3, 5, 6], "error messages name the line the model wrote"
    assert read_plan(plan.text(), ARITY).text() == plan.text()


@pytest.mark.parametrize("text, message", [
    ("", "the plan is empty"),
    ("First I will find Mark.", "line 1: 'First I will find Mark.' is not a step"),
    ("a = FIND(document)", "line 1: FIND takes 2 arguments, the step gives 1"),
    ("a = SEARCH(document, question)", "line 1: unknown action SEARCH (known: ANSWER, FIND, FIND_CHARACTER, FIND_EVENT)"),
    ('a = FIND(document, "x")\nb = ANSWER(question, c)', "line 2: variable c is used before it is assigned"),
    ('a = FIND(document, "x")\na = ANSWER(question, a)', "line 2: variable a is already taken"),
    ('question = FIND(document, "x")', "line 1: variable question is already taken"),
    ('a = FIND(document, "x)', "line 1: cannot read the arguments"),
    ("a = FIND(document, x y)", "line 1: argument 'x y' is not question"),
    ("\n".join(f'a{i} = FIND(document, "x")' for i in range(9)), "the plan has 9 steps; at most 8"),
])
def test_broken_plans_fail_with_a_one_line_error_naming_the_line(text, message):
    with pytest.raises(PlanError) as e:
        read_plan(text, ARITY)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


# ---------------------------------------------------------------- the executor, on a scripted stand-in model

@dataclass
class Gen:
    text: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool = False


class ScriptedModel:
    """Answers each prompt from a script keyed by the action named in its instruction; records
    every batch, so the test sees the engine calls the executor made."""

    def __init__(self, script: dict[str, str] | list[str]):
        self.script, self.batches, self.replies = script, [], list(script) if isinstance(script, list) else None

    def generate(self, prompts, max_new_tokens=64, stop=()):
        self.batches.append((list(prompts), max_new_tokens))
        out = []
        for p in prompts:
            if self.replies is not None:
                text = self.replies.pop(0)
            else:
                text = next(v for k, v in self.script.items() if k in p)
            out.append(Gen(text, len(p), len(text)))
        return out


@pytest.fixture(scope="module")
def builder(tiny_base):
    from tailor.prompts import PromptBuilder
    return PromptBuilder(tiny_base.tokenizer, "generate", "Answer.", 1500)


def test_executor_binds_variables_and_runs_plans_in_lockstep(builder):
    model = ScriptedModel({"who the character is": "Mark is a DJ.", "what the document says": "He runs a radio.",
                           "the answer to the question": "A pirate radio station."})
    seen = []

    def context(doc_id, query):
        seen.append((doc_id, query))
        return [f"passage of {doc_id} about {query}"]

    actions = {a.name: a for a in STARTING_ACTIONS}
    long = read_plan('m = FIND_CHARACTER(document, "Mark")\nr = FIND(document, m)\nanswer = ANSWER(question, r)', ARITY)
    short = read_plan("answer = ANSWER(question, document)", ARITY)
    ex = Executor(model, builder, actions, context, step_tokens=20, answer_tokens=30)
    traces = ex.run([long, short], ["What does Mark run?", "Who is Nora?"], ["doc-a", "doc-b"])
    a, b = traces
    assert a.values == {"m": "Mark is a DJ.", "r": "He runs a radio.", "answer": "A pirate radio station."}
    assert a.answer == "A pirate radio station." and a.calls == 3 and b.calls == 1
    # round 0: the long plan's first step and the short plan's final step are separate batches (budgets differ)
    assert [(len(p), n) for p, n in model.batches] == [(1, 20), (1, 30), (1, 20), (1, 30)]
    # r's query is m's output, so FIND read the chunks that match what the first step found
    assert ("doc-a", "Mark") in seen and ("doc-a", "Mark is a DJ.") in seen and ("doc-b", "Who is Nora?") in seen
    assert "Mark is a DJ." in model.batches[2][0][0], "a later step's prompt carries the earlier output"
    assert "He runs a radio." in model.batches[3][0][0] and "What does Mark run?" in model.batches[3][0][0]
    assert a.prompt_tokens == sum(len(p[0]) for p, _ in (model.batches[0], model.batches[2], model.batches[3]))
    assert b.completion_tokens == len("A pirate radio station.")


def test_executor_counts_empty_outputs_and_keeps_only_the_first_paragraph(builder):
    model = ScriptedModel({"who the character is": "  ", "the answer to the question": "Yes.\n\nAlso, rambling."})
    plan = read_plan('m = FIND_CHARACTER(document, "Mark")\nanswer = ANSWER(question, m)', ARITY)
    [t] = Executor(model, builder, {a.name: a for a in STARTING_ACTIONS}, lambda d, q: []).run([plan], ["q"], ["d"])
    assert t.empty_outputs == 1 and t.values["m"] == "" and t.answer == "Yes."


# ---------------------------------------------------------------- retries

def test_planner_feeds_the_error_back_and_counts_retries(builder):
    model = ScriptedModel(["I would look for Mark.", 'a = FIND(document, "Mark")\nanswer = ANSWER(question, a)',
                           "answer = ANSWER(question, document)"])
    first, second = Planner(model, builder, STARTING_ACTIONS, max_retries=2).plan(["What does Mark run?", "Who?"])
    assert (first.attempts, first.retries, first.valid, first.fallback) == (2, 1, True, False)
    assert (second.attempts, second.retries, second.valid) == (1, 0, True)
    assert first.errors == ["line 1: 'I would look for Mark.' is not a step of the form VAR = ACTION(arguments)"]
    retry_prompt = model.batches[1][0][0]
    assert "Error: line 1:" in retry_prompt and "I would look for Mark." in retry_prompt
    assert len(model.batches[1][0]) == 1, "only the failed question is asked again"


def test_a_planner_that_never_writes_a_valid_plan_gets_the_fallback_counted(builder):
    model = ScriptedModel(["nope"] * 3)
    [r] = Planner(model, builder, STARTING_ACTIONS, max_retries=2).plan(["Who?"])
    assert (r.attempts, r.retries, r.valid, r.fallback) == (3, 2, False, True)
    assert r.text == "answer = ANSWER(question, document)" and len(r.errors) == 3


# ---------------------------------------------------------------- action mining

def test_mined_actions_are_parsed_merged_and_counted():
    replies = ["FIND_PLACE(document, place): where the place is and what happens there",
               "1. find_place(document, where): the place in the story.", "I think you should read it.",
               "FIND_CHARACTER(document, name): who it is", "FIND_MOTIVE(document, character): why the character acts"]
    actions, stats = merge([parse_proposal(r) for r in replies], STARTING_ACTIONS, max_mined=1)
    assert [a.name for a in actions] == [a.name for a in STARTING_ACTIONS] + ["FIND_PLACE"]
    assert actions[-1].votes == 2 and actions[-1].source == "mined"
    assert (stats.parsed, stats.unparsed, stats.known, stats.merged, stats.kept, stats.dropped) == (4, 1, 1, 1, 1, 1)
    assert Action.from_json(actions[-1].to_json()) == actions[-1]


# ---------------------------------------------------------------- the extraction schema

def test_the_default_schema_validates_records_and_rejects_bad_ones():
    schema = Schema(DEFAULT_SCHEMA)
    stats = ExtractStats()
    text = ('{"name": "Mark", "kind": "character", "facts": ["a DJ"]}\nnot json at all\n'
            '{"kind": "place"}\n{"name": "Mark", "facts": ["lives in Phoenix", "a DJ"], "age": 17}\n'
            '{"name": "Nora", "facts": "one string, not a list"}')
    records = parse_records(text, schema, stats)
    assert (stats.lines, stats.records_valid, stats.invalid_json, stats.invalid_schema) == (5, 2, 1, 2)
    merged = merge_records(records, "name", stats)
    assert merged == [{"name": "Mark", "kind": "character", "facts": ["a DJ", "lives in Phoenix"]}]
    assert stats.records_merged == 1
    assert "field 'name'" in schema.problem({"kind": "x"})


@pytest.mark.parametrize("spec, field", [
    ({"fields": {"name": {"type": "text"}}}, "fields.name.type"),
    ({"fields": {"name": {"type": "string", "required": "yes"}}}, "fields.name"),
    ({"fields": {"bad name": {"type": "string"}}}, "fields.bad name"),
    ({"fields": {"name": {"type": "string"}}, "records": "x"}, "records"),
    ({"fields": {"name": {"type": "string", "required": True}}, "example": {"passage": "p", "records": [{}]}},
     "example.records[0]"),
])
def test_a_bad_schema_is_one_error_naming_the_file_and_field(tmp_path, spec, field):
    import yaml
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(DataError) as e:
        Schema.read(path)
    assert str(e.value).startswith(f"{path}: field '{field}'") and "\n" not in str(e.value)


def test_a_schema_file_that_is_not_json_names_its_line(tmp_path):
    path = tmp_path / "schema.json"
    path.write_text('{"fields": {\n  "name": oops}}')
    with pytest.raises(DataError, match=r"schema.json:line 2: invalid JSON"):
        Schema.read(path)


# ---------------------------------------------------------------- the arms on the tiny model

STORIES = {
    "harbour": "Mark Hunter runs a pirate radio station from the basement of his parents' house in Phoenix. "
               "Nora, a fellow student, finds out who he is. The principal wants to close the station.",
    "forest": "Anna lives in a forest village with her brother Tom. Tom leaves to become a sailor. "
              "Anna waits for him for ten years and then opens a school in the village.",
}


@pytest.fixture(scope="module")
def story_task(tmp_path_factory, tiny_base):
    from tailor.retrieval import Chunker, build, read_documents
    from tailor.task import load_task_file
    root = tmp_path_factory.mktemp("longdoc")
    docs = root / "stories.jsonl"
    docs.write_text("".join(json.dumps({"id": k, "title": k, "text": v * 4}) + "\n" for k, v in STORIES.items()))
    build(read_documents(docs), root / "kb", Chunker(tiny_base.tokenizer, 48, 8), progress=False)
    rows = [{"prompt": f"Question: {q} ({i})", "completion": a, "document": d}
            for i in range(6) for q, a, d in (("What does Mark run?", "a pirate radio station", "harbour"),
                                              ("Who is Tom?", "Anna's brother", "forest"))]
    path = root / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "kb", load_task_file(path).split(seed=0, test=4, dev=2)


def test_pearl_arm_fits_measures_and_reloads_identically(story_task, tiny_base, tmp_path):
    from tailor.measure import measure
    from tailor.methods import load_adapted, make_method, save_adapted
    kb, task = story_task
    arm = make_method("pearl", {"kb": str(kb), "mine_questions": 2, "demo_questions": 2, "max_retries": 1,
                                "plan_tokens": 24, "step_tokens": 8})
    adapted = arm.fit(task, tiny_base, progress=False)
    rows = task.splits["test"]
    m = measure(adapted, task, rows, max_new_tokens=8, progress=False, latency_requests=1)
    d = m.longdoc
    assert d["method"] == "pearl" and d["questions"] == len(rows)
    assert 0 <= d["plans_valid"] <= 1 and d["mean_retries"] <= 1
    # a random tiny model writes no valid plan: every question retried once, then the fallback plan ran
    assert d["plan_fallbacks"] == round((1 - d["plans_valid"]) * len(rows))
    assert d["calls_per_question"] == pytest.approx(d["planner_calls_per_question"] + d["mean_steps"])
    assert d["tokens_per_question"] == pytest.approx(m.cost.prompt_tokens_per_request + m.cost.completion_tokens_per_request)
    assert d["mining"]["questions"] == 2 and len(d["actions"]) >= len(STARTING_ACTIONS)
    save_adapted(adapted, tmp_path / "arm")
    recipe = json.loads((tmp_path / "arm" / "recipe.json").read_text())
    assert [a["name"] for a in recipe["program"]["actions"]][:4] == [a.name for a in STARTING_ACTIONS]
    again = load_adapted(tmp_path / "arm", tiny_base)
    before = adapted.predict(adapted.engine(None), task, rows, 8)
    after = again.predict(again.engine(None), task, rows, 8)
    assert [(p.prompt, p.prediction) for p in before] == [(p.prompt, p.prediction) for p in after]


def test_extract_and_truncated_arms_measure_what_they_save(story_task, tiny_base, tmp_path):
    from tailor.measure import measure
    from tailor.methods import load_adapted, make_method, save_adapted
    kb, task = story_task
    rows = task.splits["test"]
    t = measure(make_method("truncated", {"kb": str(kb), "context_tokens": 16}).fit(task, tiny_base), task, rows,
                max_new_tokens=4, progress=False, latency_requests=0).longdoc
    assert t["truncated"] == len(rows) and t["context_tokens_per_question"] == 16 and 0 < t["context_saved"] < 1
    adapted = make_method("extract", {"kb": str(kb), "extract_tokens": 12}).fit(task, tiny_base)
    e = measure(adapted, task, rows, max_new_tokens=4, progress=False, latency_requests=0).longdoc
    x = e["extraction"]
    assert x["documents"] == len({r.meta["document"] for r in rows}) and x["calls"] == x["chunks"] > 0
    assert x["lines"] == x["records_valid"] + x["invalid_json"] + x["invalid_schema"]
    assert e["document_tokens_per_question"] > 0 and e["context_tokens_per_question"] <= 512
    save_adapted(adapted, tmp_path / "extract")
    again = load_adapted(tmp_path / "extract", tiny_base)
    assert [p.prompt for p in again.predict(again.engine(None), task, rows, 4)] == \
           [p.prompt for p in adapted.predict(adapted.engine(None), task, rows, 4)]


def test_a_row_naming_a_missing_document_is_a_located_error(story_task, tiny_base):
    from tailor.methods import make_method
    from tailor.task import Example
    kb, task = story_task
    adapted = make_method("truncated", {"kb": str(kb)}).fit(task, tiny_base)
    with pytest.raises(DataError, match=r"row 'x': document 'nowhere' is not in this knowledge base"):
        adapted.predict(adapted.engine(None), task, [Example("x", "Question: ?", "a", meta={"document": "nowhere"})])
    with pytest.raises(DataError, match=r"field 'document': row 'y' names no document"):
        adapted.predict(adapted.engine(None), task, [Example("y", "Question: ?", "a")])


def test_narrativeqa_is_split_by_story_and_every_story_is_a_document():
    from tailor.datasets import load_task
    from tailor.datasets.knowledge import bundled_documents
    task = load_task("narrativeqa")
    assert len(task.examples) == 3000 and task.kind == "generate" and task.knowledge == "narrativeqa"
    docs = {d.id: d for d in bundled_documents("narrativeqa")}
    assert len(docs) == 101 and sum(len(d.text) for d in docs.values()) / 101 > 3000
    stories = {s: {ex.meta["document"] for ex in task.splits[s]} for s in ("train", "dev", "test")}
    assert not (stories["test"] & stories["train"]) and not (stories["test"] & stories["dev"])
    assert all(ex.meta["document"] in docs for ex in task.examples)
    assert len({ex.meta["document"] for ex in task.splits["test"][:60]}) >= 5, "the first test rows span stories"


@pytest.mark.real
def test_pearl_on_narrativeqa_with_smollm2(smol_base):
    from tailor.datasets import load_task
    from tailor.measure import measure
    from tailor.methods import make_method
    task = load_task("narrativeqa")
    adapted = make_method("pearl", {"mine_questions": 4, "demo_questions": 4, "max_retries": 1}).fit(
        task, smol_base, progress=False)
    rows = task.splits["test"][:6]
    m = measure(adapted, task, rows, max_new_tokens=32, progress=False, latency_requests=0)
    d = m.longdoc
    assert d["questions"] == 6 and d["planner_calls_per_question"] <= 2
    # at least one planner call and one executed step per question, at most retries + the 8-step limit
    assert 2 <= d["calls_per_question"] <= 2 + 8
    assert all(p.prediction for p in m.predictions), "every question gets an answer (fallback plans included)"
    assert 0 <= m.metrics["rougeL"] <= 1


# ---------------------------------------------------------------- a schema the model proposes

def test_a_proposed_schema_is_mined_by_votes_typed_counted_and_reads_back_as_a_schema_file(tmp_path):
    from tailor.longdoc.propose import MAX_FIELDS, parse
    replies = ["Occupation: what they do for a living", "- friends: the people they trust", "occupation: the job",
               "age: how old they are", "It depends on the story.", "offer: what the shop offered",
               "alive", "home: where they live", "motive: why they act", "fate: how it ends", "name: the name"]
    questions = ["What does Mark do?", "Who does Nora trust?", "What is Tom's job?", "How old is Anna?", "Why?",
                 "What did he offer?", "Is the captain alive at the end?", "Where does May live?", "Why does he go?",
                 "How does it end?", "Who is she?"]
    p = parse(replies, questions, "m", 2, "proposed by m")
    fields = p.schema.spec["fields"]
    # occupation asked for twice comes first; then first seen; MAX_FIELDS with name first
    assert list(fields) == ["name", "occupation", "friends", "age", "alive", "home"] and len(fields) == MAX_FIELDS
    assert p.votes["occupation"] == 2 and p.over_limit == 2 and p.not_fields == 2 and p.copied_example == 1
    assert fields["name"] == {"type": "string", "required": True}
    assert [fields[f]["type"] for f in ("occupation", "friends", "age", "alive")] == ["string", "list", "number",
                                                                                       "boolean"]
    assert p.meanings["occupation"] == "what they do for a living" and "Is the captain" in p.meanings["alive"]
    path = tmp_path / "proposed.yaml"
    path.write_text(p.yaml())
    assert Schema.read(path).spec == p.schema.spec, "the file the team confirms is the schema that ran"
    assert "# Review it" in path.read_text() and "#   occupation: what they do for a living (asked for by 2" in \
        path.read_text()


def test_replies_naming_no_field_fall_back_to_the_default_schema_and_say_so():
    from tailor.longdoc.propose import parse
    p = parse(["I think you should read the story.", "offer: what the shop offered", "name: a name"],
              ["a", "b", "c"], "m", 1, "x")
    assert p.fallback and p.fields_kept == 0 and p.copied_example == 1 and p.not_fields == 2
    assert p.schema.spec == DEFAULT_SCHEMA and "no reply of m named a field" in p.schema.source
    assert "default schema" in p.yaml()


def test_the_extract_arm_runs_with_its_proposal_and_writes_it_for_confirmation(story_task, tiny_base, tmp_path):
    from tailor.errors import TailorError
    from tailor.measure import measure
    from tailor.methods import make_method
    kb, task = story_task
    with pytest.raises(TailorError, match="not both"):
        make_method("extract", {"kb": str(kb), "propose_schema": True, "schema_file": "s.yaml"}).fit(task, tiny_base)
    arm = make_method("extract", {"kb": str(kb), "propose_schema": True, "propose_documents": 2, "extract_tokens": 8})
    adapted = arm.fit(task, tiny_base, tmp_path, progress=False)
    written = Schema.read(tmp_path / "proposed-schema.yaml")
    assert written.spec == adapted.recipe.program["schema"]
    d = measure(adapted, task, task.splits["test"], max_new_tokens=4, progress=False, latency_requests=0).longdoc
    assert d["proposal"]["documents"] == 2 and d["proposal"]["questions"] >= 1
    # the tiny random model may well propose nothing usable: then the default runs, and says so
    said = "named a field" if d["proposal"]["fallback"] else "unconfirmed"
    assert said in adapted.recipe.program["schema_source"] and said in d["schema"]


def test_pearl_predictions_say_cached_only_when_every_call_was_replayed(story_task, tiny_base):
    from tailor.engine import ResultCache
    from tailor.methods import make_method
    kb, task = story_task
    adapted = make_method("pearl", {"kb": str(kb), "mine_questions": 0, "demo_questions": 0, "max_retries": 0,
                                    "plan_tokens": 12, "step_tokens": 4}).fit(task, tiny_base, progress=False)
    engine = adapted.engine(ResultCache())
    rows = task.splits["test"]
    first = adapted.predict(engine, task, rows, 4)
    again = adapted.predict(engine, task, rows, 4)
    assert not any(p.cached for p in first) and all(p.cached and p.latency_s == 0 for p in again)
    assert [p.prediction for p in first] == [p.prediction for p in again]
