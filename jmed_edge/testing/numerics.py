"""Measured numerical spreads, and the test bounds derived from them.

A bound here is never "what passed on one machine": it is the largest difference measured when
only the order of the arithmetic changes (llama.cpp's batch size 1/7/512 by threads 1/2, on a
native AVX-512 build and on an AVX2-only build of the same llama.cpp), times ``SAFETY``.
``benchmarks/numerics/spread.py`` takes the measurements; rerun it after upgrading llama.cpp,
torch or onnxruntime and update the figures.

Measured on the embedded default model (SmolLM2-135M-Instruct; F16 GGUF vs fp32 Hugging Face
folder), Intel Xeon with AVX-512 (VBMI, VNNI), 2 threads, December 2026, llama-cpp-python
0.3.36, torch 2.13.0, onnxruntime-genai 0.18.0:

| quantity | AVX-512 build | AVX2 build | both builds |
|---|---|---|---|
| 6-token continuation log-likelihood (-32.07 nats), spread over batch/threads | 0.0056 | 0.0149 | 0.0169 |
| the same, read from a saved prompt state vs off full logits, one config | 0.0016 | 2e-6 | 0.0016 |
| per-option log-likelihood (6 options, 1-3 tokens), spread over batch/threads | 0.0145 | 0.0154 | 0.0154 |
| max abs logit, spread over batch/threads (logits reach 32.9) | 0.174 | 0.186 | |
| logits KL, spread over batch/threads | 6.2e-6 | 5.2e-6 | |
| F16 GGUF vs fp32 torch: logits KL | 1.07e-5 | | |
| F16 GGUF vs fp32 torch: per-option log-likelihood, max | 0.021 | | |
| F16 GGUF vs fp32 torch: max abs logit | 0.170 | | |
| torch fp32, 1 vs 2 threads: max abs logit | 8.1e-5 | | |
| torch fp32, prompt alone vs left-padded in a batch: option log-likelihood | 0.0 | | |
| ONNX fp32 (genai builder) vs torch fp32: max abs logit | 9.7e-5 | | |
| ONNX fp32, 1 vs 2 threads; saved state vs full logits | 0.0 | | |

An off-by-one token in scoring moves a continuation by whole nats, and a wrong tokenizer or
tensor makes KL larger than 0.01: every bound below stays far under those.
"""

from __future__ import annotations

SAFETY = 3.0

# llama.cpp against itself: the same text and weights, another batch split, thread count or
# CPU path. Worst measured spread of a 6-token continuation, both builds: 0.0169 nats.
LLAMACPP_CONTINUATION_ATOL = SAFETY * 0.0169  # 0.05 nats

# F16 GGUF against fp32 torch on the same weights: F16 rounding plus llama.cpp's own spread.
# Per option: 0.021 (F16 vs fp32) + 0.0154 (llama.cpp batch/thread/CPU spread), times SAFETY.
F16_VS_FP32_OPTION_ATOL = SAFETY * (0.021 + 0.0154)  # 0.11 nats
# Logits KL: 1.07e-5 (F16 vs fp32) + 6.2e-6 (llama.cpp spread), times SAFETY, rounded up.
F16_VS_FP32_KL = 1e-4

# torch against itself (threads, left padding in a batch): 8.1e-5 on logits reaching 33,
# 0.0 on option log-likelihoods; oneDNN and MKL choose kernels by CPU too, hence the margin.
TORCH_LOGPROB_ATOL = 1e-3

# onnxruntime against itself (threads, saved state vs full logits): 0.0 measured; the bound
# covers kernel choice on other CPUs at the scale of torch's own spread.
ORT_LOGPROB_ATOL = 1e-3
