"""k-quants (q4_k_m and kin: what llama.cpp, Ollama and LM Studio users mostly run) through
llama.cpp's own quantizer, `llama_model_quantize` from llama-cpp-python's build of llama.cpp: the
`gguf` package writes the types it can quantize itself (gguf_file.QUANTS) but has no k-quant
quantizer. The arm is written F16 first (what llama.cpp's convert-then-quantize flow does),
then quantized into the destination; the F16 file is removed. Where llama-cpp-python is not
installed, a one-line refusal says how to get it (it compiles llama.cpp from source)."""

from __future__ import annotations

import ctypes
import os
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
    """`src` (a GGUF file, F16 or F32) quantized to `quant` at `dst` by llama.cpp."""
    lib = llama_cpp()
    params = lib.llama_model_quantize_default_params()
    params.ftype = getattr(lib, f"LLAMA_FTYPE_MOSTLY_{K_QUANTS[quant]}")
    params.nthread = os.cpu_count() or 1
    rc = lib.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise TailorError(f"llama.cpp's quantizer failed on {src} ({quant}, code {rc}); its log above says why")
