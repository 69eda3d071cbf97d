"""What a newcomer reads at default verbosity: no harmless but alarming start-up lines.

``quiet_startup`` hides, before anything runs:

* orbax's INFO lines (several per checkpoint save), so the one-line-per-epoch log stays
  readable; its warnings and errors still show;
* JAX's "Unable to initialize backend 'tpu'/'cuda'…" notices, logged while JAX probes for
  accelerators that a CPU machine does not have;
* FAISS's loader messages ("Loading faiss with AVX2 support", "Could not load library with
  AVX512 support…"), which report the fallback to another build of the same library;
* Hugging Face's "Loading weights" progress bars when sentence-transformers loads the title
  encoder (``HF_HUB_DISABLE_PROGRESS_BARS``, unless the user set it).

Real warnings and errors of every library still show.
"""

from __future__ import annotations

import logging as std_logging
import os

# (logger name, substring) pairs of INFO/WARNING records that report nothing wrong.
_HARMLESS = (
    ("jax._src.xla_bridge", "Unable to initialize backend"),
    ("jax._src.xla_bridge", "An NVIDIA GPU may be present"),
    ("faiss.loader", ""),
)


class _DropHarmless(std_logging.Filter):
    def filter(self, record: std_logging.LogRecord) -> bool:
        if record.levelno >= std_logging.ERROR:
            return True
        if "/orbax/" in record.pathname and record.levelno < std_logging.WARNING:
            return False
        message = record.getMessage()
        return not any(record.name.startswith(name) and text in message
                       for name, text in _HARMLESS)


def quiet_startup() -> None:
    """Installs the filters (idempotent); call first thing in an entry point's ``main``."""
    # Read by huggingface_hub and transformers when they are imported, which is later.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("absl", "jax._src.xla_bridge", "faiss.loader", "faiss"):
        logger = std_logging.getLogger(name)
        if not any(isinstance(f, _DropHarmless) for f in logger.filters):
            logger.addFilter(_DropHarmless())
    std_logging.getLogger("faiss.loader").setLevel(std_logging.WARNING)
