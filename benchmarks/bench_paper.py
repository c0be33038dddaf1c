"""Paper trading's cost against the backtest of the same bars, and following a file against
reading it whole.

Both in this process, interleaved, best of ``--repeats``:

* ``run_paper`` over two sample assets (2008-2011, trading from 2010-06-01), all bars
  already in the followed files, reports off (a first run catching up on history), against
  ``run_backtest`` of the same bars and settings; the results are checked equal;
* ``FollowedFile`` reading a whole CSV (one poll) against ``load_ohlcv`` of the same file,
  and the per-bar cost of following it (poll + ``mark_processed`` + ``state``) as rows
  are appended one at a time.

    python benchmarks/bench_paper.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from metabt.data.follow import FollowedFile
from metabt.data.ohlcv import load_ohlcv, sample_files
from metabt.experiments.backtest import run_backtest
from metabt.experiments.paper import PaperSettings, run_paper
from metabt.features.spec import FeatureSpec
from metabt.features.tasks import TaskSampler
from metabt.learn.learner import MetaLearner
from metabt.learn.models import MLP
from metabt.strategies.meta import MetaStrategy

START = pd.Timestamp("2010-06-01")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="bench-paper-"))
    try:
        files = {p.stem: p for p in sample_files()}
        paths, frames = [], {}
        for name in ("AAPL", "IBM"):
            path = root / f"{name}.csv"
            load_ohlcv(files[name]).loc["2008-01-01":"2011-12-30"].to_csv(
                path, index_label="date", float_format="%.10g"
            )
            paths.append(path)
            frames[name] = load_ohlcv(path)
        spec = FeatureSpec()
        tasks = TaskSampler.from_frames(frames, spec, support=40, query=10, end=START)
        learner = MetaLearner(MLP(spec.n_features, (16, 16), seed=0), inner_steps=3, seed=0,
                              feature_spec=spec)  # fmt: skip
        learner.fit(tasks, 10, batch_size=8, progress=False)
        kwargs = {"learner": learner, "support": 40, "smooth": 5}

        def backtest() -> pd.Series:
            result = run_backtest(
                MetaStrategy, frames, start=START, warmup_bars=120, strategy_kwargs=kwargs
            )
            return result.returns

        def paper(k: int) -> pd.Series:
            settings = PaperSettings(
                data=tuple(paths), strategy=MetaStrategy, strategy_kwargs=kwargs,
                state=root / f"state{k}", start=START, until=pd.Timestamp("2011-12-30"),
                warmup_bars=120, poll=0.01, reports=False,
            )  # fmt: skip
            run = run_paper(settings)
            assert run.result is not None
            return run.result.returns

        times: dict[str, list[float]] = {"backtest": [], "paper": []}
        for k in range(args.repeats):
            tic = time.perf_counter()
            expected = backtest()
            times["backtest"].append(time.perf_counter() - tic)
            tic = time.perf_counter()
            got = paper(k)
            times["paper"].append(time.perf_counter() - tic)
            assert got.equals(expected), "paper and backtest differ"
        bars = sum(len(f) for f in frames.values())
        best = {k: min(v) for k, v in times.items()}
        print(f"2 assets, {bars:,} asset-bars fed (from 2008), trading from {START.date()}")
        print(f"backtest {best['backtest']:.2f} s, paper {best['paper']:.2f} s: "
              f"ratio {best['paper'] / best['backtest']:.2f}x (best of {args.repeats}; equal "
              "returns)")  # fmt: skip

        whole = paths[0]
        load, follow = [], []
        for _ in range(args.repeats):
            tic = time.perf_counter()
            load_ohlcv(whole)
            load.append(time.perf_counter() - tic)
            tic = time.perf_counter()
            FollowedFile(whole).poll()
            follow.append(time.perf_counter() - tic)
        print(f"first read of {whole.name} ({len(frames['AAPL']):,} bars): load_ohlcv "
              f"{min(load) * 1e3:.1f} ms, FollowedFile {min(follow) * 1e3:.1f} ms: "
              f"{min(follow) / min(load):.2f}x")  # fmt: skip

        lines = whole.read_text().splitlines(keepends=True)
        grown = root / "grown.csv"
        grown.write_text("".join(lines[:300]))
        follower = FollowedFile(grown)
        follower.poll()
        per_bar = []
        for line in lines[300:800]:
            with open(grown, "a") as fh:
                fh.write(line)
            tic = time.perf_counter()
            new = follower.poll()
            follower.mark_processed(new.index[-1])
            follower.state()
            per_bar.append(time.perf_counter() - tic)
        per_bar.sort()
        print(f"following one appended bar (poll + mark_processed + state): median "
              f"{per_bar[len(per_bar) // 2] * 1e3:.2f} ms, 90th percentile "
              f"{per_bar[int(len(per_bar) * 0.9)] * 1e3:.2f} ms over 500 bars")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
