"""Base models: dtype and device choice, tiny-test loading, weights identity."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tailor import models
from tailor.errors import TailorError
from tailor.models import cpu_has_bf16_units, load_base, model_dir, pick_device, pick_dtype


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}


def test_bf16_decision_reflects_cpu_flags():
    flags = _cpu_flags()
    has_units = bool(flags & {"amx_bf16", "avx512_bf16"})
    assert cpu_has_bf16_units() == has_units
    assert pick_dtype(torch.device("cpu")) == (torch.bfloat16 if has_units else torch.float32)
    assert pick_dtype(torch.device("cpu"), "auto") == pick_dtype(torch.device("cpu"))


@pytest.mark.parametrize("has_units,want", [(True, torch.bfloat16), (False, torch.float32)])
def test_cpu_dtype_follows_bf16_units(monkeypatch, has_units, want):
    monkeypatch.setattr(models, "cpu_has_bf16_units", lambda: has_units)
    assert pick_dtype(torch.device("cpu")) == want


@pytest.mark.parametrize("bf16_ok,want", [(True, torch.bfloat16), (False, torch.float16)])
def test_cuda_dtype(monkeypatch, bf16_ok, want):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
    assert pick_dtype(torch.device("cuda")) == want


def test_other_devices_default_to_fp32():
    assert pick_dtype(torch.device("mps")) == torch.float32


@pytest.mark.parametrize("name,want", [("bf16", torch.bfloat16), ("bfloat16", torch.bfloat16),
                                       ("fp16", torch.float16), ("fp32", torch.float32),
                                       ("float32", torch.float32)])
def test_requested_dtype_overrides(name, want):
    assert pick_dtype(torch.device("cpu"), name) == want
    assert pick_dtype(torch.device("cuda"), name) == want


def test_unknown_dtype_is_a_user_error():
    with pytest.raises(TailorError, match="dtype 'int3' is not one of auto, bf16"):
        pick_dtype(torch.device("cpu"), "int3")


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("cuda:1") == torch.device("cuda:1")  # an explicit choice is taken as given
    auto = pick_device()
    assert auto == pick_device("auto")
    assert (auto.type == "cuda") == torch.cuda.is_available()


def test_tiny_test_loads(tiny_base):
    b = tiny_base
    assert b.name == "tiny-test" and b.dtype == torch.float32 and b.device == torch.device("cpu")
    assert next(b.model.parameters()).dtype == torch.float32
    assert not b.model.training
    assert b.model.config.vocab_size == len(b.tokenizer)  # the SmolLM2 tokenizer, whole
    assert b.tokenizer.chat_template and b.tokenizer.pad_token_id is not None
    assert b.n_params < 5_000_000  # tiny: the test suite stays fast
    name, digest, dtype = b.weights_id.split(":")
    assert name == "tiny-test" and len(digest) == 16 and dtype == "float32"
    assert list(b.path.glob("*.safetensors")) and not list(b.path.glob("*.bin"))


def test_weights_id_depends_on_dtype_and_is_stable(tiny_base):
    again = load_base("tiny-test", dtype="fp32", device="cpu")
    assert again.weights_id == tiny_base.weights_id
    bf16 = load_base("tiny-test", dtype="bf16", device="cpu")
    assert bf16.dtype == torch.bfloat16 and next(bf16.model.parameters()).dtype == torch.bfloat16
    assert bf16.weights_id != tiny_base.weights_id


def test_weights_hash_follows_content(tmp_path, monkeypatch):
    from safetensors.torch import save_file
    monkeypatch.setenv("TAILOR_CACHE", str(tmp_path / "cache"))  # the memo goes there
    save_file({"w": torch.zeros(3)}, tmp_path / "model.safetensors")
    first = models.weights_hash(tmp_path)
    assert first == models.weights_hash(tmp_path)  # memoised
    save_file({"w": torch.ones(3)}, tmp_path / "model.safetensors")
    assert models.weights_hash(tmp_path) != first


def test_local_folder_loads_and_pickles_are_refused(tiny_base, tmp_path):
    assert model_dir(str(tiny_base.path)) == tiny_base.path
    local = load_base(str(tiny_base.path), dtype="fp32", device="cpu")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(local.model(ids).logits, tiny_base.model(ids).logits)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(TailorError, match="no \\*.safetensors weights found"):
        model_dir(str(tmp_path))


def test_missing_model_is_a_user_error():
    with pytest.raises(TailorError, match="model '/no/such/folder' is not a bundled model"):
        load_base("/no/such/folder", device="cpu")


def test_unreachable_hub_switches_to_offline_and_fails_fast(monkeypatch):
    """Without a route to the hub, a hub id must fail at once (no minute of HF retries)."""
    import socket

    import huggingface_hub.constants as hub

    def refuse(*a, **k):
        raise OSError("no route")

    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(TailorError, match="is not a bundled model"):
        load_base("no-such-org/no-such-model", device="cpu")
    assert hub.HF_HUB_OFFLINE is True
