"""Distillation: the KD losses against hand computations, label-set KL across two tokenizers, the
vocabulary check of token-level soft labels, teacher labelling that resumes without relabelling,
a layer-pruned student that plain transformers loads, and the imitation check in a ladder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import write_tickets
from tailor.errors import TailorError

QUICK = {"steps": 3, "batch_size": 8, "precision": "fp32", "log_every": 1}
SMALL = {"max_params_ratio": 1.0}   # tiny-test is mostly embeddings: no pruning halves it


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def tickets(tmp_path_factory):
    from tailor.task import load_task_file
    path = write_tickets(tmp_path_factory.mktemp("distill") / "tickets.jsonl", 40)
    return load_task_file(path).split(seed=0, test=6, dev=4)


@pytest.fixture(scope="module")
def teacher(tiny_base, tickets, tmp_path_factory):
    from tailor.methods import make_method, save_adapted
    folder = tmp_path_factory.mktemp("teacher") / "lora"
    adapted = make_method("lora", {**QUICK, "lr": 1e-2}).fit(tickets, tiny_base, folder, progress=False)
    save_adapted(adapted, folder)
    return folder


@pytest.fixture(scope="module")
def other_tokenizer_model(tmp_path_factory):
    """A tiny Llama with its own BPE tokenizer (trained here on ticket words): labels split into
    other pieces than SmolLM2's tokenizer makes of them."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    from tailor.models import tiny_config
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    words = ["ticket invoice charge refund crash error freeze hello thanks question billing bug other",
             "Classify the text. Answer with exactly one of: billing, bug. Text: Answer:"] * 20
    tok.train_from_iterator(words, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>")
    torch.manual_seed(1)
    model = LlamaForCausalLM(tiny_config(len(fast), bos_token_id=1, eos_token_id=2, pad_token_id=2))
    folder = tmp_path_factory.mktemp("bpe-student") / "model"
    model.save_pretrained(folder, safe_serialization=True)
    fast.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- the losses by hand


def test_label_set_and_top_k_kl_match_a_hand_computation():
    from tailor.distill.losses import label_set_kl, topk_kl
    scores, teacher, t = torch.tensor([-1.0, -2.5, -0.2]), torch.tensor([0.6, 0.1, 0.3]), 2.0
    s = [math.exp(x / t) for x in scores.tolist()]
    s = [x / sum(s) for x in s]
    q = [p ** (1 / t) for p in teacher.tolist()]
    q = [x / sum(q) for x in q]
    hand = t * t * sum(qi * (math.log(qi) - math.log(si)) for qi, si in zip(q, s))
    assert label_set_kl(scores, teacher, t).item() == pytest.approx(hand, rel=1e-5)
    assert label_set_kl(scores, torch.softmax(scores, -1), 1.0).item() == pytest.approx(0.0, abs=1e-6)

    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 3.0, -2.0]])
    ids, lp = torch.tensor([[0, 3], [2, 1]]), torch.tensor([[-0.3, -1.6], [-0.1, -2.5]])
    hand = 0.0
    for row in range(2):
        student = [math.exp(x / t) for x in logits[row].tolist()]
        student = [math.log(x / sum(student)) for x in student]
        teach = [math.exp(x / t) for x in lp[row].tolist()]
        teach = [x / sum(teach) for x in teach]
        hand += sum(q * (math.log(q) - student[i]) for q, i in zip(teach, ids[row].tolist()))
    assert topk_kl(logits, ids, lp, t).item() == pytest.approx(t * t * hand, rel=1e-5)


def test_kept_layers_are_evenly_spread_and_keep_the_first_and_last():
    from tailor.distill.student import kept_layers
    assert kept_layers(30, 10) == [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
    assert kept_layers(12, 6) == [0, 2, 4, 7, 9, 11] and kept_layers(2, 2) == [0, 1] and kept_layers(5, 1) == [4]
    with pytest.raises(TailorError, match="between 1 and the base's 30 layers"):
        kept_layers(30, 31)


# ---------------------------------------------------------------- teacher labelling


def test_a_killed_teacher_labelling_resumes_and_never_labels_a_row_twice(teacher, tickets, tmp_path, monkeypatch):
    from tailor.distill.teacher import label_rows
    from tailor.engine import Engine
    from tailor.predict import Journal
    rows = tickets.splits["train"][:20]
    scored, score, add = [], Engine.score, Journal.add
    monkeypatch.setattr(Engine, "score", lambda self, p, o, adapters=None: scored.extend(p) or score(self, p, o, adapters))
    flushes = []

    def add_then_die(self, entries):
        add(self, entries)
        flushes.append(len(entries))
        if len(flushes) == 2:
            raise Killed()

    monkeypatch.setattr(Journal, "add", add_then_die)
    opts = {"batch_size": 4, "progress": False}
    with pytest.raises(Killed):
        label_rows(teacher, rows, **opts)
    assert len(scored) == 8
    monkeypatch.setattr(Journal, "add", add)
    scored.clear()
    first = label_rows(teacher, rows, **opts)
    # only the 12 rows the journal lacked ran (the 8 done are neither scored again nor read from the engine cache)
    assert len(scored) == 12 and first.labelling["from_journal"] == 8 and first.labelling["computed"] == 12
    assert sorted(first.rows) == sorted(ex.id for ex in rows)
    assert all(set(r["probs"]) == {"billing", "bug"} and r["label"] == max(r["probs"], key=r["probs"].get)
               for r in first.rows.values())
    scored.clear()
    again = label_rows(teacher, rows, **opts)    # a second arm with the same teacher and rows
    assert scored == [] and again.labelling["reused"] and again.rows == first.rows


# ---------------------------------------------------------------- students


def test_soft_labels_across_two_tokenizers_train_on_the_label_set_kl(teacher, tickets, other_tokenizer_model,
                                                                     tiny_base, tmp_path):
    """The teacher (SmolLM2's tokenizer) and the student (its own BPE) share only the label texts:
    the first step's loss is the KL between the teacher's label probabilities and the student's
    own scoring of the labels, computed here through the student's engine."""
    from tailor.distill.losses import label_set_kl
    from tailor.distill.teacher import label_rows
    from tailor.methods import make_method
    from tailor.models import load_tokenizer
    from tailor.prompts import builder_for
    from tailor.train.loop import train_pool
    student_tok = load_tokenizer(str(other_tokenizer_model))
    teacher_tok = tiny_base.tokenizer
    assert [len(student_tok(f" {w}").input_ids) for w in ("billing", "bug")] != \
        [len(teacher_tok(f" {w}").input_ids) for w in ("billing", "bug")]
    arm = make_method("distill", {"teacher": str(teacher), "student": str(other_tokenizer_model), "labels": "soft",
                                  "alpha": 0.0, "temperature": 2.0, **QUICK, **SMALL, "lr": 0.0})
    from tailor.models import load_base
    student = load_base(str(other_tokenizer_model), dtype="fp32")
    builder = builder_for(tickets, student.tokenizer, student.model.config)
    pool = train_pool(tickets, arm)
    labels = label_rows(teacher, pool, progress=False).rows
    from tailor.engine import Engine
    engine = Engine(student.model, student.tokenizer, "student", None, progress=False)
    prompts = [builder.build(ex).text for ex in pool]
    scores = engine.score(prompts, [[builder.target_text(x) for x in tickets.labels]] * len(pool))
    hand = {ex.id: label_set_kl(torch.tensor(s.logprobs), torch.tensor([labels[ex.id]["probs"][x] for x in tickets.labels]),
                                2.0).item() for ex, s in zip(pool, scores)}
    adapted = arm.fit(tickets, tiny_base, tmp_path / "soft", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "soft" / "train_metrics.jsonl").open()]
    from tailor.train.data import step_examples
    first_step = [e.id for e in step_examples(_encoded_ids(pool), 8, 0, 0)]   # the loop's own order
    assert rows[0]["loss"] == pytest.approx(sum(hand[i] for i in first_step) / len(first_step), rel=1e-4)
    assert adapted.tokenizer.get_vocab() == student.tokenizer.get_vocab()   # the student keeps its own tokenizer
    assert adapted.recipe.train["distill"]["student"]["spec"] == str(other_tokenizer_model)


def _encoded_ids(pool):
    from tailor.train.data import Encoded
    return [Encoded(ex.id, [], [[]]) for ex in pool]


def test_token_level_soft_labels_refuse_a_student_with_another_vocabulary(tiny_base, other_tokenizer_model, tmp_path):
    from tailor.methods import make_method, save_adapted
    from tailor.task import load_task_file
    path = tmp_path / "gen.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"say {w}", "completion": w}) + "\n"
                            for w in ["hello", "thanks", "error", "refund"] * 5))
    task = load_task_file(path).split(seed=0, test=2, dev=2)
    folder = tmp_path / "gen-teacher"
    save_adapted(make_method("lora", QUICK).fit(task, tiny_base, folder, progress=False), folder)
    arm = make_method("distill", {"teacher": str(folder), "student": str(other_tokenizer_model), "labels": "soft",
                                  **QUICK, **SMALL})
    with pytest.raises(TailorError) as e:
        arm.fit(task, tiny_base, tmp_path / "soft", progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "config.vocab_size 49152 (teacher) vs" in msg and "tokenizers" in msg
    assert "use labels: hard" in msg


def test_token_level_soft_labels_keep_the_teacher_top_k_compactly(tiny_base, tmp_path):
    from tailor.methods import make_method, save_adapted
    from tailor.task import load_task_file
    path = tmp_path / "gen.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"say {w} {i}", "completion": f"{w} {w}"}) + "\n"
                            for i, w in enumerate(["hello", "thanks", "error", "refund"] * 4)))
    task = load_task_file(path).split(seed=0, test=2, dev=2)
    folder = tmp_path / "gen-teacher"   # trained enough to answer with words (a random one answers nothing)
    save_adapted(make_method("lora", {**QUICK, "steps": 20, "lr": 3e-2}).fit(task, tiny_base, folder, progress=False),
                 folder)
    arm = make_method("distill", {"teacher": str(folder), "student": {"layers": 1}, "labels": "soft", "top_k": 4,
                                  "max_new_tokens": 3, **QUICK, **SMALL})
    adapted = arm.fit(task, tiny_base, tmp_path / "soft", progress=False)
    lab = adapted.recipe.train["distill"]["labelling"]
    assert lab["top_k"] == 4 and 0 < lab["score_bytes"] and lab["score_bytes"] * 1000 < lab["full_row_bytes"]
    rows = [json.loads(line) for line in (tmp_path / "soft" / "train_metrics.jsonl").open()]
    assert all(math.isfinite(r["loss"]) and r["kd"] >= 0 for r in rows)


def test_a_layer_pruned_student_loads_with_plain_transformers_and_predicts_as_tailor(teacher, tickets, tiny_base,
                                                                                     tmp_path):
    from transformers import AutoModelForCausalLM

    from tailor.engine import Engine
    from tailor.methods import load_adapted, make_method, save_adapted
    before = {n: p.clone() for n, p in tiny_base.model.named_parameters()}
    arm = make_method("distill", {"teacher": str(teacher), "student": {"layers": 1}, "labels": "hard", **QUICK, **SMALL,
                                  "lr": 1e-2})
    adapted = arm.fit(tickets, tiny_base, tmp_path / "student", progress=False)
    save_adapted(adapted, tmp_path / "student")
    assert all(torch.equal(p, before[n]) for n, p in tiny_base.model.named_parameters())   # the base is untouched
    test = tickets.splits["test"]
    ours = adapted.predict(adapted.engine(None, progress=False), tickets, test)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "student" / "model", dtype=torch.float32)
    assert plain.config.num_hidden_layers == 1 and len(plain.model.layers) == 1
    assert sum(p.numel() for p in plain.parameters()) == adapted.recipe.train["distill"]["student"]["params"]
    # the same label log-likelihoods from plain transformers forwards
    for ex, p in zip(test, ours):
        prompt = adapted.builder.encode(adapted.builder.build(ex).text)
        lps = []
        for label in tickets.labels:
            target = adapted.builder.encode(adapted.builder.target_text(label))
            with torch.no_grad():
                logits = plain(torch.tensor([prompt + target])).logits[0].float().log_softmax(-1)
            lps.append(sum(logits[len(prompt) - 1 + j, t].item() for j, t in enumerate(target)))
        best = tickets.labels[max(range(len(lps)), key=lps.__getitem__)]
        assert best == p.prediction
        probs = torch.softmax(torch.tensor(lps), -1).tolist()
        assert probs == pytest.approx([p.probs[x] for x in tickets.labels], abs=1e-4)
    loaded = load_adapted(tmp_path / "student", tiny_base)
    again = loaded.predict(Engine(loaded.model, loaded.tokenizer, loaded.weights_id, None, progress=False), tickets, test)
    assert [p.prediction for p in again] == [p.prediction for p in ours] and loaded.weights_id == adapted.weights_id


def test_a_student_over_the_parameter_budget_and_a_missing_teacher_are_one_line_errors(tiny_base, tickets, tmp_path):
    from tailor.methods import make_method
    with pytest.raises(TailorError, match=r"^distill: the student \(tiny-test with 1 of 2 layers\) has .* at most "
                                          r"max_params_ratio 0.5"):
        make_method("distill", {"labels": "gold", "student": {"layers": 1}, **QUICK}).fit(tickets, tiny_base, None,
                                                                                           progress=False)
    with pytest.raises(TailorError, match="labels: soft needs a teacher"):
        make_method("distill", {"labels": "soft", **QUICK}).fit(tickets, tiny_base, None, progress=False)
    with pytest.raises(TailorError, match="'nope' is not an arm folder"):
        make_method("distill", {"teacher": "nope", **QUICK}).fit(tickets, tiny_base, None, progress=False)


def test_a_retrained_teacher_or_an_edited_unlabelled_file_changes_the_fit_reuse_key(teacher, tickets, tmp_path):
    import shutil

    from tailor.fits import fit_key
    from tailor.methods import make_method
    copy = tmp_path / "teacher"
    shutil.copytree(teacher, copy)
    unlabelled = tmp_path / "u.jsonl"
    unlabelled.write_text(json.dumps({"id": "u0", "text": "ticket: crash"}) + "\n")
    arm = make_method("distill", {"teacher": str(copy), "unlabelled": str(unlabelled), **QUICK})
    key = fit_key(arm, tickets, "base")
    assert fit_key(arm, tickets, "base") == key
    recipe = json.loads((copy / "recipe.json").read_text())
    recipe["weights"]["digest"] = "0" * 64          # the same folder, retrained
    (copy / "recipe.json").write_text(json.dumps(recipe))
    retrained = fit_key(arm, tickets, "base")
    unlabelled.write_text(json.dumps({"id": "u0", "text": "ticket: refund"}) + "\n")
    assert len({key, retrained, fit_key(arm, tickets, "base")}) == 3


# ---------------------------------------------------------------- the imitation check


def test_the_imitation_check_counts_copied_errors_and_warns_when_style_beats_content():
    from tailor.distill.imitation import imitation, warnings_for
    from tailor.evaluate import Prediction
    from tailor.results import ArmResult
    gold = ["a", "b", "a", "b", "a"]
    teacher = [Prediction(str(i), p, g, 1, 1, 0.0) for i, (p, g) in enumerate(zip(["a", "a", "a", "a", "a"], gold))]
    copier = [Prediction(str(i), p, g, 1, 1, 0.0) for i, (p, g) in enumerate(zip(["a", "a", "b", "a", "a"], gold))]
    im = imitation("classify", copier, teacher, "accuracy", 0.4, 0.6)
    assert im["agreement"] == pytest.approx(0.8) and im["teacher_errors"] == 2 and im["copied_errors"] == 2
    assert im["copied_error_rate"] == 1.0 and im["ratio"] == pytest.approx(0.4 / 0.6)
    ref = ArmResult(name="gold", method="distill", options={"labels": "gold"},
                    imitation={**im, "agreement": 0.5, "student": 0.5})
    arm = ArmResult(name="hard", method="distill", options={"labels": "hard"}, imitation=dict(im))
    fine = ArmResult(name="soft", method="distill", options={"labels": "soft"},
                     imitation={**im, "agreement": 0.9, "student": 0.55})
    warnings_for([ref, arm, fine])
    assert "learned the teacher's style" in arm.imitation["warning"] and "0.400 < 0.500" in arm.imitation["warning"]
    assert "warning" not in fine.imitation and "warning" not in ref.imitation


def test_a_ladder_distils_from_its_lora_arm_and_reports_the_imitation_check(tmp_path):
    from tailor.config import experiment_from_dict
    from tailor.ladder import run_ladder
    tickets = write_tickets(tmp_path / "tickets.jsonl", 40)
    unlabelled = tmp_path / "unlabelled.jsonl"
    unlabelled.write_text("".join(json.dumps({"id": f"u{i}", "text": f"ticket u{i}: crash error {i}"}) + "\n"
                                  for i in range(10)))
    student = {"teacher": "teacher", "student": {"layers": 1}, **SMALL, **QUICK}
    exp = experiment_from_dict({
        "model": "tiny-test", "task": str(tickets), "task_options": {"test": 6, "dev": 4}, "dtype": "fp32",
        "runs_dir": str(tmp_path / "runs"), "curate": False, "forgetting": False, "latency_requests": 2, "cache": False,
        "arms": [{"name": "teacher", "method": "lora", **QUICK},
                 {"name": "gold", "method": "distill", "labels": "gold", **student},
                 {"name": "soft+unlabelled", "method": "distill", "labels": "soft", "unlabelled": str(unlabelled),
                  **student}]}, "exp.yaml")
    results = run_ladder(exp, progress=False)
    arms = {a.name: a for a in results.arms}
    assert all(a.ok for a in arms.values()), {n: a.error for n, a in arms.items()}
    soft = arms["soft+unlabelled"]
    assert soft.imitation["teacher_arm"] == "teacher" and soft.imitation["rows"] == 6
    assert soft.train["data"]["unlabelled"] == 10 and soft.train["distill"]["unlabelled"]["used"] == 10
    assert soft.train["distill"]["labelling"]["rows"] == soft.train["data"]["kept"]
    # the arm's cost includes its teacher's training and the labelling; its token price scales with its size
    assert soft.cost.train_time_s == pytest.approx(soft.train["training_s"] + soft.train["distill"]["labelling"]["wall_s"]
                                                   + arms["teacher"].cost.train_time_s)
    ratio = soft.train["distill"]["student"]["params"] / 3219776        # tiny-test's parameters
    tokens = soft.cost.prompt_tokens_per_request + soft.cost.completion_tokens_per_request
    assert soft.cost.cost_per_1k_requests == pytest.approx(tokens * 0.0002 * ratio, rel=1e-6)
    assert arms["teacher"].imitation is None and arms["gold"].imitation["teacher"] == arms["teacher"].metrics["accuracy"]
    run = Path(results.run_dir)
    recipe = json.loads((run / "arms" / "gold" / "recipe.json").read_text())
    assert recipe["options"]["teacher"] == str(run / "arms" / "teacher")
    html = (run / "report.html").read_text()
    assert "Distillation and the imitation check" in html and "Gudibande et al. 2023" in html
