# ruff: noqa - run verbatim against the flat modules of commit 88f290d (see tests/test_compat.py)
"""Written with metabt before the subpackage move (commit 88f290d): a small checkpoint with
factor features and its backtest returns, for the compatibility test."""

import sys
from pathlib import Path
import torch

torch.set_num_threads(1)
from metabt.data import load_ohlcv, sample_files
from metabt.factors import with_benchmark
from metabt.features import FeatureSpec
from metabt.meta import MetaLearner
from metabt.models import MLP
from metabt.tasks import TaskSampler
from metabt.backtest import run_backtest
from metabt.strategy import MetaStrategy

out = Path(sys.argv[1])
files = {p.stem: p for p in sample_files()}
bench = Path(files["AAPL"]).parent / "benchmarks" / "DIA.csv"
frames = {
    n: with_benchmark(load_ohlcv(files[n]), bench).loc["2005-01-01":"2009-06-30"]
    for n in ("AAPL", "IBM")
}
spec = FeatureSpec().with_features('metabt.factors:beta{"window": 40}', "metabt.factors:resid_mom")
tasks = TaskSampler.from_frames(frames, spec, support=40, query=10, end="2008-01-01")
learner = MetaLearner(MLP(spec.n_features, (8,), seed=0), inner_steps=2, seed=0, feature_spec=spec)
learner.fit(tasks, 10, batch_size=4, progress=False)
learner.train_range = ("2005-01-03", "2007-12-31")
path = learner.save(out / "old_factors.pt")
res = run_backtest(
    MetaStrategy,
    frames,
    start="2008-01-02",
    end="2008-12-31",
    strategy_kwargs={"learner": str(path), "support": 40},
)
res.returns.to_csv(out / "old_factors_returns.csv", float_format="%.17g")
print(len(res.returns), float(res.returns.std()), (res.returns != 0).sum())
