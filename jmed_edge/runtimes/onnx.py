"""onnxruntime-genai runtime: an ONNX decoder folder (genai_config.json + model.onnx + tokenizer).

Generation streams through ``og.Generator``; log-likelihoods come from the same generator's
``logits`` output, which holds a row for every appended token, so a context is evaluated once
and each continuation is scored from there (the KV cache is rewound to the context between
continuations). CPU by default; ``provider="cuda"`` or ``"dml"`` when that execution provider
is installed, ``"auto"`` picks the first available.

Before a session is created the folder is checked cheaply (protobuf parses, every external
tensor lies inside its data file, sizes match the manifest), so a truncated or corrupt file is a
one-line ``ModelError`` naming the file rather than an onnxruntime exception.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jmed_edge.artifacts import ArtifactInfo
from jmed_edge.errors import ConfigError, DependencyError, ModelError
from jmed_edge.fsutil import human_bytes
from jmed_edge.manifest import Manifest, check_files
from jmed_edge.runtimes.base import (
    ContinuationScore,
    GenerationStats,
    SamplingParams,
    continuation_scores,
    log_softmax,
    stream_generation,
)

log = logging.getLogger(__name__)

PROVIDERS = ("auto", "cpu", "cuda", "dml")


def _decoder_file(folder: Path) -> Path:
    config_path = folder / "genai_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        return folder / config["model"]["decoder"]["filename"]
    except FileNotFoundError:
        raise ModelError(
            f"{folder} has no genai_config.json; it is not an onnxruntime-genai model folder"
        ) from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelError(
            f"{config_path} is corrupt ({type(exc).__name__}: {exc}); re-convert the model"
        ) from exc


def check_onnx_folder(folder: Path, manifest: Manifest | None = None) -> list[str]:
    """Problems that would make onnxruntime fail on ``folder``, found without loading weights.

    ``onnx.checker`` is not used: it rejects the contrib ops the builder emits in the default
    domain (SimplifiedLayerNormalization), so the protobuf is parsed and the external data
    checked against the offsets the graph names instead.
    """
    import onnx

    folder = Path(folder)
    model_file = _decoder_file(folder)
    if not model_file.is_file():
        return [f"{model_file.name} is missing from {folder}"]
    if manifest is not None:
        problems = check_files(folder, manifest)
        if problems:
            return problems
    try:
        proto = onnx.load(str(model_file), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends on a damaged file
        return [f"{model_file} is not a valid ONNX model (truncated or corrupt: {type(exc).__name__})"]
    if not proto.graph.node:
        return [f"{model_file} holds an empty graph"]
    needed: dict[str, int] = {}
    for tensor in proto.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entry = {item.key: item.value for item in tensor.external_data}
        end = int(entry.get("offset", 0)) + int(entry.get("length", 0))
        needed[entry["location"]] = max(needed.get(entry["location"], 0), end)
    problems = []
    for name, end in sorted(needed.items()):
        data = folder / name
        if not data.is_file():
            problems.append(f"{data} is missing ({model_file.name} stores its weights there)")
        elif data.stat().st_size < end:
            problems.append(
                f"{data} is truncated: {human_bytes(data.stat().st_size)}, the graph needs {human_bytes(end)}"
            )
    return problems


def _resolve_provider(provider: str) -> str:
    import onnxruntime_genai as og

    if provider not in PROVIDERS:
        raise ConfigError(f'unknown ONNX provider "{provider}"; use one of {", ".join(PROVIDERS)}')
    available = {"cuda": og.is_cuda_available(), "dml": og.is_dml_available(), "cpu": True}
    if provider == "auto":
        return next(p for p in ("cuda", "dml", "cpu") if available[p])
    if not available[provider]:
        package = {
            "cuda": "onnxruntime-genai-cuda (NVIDIA GPU)",
            "dml": "onnxruntime-genai-directml (Windows)",
        }
        raise DependencyError(
            f"the {provider} execution provider is not available in this onnxruntime-genai installation; "
            f"install {package[provider]} or use provider=cpu"
        )
    return provider


class OnnxRuntime:
    """Runtime over ``onnxruntime_genai``. Options: ``provider`` (or ``device``), ``n_threads``."""

    name = "onnx"

    def __init__(
        self,
        info: ArtifactInfo,
        *,
        provider: str | None = None,
        device: str | None = None,
        n_threads: int | None = None,
        **unused: Any,
    ) -> None:
        try:
            import onnxruntime_genai as og
        except ImportError as exc:
            raise DependencyError(
                f"the ONNX runtime needs onnxruntime-genai ({exc}); pip install onnxruntime-genai==0.18.0"
            ) from exc
        if unused:
            log.debug("onnx runtime ignores options %s", sorted(unused))
        self.info = info
        self.artifact = info.path
        folder = info.folder
        problems = check_onnx_folder(folder, info.manifest)
        if problems:
            raise ModelError(f"cannot load ONNX model {folder}: {'; '.join(problems)}; re-convert it")
        # ``device`` is the option the other runtimes take (auto | cpu | cuda[:N]); ``provider`` wins.
        self.provider = _resolve_provider(provider or (device or "cpu").split(":")[0])
        started = time.perf_counter()
        config = og.Config(str(folder))
        config.clear_providers()
        if self.provider != "cpu":
            config.append_provider(self.provider)
        if n_threads:
            options = {"intra_op_num_threads": int(n_threads), "inter_op_num_threads": 1}
            config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        model_file = _decoder_file(folder)
        try:
            self.model = og.Model(config)
            self.tokenizer = og.Tokenizer(self.model)
        except Exception as exc:  # onnxruntime reports load failures as one generic RuntimeError
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"onnxruntime cannot load {model_file}: {first[:300]}; re-convert it") from exc
        self.load_seconds = time.perf_counter() - started
        genai = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))["model"]
        self.context_length = int(genai.get("context_length", 2048))
        self.vocab_size = int(genai.get("vocab_size", 0))
        self.eos_ids = {int(t) for t in np.atleast_1d(self.tokenizer.eos_token_ids)}
        self.chat_template = self._read_chat_template(folder)
        self._bos_text = self._bos_token_text(folder)

    @staticmethod
    def _read_chat_template(folder: Path) -> str | None:
        if (folder / "chat_template.jinja").exists():
            return (folder / "chat_template.jinja").read_text(encoding="utf-8")
        try:
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        template = config.get("chat_template")
        return template if isinstance(template, str) else None

    @staticmethod
    def _bos_token_text(folder: Path) -> str | None:
        try:
            bos = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("bos_token")
        except (OSError, json.JSONDecodeError):
            return None
        bos = bos.get("content") if isinstance(bos, dict) else bos
        return bos if isinstance(bos, str) and bos else None

    # --- tokens and templates ------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        # A rendered chat template already starts with BOS (Llama 3): never add a second one.
        if add_special and self._bos_text and text.startswith(self._bos_text):
            add_special = False
        self.tokenizer.update_options(add_special_tokens="true" if add_special else "false")
        return [int(t) for t in self.tokenizer.encode(text)]

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(np.asarray(list(ids), dtype=np.int32))

    def render_chat(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise ConfigError(
                f"{self.artifact} has no chat template; use a plain prompt format (medpalm or alpaca)"
            )
        return self.tokenizer.apply_chat_template(
            json.dumps(list(messages), ensure_ascii=False),
            template_str=self.chat_template,
            add_generation_prompt=add_generation_prompt,
        )

    # --- scoring -------------------------------------------------------------------------

    def _generator(self, max_length: int, **search: Any):
        import onnxruntime_genai as og

        if max_length > self.context_length:
            raise ConfigError(
                f"{max_length} tokens exceed the model's context of {self.context_length}; shorten the input"
            )
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=max_length, **search)
        return og.Generator(self.model, params)

    def _append(self, generator, ids: Sequence[int]) -> np.ndarray:
        """Append ``ids`` and return the logits of each appended position, (len(ids), vocab)."""
        generator.append_tokens(np.asarray(list(ids), dtype=np.int32))
        logits = generator.get_output("logits")
        logits = logits.reshape(-1, logits.shape[-1])
        if logits.shape[0] != len(ids):
            raise ModelError(
                f"{self.artifact} returns logits for {logits.shape[0]} of {len(ids)} positions (built with "
                "prune_lm_head?); re-convert without it to score text"
            )
        return logits.astype(np.float32, copy=False)

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        ids = list(token_ids)
        if not ids:
            raise ConfigError("logits needs at least one token")
        return self._append(self._generator(len(ids)), ids).copy()

    def score_continuations(self, context: str, continuations: Sequence[str]) -> list[ContinuationScore]:
        ctx_ids = self.tokenize(context, add_special=True)
        if not ctx_ids:
            raise ConfigError("cannot score a continuation of an empty context on a model without BOS")
        conts = [self._continuation_ids(ctx_ids, context, c) for c in continuations]
        generator = self._generator(len(ctx_ids) + max((len(c) for c in conts), default=1))
        last = self._append(generator, ctx_ids)[-1:].copy()  # predicts each continuation's first token
        scores = []
        for cont in conts:
            rows = last
            if len(cont) > 1:
                rows = np.concatenate([last, self._append(generator, cont[:-1])])
                generator.rewind_to(len(ctx_ids))
            scores.append(continuation_scores(log_softmax(rows), cont))
        return scores

    def _continuation_ids(self, ctx_ids: list[int], context: str, continuation: str) -> list[int]:
        """Continuation tokens as they follow the context when both are tokenized together."""
        whole = self.tokenize(context + continuation, add_special=True)
        if whole[: len(ctx_ids)] == ctx_ids and len(whole) > len(ctx_ids):
            return whole[len(ctx_ids) :]
        cont = self.tokenize(continuation)
        if not cont:
            raise ConfigError(f"continuation {continuation!r} has no tokens")
        return cont

    # --- generation ----------------------------------------------------------------------

    def generate(
        self, prompt: str, params: SamplingParams, stats: GenerationStats | None = None
    ) -> Iterator[str]:
        stats = stats if stats is not None else GenerationStats()
        ids = self.tokenize(prompt, add_special=True)
        if len(ids) >= self.context_length:
            raise ConfigError(
                f"the prompt has {len(ids)} tokens; the model's context is {self.context_length}"
            )
        stats.prompt_tokens = len(ids)
        search: dict[str, Any] = {"do_sample": params.temperature > 0, "random_seed": params.seed,
                                  "repetition_penalty": params.repeat_penalty}  # fmt: skip
        if params.temperature > 0:
            search.update(temperature=params.temperature, top_p=params.top_p,
                          top_k=params.top_k if params.top_k > 0 else max(self.vocab_size, 1))  # fmt: skip
        generator = self._generator(min(self.context_length, len(ids) + params.max_tokens), **search)
        stream = self.tokenizer.create_stream()

        def tokens() -> Iterator[int]:
            generator.append_tokens(np.asarray(ids, dtype=np.int32))
            while not generator.is_done():
                generator.generate_next_token()
                yield int(generator.get_next_tokens()[0])

        yield from stream_generation(tokens(), stream.decode, self.eos_ids.__contains__, params, stats)

    def close(self) -> None:
        import gc

        self.tokenizer = None  # type: ignore[assignment]
        self.model = None  # type: ignore[assignment]
        gc.collect()
