"""Entry point run in a child process around llama.cpp's own converter scripts.

Run as ``python -P _converter_main.py SCRIPT ARGS...`` with ``PYTHONPATH`` holding the
converter folder and its ``gguf-py``: the converter must import the gguf-py it was released
with, not PyPI's ``gguf``, so it cannot share a process with jmed-edge (which uses PyPI's).
``-P`` keeps this file's folder off ``sys.path`` (it holds jmed-edge's ``gguf.py``).

It imports only the standard library and the converter, and adds four things around
``SCRIPT``'s ``main``:
  * ``JMED_PRE_TOKENIZER=NAME`` replaces the converter's hash lookup of the BPE pre-tokenizer
    with NAME (what ``--pre-tokenizer`` asks for);
  * the ``--metadata`` override file's ``general.license`` is applied like its other
    ``general.*`` keys (this gguf-py's ``Metadata.load`` reads ``general.license.name`` and
    ``.link`` from it, but takes the license itself only from the model card);
  * write progress goes to stdout as ``@@progress DONE TOTAL`` lines instead of a tqdm bar;
  * failures the user can act on are reported as one ``@@error KIND DETAIL`` line.
"""

from __future__ import annotations

import os
import runpy
import sys
import time

PRE_TOKENIZER_ERROR = "BPE pre-tokenizer was not recognized"


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class _Progress:
    """Stands in for ``tqdm.tqdm`` in gguf-py's writer: reports bytes written, 4 times a second."""

    def __init__(self, *args, total=None, **kwargs) -> None:
        self.total = total or 0
        self.n = 0
        self._last = 0.0
        _say(f"@@progress 0 {self.total}")

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last > 0.25 or self.n >= self.total:
            self._last = now
            _say(f"@@progress {self.n} {self.total}")

    def set_description(self, *args, **kwargs) -> None: ...

    def reset(self, total=None) -> None:
        self.total, self.n = total or 0, 0

    def close(self) -> None: ...


def _license_from_override() -> None:
    from gguf.metadata import Metadata

    load = Metadata.load

    def load_with_license(metadata_override_path=None, *args, **kwargs):
        metadata = load(metadata_override_path, *args, **kwargs)
        override = Metadata.load_metadata_override(metadata_override_path)
        if isinstance(override.get("general.license"), str):
            metadata.license = override["general.license"]
        return metadata

    Metadata.load = staticmethod(load_with_license)


def main() -> int:
    script, *args = sys.argv[1:]
    sys.argv = [script, *args]
    import tqdm

    tqdm.tqdm = _Progress  # the writer does ``from tqdm import tqdm`` at write time
    pre = os.environ.get("JMED_PRE_TOKENIZER")
    if pre:
        from conversion.base import TextModel

        TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
    _license_from_override()
    try:
        runpy.run_path(script, run_name="__main__")
    except NotImplementedError as exc:
        if PRE_TOKENIZER_ERROR in str(exc):
            _say("@@error pre-tokenizer BPE pre-tokenizer was not recognized")
            return 3
        _say(f"@@error not-implemented {exc}")
        return 4
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
