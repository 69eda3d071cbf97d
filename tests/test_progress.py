"""progress: lines only for loops longer than every_s, counts, percentages and ETA by hand."""

from recsys_jax.progress import Progress, stage, track


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_quick_loop_prints_nothing():
    lines, clock = [], FakeClock()
    for _ in track(range(5), "ranking", log=lines.append, clock=clock):
        clock.now += 1.0  # 5 s in all, under the 10 s default
    assert lines == []


def test_a_long_loop_logs_counts_percent_eta_and_total():
    lines, clock = [], FakeClock()
    chunks = [10, 10, 20]
    for chunk in track(chunks, "ranking test users", total=40, unit="users",
                       weight=lambda c: c, every_s=10.0, log=lines.append, clock=clock):
        clock.now += 6.0
    # After chunk 1: 6 s (silent). After chunk 2: 12 s, 20/40 users, ETA 12 s.
    # After chunk 3: 18 s, only 6 s since the last line (silent). Then the closing line.
    assert lines == ["ranking test users: 20/40 users (50%), 12s elapsed, ~12s left",
                     "ranking test users: 40/40 users done in 18.0s"]


def test_unknown_total_counts_without_percentage():
    lines, clock = [], FakeClock()
    progress = Progress("reading", every_s=1.0, log=lines.append, clock=clock)
    clock.now += 2.0
    progress.update(3)
    progress.close()
    assert lines == ["reading: 3, 2s elapsed", "reading: 3 done in 2.0s"]


def test_track_yields_every_item_unchanged():
    assert list(track(iter("abc"), "letters", log=lambda _: None)) == ["a", "b", "c"]


def test_stage_logs_start_and_only_long_durations():
    lines, clock = [], FakeClock()
    with stage("t-SNE of 10 items", every_s=5.0, log=lines.append, clock=clock):
        clock.now += 1.0
    with stage("t-SNE of 1,000 items", every_s=5.0, log=lines.append, clock=clock):
        clock.now += 7.5
    assert lines == ["t-SNE of 10 items…", "t-SNE of 1,000 items…",
                     "t-SNE of 1,000 items: done in 7.5s"]
