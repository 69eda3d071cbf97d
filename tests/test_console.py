"""console.quiet_startup: harmless start-up lines dropped, real warnings and errors kept."""

import logging
import os

import pytest

from recsys_jax.console import quiet_startup


@pytest.fixture
def captured():
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep()
    loggers = [logging.getLogger(n) for n in ("jax._src.xla_bridge", "faiss.loader")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    yield records
    for logger in loggers:
        logger.removeHandler(handler)
        logger.propagate = True


def test_probe_and_loader_notices_are_dropped_but_errors_kept(captured, monkeypatch):
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    quiet_startup()
    quiet_startup()  # Idempotent: one filter per logger.
    jax_log = logging.getLogger("jax._src.xla_bridge")
    jax_log.info("Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so")
    jax_log.warning("something else went wrong")
    jax_log.error("Unable to initialize backend 'cuda': driver crashed")
    logging.getLogger("faiss.loader").info("Loading faiss with AVX2 support.")
    assert captured == ["something else went wrong",
                        "Unable to initialize backend 'cuda': driver crashed"]
    assert len(jax_log.filters) == 1


def test_hugging_face_progress_bars_off_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    quiet_startup()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    quiet_startup()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"
