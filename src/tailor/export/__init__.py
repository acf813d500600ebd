"""Exporting an arm to where teams already run models: llama.cpp, Ollama and LM Studio read GGUF.

- `gguf_file.py`: a merged Llama-family model written as GGUF with the `gguf` package (llama.cpp's
  own writer): tensor names from its `TensorNameMap`, the q/k row permutation llama.cpp's
  converter applies, the BPE tokenizer and the arm's chat template embedded;
- `modelfile.py`: the Ollama Modelfile beside it: the arm's instruction as SYSTEM, its prompt
  format as a Go template (derived from THE prompt builder and checked against it), stop tokens;
- `arm.py`: which arms can be exported (asked through their capabilities), the merge, the files;
- `check.py`: the proof that the export answers as the arm did: the GGUF reloaded by transformers
  (and by llama.cpp where llama-cpp-python is installed) measured on the same rows.
"""
