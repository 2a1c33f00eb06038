"""Print the environment that makes PyTorch take another CPU path than this process takes.

`make test` runs the numeric tests a second time under it, so a threshold that holds on one
floating-point path only fails in CI, whatever the machine: AVX-512 machines rerun on AVX2, AVX2
machines on the plain (non-vectorized) kernels. The three variables cover ATen's kernels, oneDNN's
convolutions and MKL's matrix multiply.
"""

import torch

if torch.backends.cpu.get_cpu_capability().upper().startswith("AVX512"):
    print("ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2")
else:
    print("ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2")
