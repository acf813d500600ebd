"""`tailor export ARM --gguf`: an arm merged into tiny-test (a Llama with the SmolLM2 tokenizer)
written as GGUF, read back by transformers' own GGUF loader and measured through Tailor's
measurement path: the same predictions as the merged safetensors model; an Ollama Modelfile whose
pieces rebuild the arm's prompts; arms that are not one model refused by capability; llama.cpp's
answers where llama-cpp-python is installed."""

from __future__ import annotations

import dataclasses
import json
import shutil

import gguf
import pytest
from typer.testing import CliRunner

from tailor.cli import app
from tailor.datasets import load_task
from tailor.errors import TailorError
from tailor.export.arm import export_arm, stays_with_tailor
from tailor.export.check import as_model, llama_cpp_missing, llama_cpp_predictions, predictions, reload_gguf
from tailor.export.gguf_file import check_exportable, permute
from tailor.export.modelfile import prompt_format
from tailor.methods import load_adapted, make_method, save_adapted
from tailor.recipe import ShotSpec


@pytest.fixture(scope="module")
def task():
    return load_task("tweet-sentiment")


@pytest.fixture(scope="module")
def lora_arm(tiny_base, task, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "lora"
    adapted = make_method("lora", {"steps": 6, "batch_size": 8, "max_train_examples": 48, "lr": 5e-2}).fit(
        task, tiny_base, progress=False)
    save_adapted(adapted, folder)
    return folder


@pytest.fixture(scope="module")
def f32_export(lora_arm, tiny_base, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "arm.gguf"
    done, adapted, merged = export_arm(lora_arm, tiny_base, out, "f32")
    return done, adapted, merged


def test_gguf_holds_llama_cpp_names_tokenizer_and_template(f32_export, tiny_base):
    done, adapted, merged = f32_export
    r = gguf.GGUFReader(done.gguf.path)
    assert r.fields["general.architecture"].contents() == "llama"
    assert r.fields["llama.attention.head_count_kv"].contents() == 2
    names = {t.name for t in r.tensors}
    assert {"token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight", "blk.1.ffn_down.weight"} <= names
    assert "output.weight" not in names   # tied embeddings: llama.cpp reads the head from token_embd
    assert len(r.tensors) == 2 + 9 * 2
    tok = tiny_base.tokenizer
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    assert len(tokens) == 49152 and tokens[tok.convert_tokens_to_ids("Ġthe")] == "Ġthe"
    types = r.fields["tokenizer.ggml.token_type"].contents()
    assert types[1] == gguf.TokenType.CONTROL and types[100] == gguf.TokenType.NORMAL
    assert r.fields["tokenizer.ggml.pre"].contents() == "gpt-2"   # what the bundled tokenizer's splitter is
    assert r.fields["tokenizer.ggml.add_bos_token"].contents() is False
    assert r.fields["tokenizer.chat_template"].contents() == adapted.builder.chat_template
    # the q rows are in llama.cpp's rotary order: permuted from the merged model's, not copied
    q = next(t for t in r.tensors if t.name == "blk.0.attn_q.weight")
    hf = merged.model.layers[0].self_attn.q_proj.weight.detach().numpy()
    stored = q.data.reshape(hf.shape)
    assert (stored == permute(hf, 4, 4)).all() and not (stored == hf).all()


def test_q8_0_export_is_smaller_and_within_one_quantisation_step(lora_arm, tiny_base, tmp_path, f32_export):
    done, adapted, merged = export_arm(lora_arm, tiny_base, tmp_path / "arm-q8.gguf", "q8_0")
    assert done.gguf.by_type == {"Q8_0": 15, "F32": 5}
    assert done.gguf.bytes < 0.4 * f32_export[0].gguf.bytes
    t = next(t for t in gguf.GGUFReader(done.gguf.path).tensors if t.name == "blk.1.ffn_up.weight")
    ref = merged.model.layers[1].mlp.up_proj.weight.detach().numpy()
    err = abs(gguf.dequantize(t.data, t.tensor_type).reshape(ref.shape) - ref).max()
    assert 0 < err <= abs(ref).max() / 127   # q8_0: at most one step of a 32-value block's int8 scale


def test_modelfile_rebuilds_the_arms_prompts(f32_export, task):
    done, adapted, _ = f32_export
    text = done.modelfile.read_text()
    assert "\nFROM ./arm.gguf\n" in text and done.no_template is None
    assert f'SYSTEM """{adapted.recipe.instruction}"""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text
    fmt = prompt_format(adapted.builder)
    assert fmt.pre == {"system": "<|im_start|>system\n", "user": "<|im_start|>user\n",
                       "assistant": "<|im_start|>assistant\n"}
    assert fmt.tail == "<|im_start|>assistant\n" and set(fmt.post.values()) == {"<|im_end|>\n"}
    assert ('{{ range $i, $_ := .Messages }}{{ if eq .Role "system" }}<|im_start|>system\n{{ .Content }}<|im_end|>\n'
            in text)
    rows = task.splits["test"][:5]
    for ex, prompt in zip(rows, adapted.prompts(rows)):
        assert fmt.render(adapted.builder.messages(ex)) == prompt


def test_prompting_arm_exports_the_base_with_its_fixed_examples(tiny_base, task, tmp_path):
    few = make_method("few-shot", {"k": 2}).fit(task, tiny_base)
    save_adapted(few, tmp_path / "few")
    done, adapted, model = export_arm(tmp_path / "few", tiny_base, tmp_path / "out" / "few.gguf", "f16")
    assert model is tiny_base.model
    text = done.modelfile.read_text()
    shots = [ex for ex in adapted.pool if ex.id in few.recipe.shots.ids]
    assert text.count("MESSAGE user") == 2 and text.count("MESSAGE assistant") == 2
    assert f'MESSAGE assistant """{shots[0].target}"""' in text
    assert any("scoring each option" in n for n in done.stays_with_tailor)
    # what a RAG or icl arm's recipe does beyond one prompt is said, not silently dropped
    rag = dataclasses.replace(adapted, recipe=adapted.recipe.model_copy(update={
        "retriever": {"kb": "/kb", "k": 3}, "shots": ShotSpec(selector="similarity", k=4, ids=[])}))
    notes = stays_with_tailor(rag)
    assert any(n.startswith("the retriever (/kb, k=3) stays with Tailor") for n in notes)
    assert any("chosen per input (similarity)" in n for n in notes)


def test_arms_that_are_not_one_model_are_refused_by_capability(lora_arm, tiny_base, task, tmp_path):
    recipe = json.loads((lora_arm / "recipe.json").read_text())
    for method, why in (("reward-model", "it is a scorer"), ("qlora", "it was trained over a 4-bit copy of the base"),
                        ("pearl", "it answers through a program")):
        folder = tmp_path / method
        shutil.copytree(lora_arm, folder)
        (folder / "recipe.json").write_text(json.dumps({**recipe, "method": method}))
        with pytest.raises(TailorError, match=f"a {method} arm cannot be exported as GGUF: {why}"):
            export_arm(folder, tiny_base, tmp_path / "x.gguf")
    soft = make_method("prompt-tuning", {"steps": 2, "batch_size": 8, "max_train_examples": 16}).fit(
        task, tiny_base, progress=False)
    save_adapted(soft, tmp_path / "soft")
    with pytest.raises(TailorError, match="prompt-tuning arm cannot be exported as GGUF: .*not a weight delta"):
        export_arm(tmp_path / "soft", tiny_base, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_architectures_not_checked_are_refused():
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM

    from tailor.models import tiny_config
    with pytest.raises(TailorError, match="a GPT2LMHeadModel model: Tailor writes GGUF for LlamaForCausalLM"):
        check_exportable(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)))
    with pytest.raises(TailorError, match="bias terms"):
        check_exportable(LlamaForCausalLM(tiny_config(64, attention_bias=True)))
    with pytest.raises(TailorError, match="rope type 'llama3'"):
        check_exportable(LlamaForCausalLM(tiny_config(64, rope_parameters={
            "rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 1024})))


def test_the_command_checks_the_gguf_against_the_merged_model(lora_arm, tmp_path, tiny_base, task):
    """`tailor export --gguf --check N`: the file read back by transformers (and llama.cpp where
    installed) answers every row as the merged safetensors model does (f32: the same weights)."""
    result = CliRunner().invoke(app, ["export", str(lora_arm), "--gguf", str(tmp_path / "m.gguf"), "--quant", "f32",
                                      "--check", "12"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "GGUF written" in text and "export check: 12 tweet-sentiment test rows" in text
    assert "GGUF m.gguf (transformers) answers every one of the 12 rows as the merged model does" in text
    assert "tokenised differently by the GGUF's tokenizer: transformers 0" in text
    if llama_cpp_missing() is None:
        assert "GGUF m.gguf (llama.cpp) answers every one of the 12 rows as the merged model does" in text
        assert "llama.cpp 0 of 12" in text
    assert (tmp_path / "Modelfile").is_file()
    # the trained adapter did something: the base alone answers these rows otherwise
    adapted = load_adapted(lora_arm, tiny_base)
    base = dataclasses.replace(adapted, model=tiny_base.model, weights_id=tiny_base.weights_id)
    rows = task.splits["test"][:12]
    assert [p.probs for p in predictions(base, task, rows)] != [p.probs for p in predictions(adapted, task, rows)]
    bad = CliRunner().invoke(app, ["export", str(lora_arm), "--gguf", str(tmp_path / "m.gguf"), "--quant", "q9_z"])
    assert isinstance(bad.exception, TailorError) and "'q9_z' is not one of f32, f16" in str(bad.exception)
    assert "q4_k_m" in str(bad.exception)


@pytest.mark.skipif(llama_cpp_missing() is not None, reason=str(llama_cpp_missing()))
def test_a_k_quant_is_written_by_llama_cpps_quantizer_and_read_back(lora_arm, tiny_base, task, tmp_path):
    """q4_k_m through llama.cpp: its file type recorded, the F16 intermediate gone, and both readers
    answer. tiny-test's rows (64 and 128 wide) do not divide into k-quants' 256-value blocks, so
    llama.cpp writes its own fallback types for them, which the file says tensor by tensor."""
    done, adapted, merged = export_arm(lora_arm, tiny_base, tmp_path / "arm-q4km.gguf", "q4_k_m")
    reader = gguf.GGUFReader(done.gguf.path)
    file_type = reader.fields["general.file_type"]
    assert int(file_type.parts[file_type.data[0]][0]) == 15   # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert done.gguf.tensors == 20 and sum(done.gguf.by_type.values()) == 20 and "F32" in done.gguf.by_type
    # no row of tiny-test fits a k-quant block: every 2-D tensor is a named fallback, none left unsaid
    assert len(done.gguf.fallbacks) == 20 - done.gguf.by_type["F32"] and all(" (" in f for f in done.gguf.fallbacks)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Modelfile", "arm-q4km.gguf"]   # no F16 file left behind
    rows = task.splits["test"][:6]
    model, tok, _ = reload_gguf(done.gguf.path)   # transformers dequantises what llama.cpp wrote
    read = predictions(as_model(adapted, model, tok, "q4km"), task, rows)
    lc = llama_cpp_predictions(done.gguf.path, adapted, task, rows, threads=2)
    assert lc["token_mismatches"] == 0 and len(lc["predictions"]) == len(read) == 6
    assert all(p.prediction in task.labels for p in read + lc["predictions"])


@pytest.mark.skipif(llama_cpp_missing() is not None, reason=str(llama_cpp_missing()))
def test_llama_cpp_answers_as_the_merged_model(f32_export, task):
    done, adapted, merged = f32_export
    rows = task.splits["test"][:8]
    lc = llama_cpp_predictions(done.gguf.path, adapted, task, rows, threads=2)
    assert lc["token_mismatches"] == 0
    ref = predictions(dataclasses.replace(adapted, model=merged, weights_id="merged"), task, rows)
    assert [p.prediction for p in lc["predictions"]] == [p.prediction for p in ref]
