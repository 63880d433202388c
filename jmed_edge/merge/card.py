"""The model card (README.md) written beside merged weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def model_card(
    name: str,
    base: Path,
    adapter: Path,
    adapter_manifest: Any,
    license: str,
    dtype: str,
    verification: dict[str, Any],
    note: str,
) -> str:
    details = adapter_manifest.details if adapter_manifest else {}
    config = adapter_manifest.config if adapter_manifest else {}
    data = details.get("data") or {}
    data_lines = (
        "\n".join(f"- `{Path(p).name}` (sha256 `{h[:12]}`)" for p, h in data.items()) or "- not recorded"
    )
    lora = config.get("lora", {})
    lora_line = (
        f"r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')} on "
        f"{', '.join(details.get('target_modules', []))}"
        if lora
        else "see adapter_config.json of the adapter"
    )
    v = verification
    return f"""---
license: {license}
base_model: {base}
tags: [jmed-edge, lora-merged, medical, japanese]
---

# {name}

{base.name} with the LoRA adapter `{adapter}` merged into its weights ({dtype}), written by
jmed-edge. {note}

| | |
|---|---|
| base model | `{base}` |
| adapter | `{adapter}` |
| LoRA | {lora_line} |
| training | {details.get("steps", "?")} steps, template `{config.get("data", {}).get("template", "?")}`, loss {details.get("loss_start", "?")} -> {details.get("loss_end", "?")}, eval loss {details.get("eval_loss", "?")} |
| licence | {license} (of the base model; check the data's terms too) |

## Training data
{data_lines}

## Merge check
The merged model was reloaded from these files and compared with base + adapter (unmerged) on
{v["probes"]} Japanese and English medical probe sentences ({v["positions"]} positions):
max |logit difference| {v["max_abs_diff"]:.3g} (tolerance {v["tolerance"]:.3g}), top-1 agreement {v["top1_agreement"]:.1%}.
The adapter itself moves the base's logits by up to {v["adapter_effect_max_abs"]:.3g}, so a missing
or wrong merge would have shown.

## Use
```
jmed-edge convert THIS_FOLDER --to gguf --quant q8_0,q4_k_m --out runs/gguf
```
or load it with `transformers.AutoModelForCausalLM.from_pretrained("THIS_FOLDER")`.
"""
