"""Choose FeatureSpec.label_clip on validation data only (the demo's split, before 2008).

For each candidate (fixed before the run: None, 3, 4, 6 label units), meta-train the demo
learner with labels winsorised at that level, then score it on the validation tasks the
way it is deployed: adapted on the (winsorised) support labels, judged on the true query
labels. Prints the validation query MSE of each and of predicting zero. No test-period
data is read.

    python scripts/choose_label_clip.py
"""

from __future__ import annotations

import dataclasses
import os
import time

import pandas as pd
import torch

from metabt.config.defaults import DEMO
from metabt.data.ohlcv import load_many, sample_files
from metabt.experiments.parts import train_learner, validation_split
from metabt.features.tasks import TaskSampler

CANDIDATES = (None, 3.0, 4.0, 6.0)


def validation_batch(frames, spec, end):
    """The demo's validation tasks (the hold-out before end) for ``spec``'s labels."""
    split = validation_split(frames, DEMO, end)
    tasks = TaskSampler.from_frames(frames, spec, support=DEMO.support, query=DEMO.query, end=end)
    return tasks.split(split)[1].fixed(64, DEMO.seed)


def main() -> None:
    torch.set_num_threads(1)
    frames = load_many(sample_files())
    end = pd.Timestamp(DEMO.start)
    truth = validation_batch(frames, dataclasses.replace(DEMO.spec, label_clip=None), end)
    zero = float((truth[3].double() ** 2).mean())
    print(f"load average {os.getloadavg()[0]:.2f}; predicting zero: {zero:.4f}")
    for clip in CANDIDATES:
        spec = dataclasses.replace(DEMO.spec, label_clip=clip)
        tic = time.perf_counter()
        trained = train_learner(frames, DEMO.with_(spec=spec), end=end, progress=False)
        xs, ys, _, _ = validation_batch(frames, spec, end)
        loss = trained.learner.evaluate(xs, ys, truth[2], truth[3])
        print(
            f"label_clip {clip}: validation query MSE on the true labels {loss:.4f} "
            f"({time.perf_counter() - tic:.0f}s)"
        )


if __name__ == "__main__":
    main()
