"""The files swgguf reads and writes, as code: GGUF I/O and atomic writes
(:mod:`.files`, :mod:`.gguf_io`), the outlier sidecar (:mod:`.sidecar`), the
super-weight manifest (:mod:`.manifest`), llama.cpp importance matrices
(:mod:`.imatrix`) and the LoRA adapter of ``--lora-compat`` (:mod:`.lora`).

Nothing here imports llama.cpp or torch: formats are read and written with
gguf-py and NumPy only.
"""
