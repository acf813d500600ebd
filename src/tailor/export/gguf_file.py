"""A merged Hugging Face model written as one GGUF file, as llama.cpp's `convert_hf_to_gguf.py`
writes a Llama-family model (its `LlamaModel` and `TextModel` classes): the same metadata keys,
tensor names from the `gguf` package's `TensorNameMap`, q/k weights permuted into llama.cpp's
rotary layout, 1-D tensors and norms kept in F32, and a byte-level BPE tokenizer (tokens, token
types, merges, special ids, pre-tokenizer name) with the arm's chat template.

Only what was checked is claimed: LlamaForCausalLM (SmolLM2, Llama 1-3 without llama3 rope
scaling). Anything else is refused in one line before a byte is written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from ..errors import TailorError
from .kquants import K_QUANTS, fallbacks, llama_cpp, quantize

# what `--quant` takes beside the k-quants (kquants.py): the types the gguf package writes itself,
# and the file type llama.cpp records for each
QUANTS: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "q5_1": (gguf.GGMLQuantizationType.Q5_1, gguf.LlamaFileType.MOSTLY_Q5_1),
    "q5_0": (gguf.GGMLQuantizationType.Q5_0, gguf.LlamaFileType.MOSTLY_Q5_0),
    "q4_1": (gguf.GGMLQuantizationType.Q4_1, gguf.LlamaFileType.MOSTLY_Q4_1),
    "q4_0": (gguf.GGMLQuantizationType.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
}

# the Hugging Face classes written, and the llama.cpp architecture each becomes
ARCHITECTURES = {"LlamaForCausalLM": gguf.MODEL_ARCH.LLAMA}

# llama.cpp's name for a byte-level BPE pre-tokenizer (tokenizer.ggml.pre), read from what the
# tokenizer actually does, so llama.cpp splits text as the arm's tokenizer did when it was measured
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                 r"|\s+(?!\S)|\s+")


@dataclass
class Written:
    path: Path
    quant: str
    bytes: int
    tensors: int
    by_type: dict[str, int] = field(default_factory=dict)   # tensors per GGML type
    fallbacks: list[str] = field(default_factory=list)      # tensors the type could not hold (written F16; a
                                                            # k-quant: llama.cpp's fallback type, named)
    pre_tokenizer: str = ""


def check_exportable(model) -> gguf.MODEL_ARCH:
    """The llama.cpp architecture of `model`, or a one-line refusal naming what is not written."""
    cls = type(model).__name__
    if cls not in ARCHITECTURES:
        raise TailorError(f"a {cls} model: Tailor writes GGUF for {', '.join(ARCHITECTURES)} (SmolLM2, Llama); "
                          "write safetensors with --merge and convert them with llama.cpp's convert_hf_to_gguf.py")
    cfg = model.config
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") not in ("default", "linear"):
        raise TailorError(f"rope type {rope.get('rope_type')!r}: Tailor's GGUF writer handles default and linear rope "
                          "only; write safetensors with --merge and convert them with llama.cpp's convert_hf_to_gguf.py")
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        raise TailorError("the merged model has bias terms on its projections (a bitfit arm): llama.cpp's Llama "
                          "layout, as transformers reads it back, has none, so the export would not answer as the arm")
    return ARCHITECTURES[cls]


def write_gguf(model, tokenizer, path: Path, quant: str = "f16", *, chat_template: str | None = None,
               name: str = "") -> Written:
    """Writes `model` (a plain transformers model, weights merged) and `tokenizer` to `path`
    atomically (a temporary file beside it, renamed when complete)."""
    check_quant(quant)
    if quant in K_QUANTS:   # F16 first, then llama.cpp's quantizer
        return _k_quant(model, tokenizer, Path(path), quant, chat_template=chat_template, name=name)
    arch = check_exportable(model)
    qtype, ftype = QUANTS[quant]
    cfg = model.config
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
    try:
        _hparams(writer, cfg, ftype, name)
        pre = _tokenizer(writer, tokenizer, cfg.vocab_size, chat_template)
        written = _tensors(writer, model, arch, qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    by_type: dict[str, int] = {}
    for t in written["types"].values():
        by_type[t] = by_type.get(t, 0) + 1
    return Written(path, quant, path.stat().st_size, len(written["types"]), by_type, written["fallbacks"], pre)


def check_quant(quant: str) -> None:
    if quant not in QUANTS and quant not in K_QUANTS:
        raise TailorError(f"--quant {quant!r} is not one of {', '.join([*QUANTS, *K_QUANTS])}")
    if quant in K_QUANTS:
        llama_cpp()   # refused now, not after the merge


def _k_quant(model, tokenizer, path: Path, quant: str, **kw) -> Written:
    f16 = path.with_name(f".{path.name}.f16-{os.getpid()}")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        source = write_gguf(model, tokenizer, f16, "f16", **kw)
        quantize(f16, tmp, quant)
        os.replace(tmp, path)
    finally:
        for p in (f16, tmp):
            if p.exists():
                p.unlink()
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    by_type: dict[str, int] = {}
    for t in types.values():
        by_type[t] = by_type.get(t, 0) + 1
    return Written(path, quant, path.stat().st_size, len(types), by_type, fallbacks(types), source.pre_tokenizer)


def _hparams(writer: gguf.GGUFWriter, cfg, ftype: gguf.LlamaFileType, name: str) -> None:
    # TextModel.set_gguf_parameters and LlamaModel.set_gguf_parameters, for what a Llama config holds
    writer.add_type(gguf.GGUFType.MODEL)
    if name:
        writer.add_name(name)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads or cfg.num_attention_heads)
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(cfg, "rope_theta", None))
    if theta is not None:
        writer.add_rope_freq_base(float(theta))
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_file_type(ftype)
    writer.add_vocab_size(cfg.vocab_size)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer.add_rope_dimension_count(head_dim)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def pre_tokenizer_name(tokenizer) -> str:
    """llama.cpp's name for how this tokenizer splits text before BPE, read from its
    tokenizer.json (convert_hf_to_gguf.py identifies it by hashing a test string's tokens, which
    names only tokenizers it has seen; reading the splitter covers a tokenizer transformers rebuilt)."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    steps = spec.get("pretokenizers", []) if spec.get("type") == "Sequence" else [spec]
    shape = []
    for s in steps:
        if s.get("type") == "ByteLevel" and not s.get("add_prefix_space"):
            shape.append(f"bytelevel{'+regex' if s.get('use_regex', True) else ''}")
        elif s.get("type") == "Digits" and s.get("individual_digits"):
            shape.append("digits")
        elif s.get("type") == "Split" and (s.get("pattern") or {}).get("Regex") == _LLAMA3_SPLIT:
            shape.append("llama3")
        else:
            shape.append(json.dumps(s, sort_keys=True)[:120])
    names = {("bytelevel+regex",): "gpt-2",                    # GPT-2's regex (llama.cpp: LLAMA_VOCAB_PRE_TYPE_GPT2)
             ("digits", "bytelevel+regex"): "smollm",         # digits one by one, then GPT-2's regex (SmolLM)
             ("llama3", "bytelevel"): "llama-bpe"}            # Llama 3's regex
    if tuple(shape) not in names:
        raise TailorError(f"the tokenizer splits text as {' + '.join(shape) or 'nothing'}: not a byte-level BPE "
                          f"pre-tokenizer Tailor can name for llama.cpp ({', '.join(names.values())})")
    return names[tuple(shape)]


def _tokenizer(writer: gguf.GGUFWriter, tok, vocab_size: int, chat_template: str | None) -> str:
    # TextModel.get_vocab_base and _set_vocab_gpt2
    backend = json.loads(tok.backend_tokenizer.to_str())
    if (backend.get("model") or {}).get("type") != "BPE" or not _byte_level(backend):
        raise TailorError("the tokenizer is not a byte-level BPE (GPT-2 style) tokenizer: Tailor writes only those "
                          "into GGUF (SmolLM2 and Llama 3 tokenizers are)")
    pre = pre_tokenizer_name(tok)
    vocab = tok.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise TailorError(f"the tokenizer has token id {max(vocab.values())} but the model only {vocab_size} embeddings")
    reverse = {i: t for t, i in vocab.items()}
    added = tok.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(reverse[i])
            # llama.cpp: a special added token is CONTROL (never produced by splitting text), others USER_DEFINED
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in backend["model"].get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for add, token_id in ((writer.add_bos_token_id, tok.bos_token_id), (writer.add_eos_token_id, tok.eos_token_id),
                          (writer.add_unk_token_id, tok.unk_token_id), (writer.add_pad_token_id, tok.pad_token_id)):
        if token_id is not None:
            add(token_id)
    # Tailor's prompts carry their own special tokens (the chat template writes them; the plain
    # layout starts with BOS): llama.cpp must add none, or it would run a prompt the arm never saw
    writer.add_add_bos_token(False)
    writer.add_add_space_prefix(False)
    template = chat_template if chat_template is not None else getattr(tok, "chat_template", None)
    if template:
        writer.add_chat_template(template)
    return pre


def _byte_level(backend: dict) -> bool:
    decoder = backend.get("decoder") or {}
    return decoder.get("type") == "ByteLevel" or any(d.get("type") == "ByteLevel" for d in decoder.get("decoders", []))


def permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """LlamaModel.permute in convert_hf_to_gguf.py: Hugging Face stores each head's rotary pairs as
    two halves, llama.cpp interleaves them."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensors(writer: gguf.GGUFWriter, model, arch: gguf.MODEL_ARCH, qtype: gguf.GGMLQuantizationType) -> dict:
    cfg = model.config
    names = gguf.get_tensor_name_map(arch, cfg.num_hidden_layers)
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    types: dict[str, str] = {}
    fallbacks: list[str] = []
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":   # llama.cpp reads the output head from token_embd
            continue
        new = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise TailorError(f"tensor {hf_name}: no GGUF name for it in the gguf package's {arch.name} map")
        data = tensor.detach().float().cpu().numpy()
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            data = permute(data, n_head, n_head)
        elif hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            data = permute(data, n_head, n_kv)
        # as the converter: 1-D tensors and norms stay F32 (most of ggml handles only F32 there)
        want = gguf.GGMLQuantizationType.F32 if data.ndim <= 1 or new.endswith("_norm.weight") else qtype
        try:
            out = gguf.quants.quantize(data, want)
        except gguf.QuantError:   # rows not a whole number of blocks: the converter falls back to F16 too
            want = gguf.GGMLQuantizationType.F16
            out = gguf.quants.quantize(data, want)
            fallbacks.append(new)
        writer.add_tensor(new, out, raw_dtype=want)
        types[new] = want.name
    return {"types": types, "fallbacks": fallbacks}
