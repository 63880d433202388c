"""What a GGUF artifact's bytes depend on, hashed: equal fingerprints mean "up to date"."""

from __future__ import annotations

import hashlib
import json

from jmed_edge.convert.llamacpp_convert import converter_version


def gguf_fingerprint(
    parent_sha256: str,
    quant: str,
    imatrix: str | None,
    outtype: str,
    converter: str | None = None,
    pre_tokenizer: str | None = None,
) -> str:
    """What an artifact's content depends on, hashed: equal fingerprints mean "up to date".

    ``imatrix``: the imatrix file's sha256, ``"auto:<calibration sha256>"`` for one computed
    from the shipped calibration text, or None when the type uses none.
    """
    payload = {
        "parent": parent_sha256,
        "quant": quant.upper(),
        "imatrix": imatrix,
        "outtype": outtype.lower(),
        "converter": converter or converter_version(),
        "pre_tokenizer": pre_tokenizer,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
