"""MetricLog: metrics.jsonl round trip, cut back on resume, TensorBoard events with legal tags."""

import json
import struct

from tensorboardX.proto import event_pb2

from recsys_jax.training.metric_log import MetricLog, read_metrics, tensorboard_tag


def read_scalars(directory):
    """(tag, step, value) of every scalar in the event files under ``directory``, read from
    the TFRecord framing (u64 length, u32 crc, payload, u32 crc) without TensorFlow."""
    scalars = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            payload = data[offset + 12:offset + 12 + length]
            offset += 12 + length + 4
            event = event_pb2.Event.FromString(payload)
            for value in event.summary.value:
                scalars.append((value.tag, event.step, round(value.simple_value, 6)))
    return scalars


def test_records_round_trip_and_reach_tensorboard_under_legal_tags(tmp_path):
    log = MetricLog(tmp_path)
    log.write({"epoch": 1, "train_loss": 0.5, "val_recall@100": 0.25, "note": "x"})
    log.write({"epoch": 2, "train_loss": 0.375, "val_recall@100": 0.5, "note": "y"})
    log.close()
    assert [r["train_loss"] for r in read_metrics(tmp_path)] == [0.5, 0.375]
    scalars = read_scalars(tmp_path / "tensorboard")
    assert sorted(scalars) == [("train_loss", 1, 0.5), ("train_loss", 2, 0.375),
                               ("val_recall_at_100", 1, 0.25), ("val_recall_at_100", 2, 0.5)]


def test_resume_keeps_only_the_epochs_up_to_the_restart(tmp_path):
    log = MetricLog(tmp_path, tensorboard=False)
    for epoch in (1, 2, 3):
        log.write({"epoch": epoch, "train_loss": float(epoch)})
    log.close()
    resumed = MetricLog(tmp_path, keep_up_to=2, tensorboard=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    resumed.write({"epoch": 3, "train_loss": 9.0})
    assert [r["train_loss"] for r in read_metrics(tmp_path)] == [1.0, 2.0, 9.0]


def test_a_torn_last_line_is_skipped(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1}) + "\n{\"epoch\": 2, \"tr")
    assert read_metrics(tmp_path) == [{"epoch": 1}]


def test_tags_keep_legal_characters_and_spell_out_the_cutoff():
    assert tensorboard_tag("val_ndcg@10") == "val_ndcg_at_10"
    assert tensorboard_tag("test.sampled-99/hr") == "test.sampled-99/hr"
    assert tensorboard_tag("a b:c") == "a_b_c"
