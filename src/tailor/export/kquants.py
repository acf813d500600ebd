"""k-quants (q4_k_m and kin: what llama.cpp, Ollama and LM Studio users mostly run) through
llama.cpp's own quantizer, `llama_model_quantize` from llama-cpp-python's build of llama.cpp: the
`gguf` package writes the types it can quantize itself (gguf_file.QUANTS) but has no k-quant
quantizer. The arm is written F16 first (what llama.cpp's convert-then-quantize flow does),
then quantized into the destination; the F16 file is removed. Where llama-cpp-python is not
installed, a one-line refusal says how to get it (it compiles llama.cpp from source)."""

from __future__ import annotations

import ctypes
import os
import tempfile
from pathlib import Path

from ..errors import TailorError

# --quant -> llama.cpp's file type (its llama_ftype enum), as llama-quantize names them
K_QUANTS = {"q2_k": "Q2_K", "q3_k_s": "Q3_K_S", "q3_k_m": "Q3_K_M", "q3_k_l": "Q3_K_L", "q4_k_s": "Q4_K_S",
            "q4_k_m": "Q4_K_M", "q5_k_s": "Q5_K_S", "q5_k_m": "Q5_K_M", "q6_k": "Q6_K"}


def llama_cpp():
    """llama-cpp-python, or the one-line refusal that says how to install it."""
    try:
        import llama_cpp as module
    except ImportError:
        raise TailorError("k-quants are written by llama.cpp's own quantizer: pip install llama-cpp-python (it "
                          "compiles llama.cpp; cache the wheel), or write --quant f16 and run llama.cpp's "
                          "llama-quantize on it") from None
    return module


def quantize(src: Path, dst: Path, quant: str) -> None:
    """`src` (a GGUF file, F16 or F32) quantized to `quant` at `dst` by llama.cpp. llama.cpp logs a
    line per tensor to the process's stderr; it is kept aside (Tailor reports the types written
    itself, `fallbacks`) and its end is shown if the quantizer fails."""
    lib = llama_cpp()
    params = lib.llama_model_quantize_default_params()
    params.ftype = getattr(lib, f"LLAMA_FTYPE_MOSTLY_{K_QUANTS[quant]}")
    params.nthread = os.cpu_count() or 1
    with tempfile.TemporaryFile(mode="w+b") as log:
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            rc = lib.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        tail = log.read().decode("utf-8", "replace").strip().splitlines()[-3:]
    if rc != 0:
        raise TailorError(f"llama.cpp's quantizer failed on {src} ({quant}, code {rc}): {' / '.join(tail)}")


def fallbacks(by_name: dict[str, str]) -> list[str]:
    """The tensors (name: GGML type) of a k-quant file that are neither a k-quant nor F32: llama.cpp's
    fallback where a row's width is not a multiple of the 256-value k-quant block, and its own
    choices for some tensors."""
    return [f"{name} ({t})" for name, t in by_name.items() if not t.endswith("_K") and t != "F32"]
