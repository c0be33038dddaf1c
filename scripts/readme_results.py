"""Regenerate (or check) the results the README shows, from the real commands.

The README's demo and compare blocks are never copied by hand: this script runs
``metabt backtest`` (the main job, ``make demo``) and ``metabt compare`` on the shipped
sample data, keeps their printed results (not the lines naming output files), and writes
them between the README's ``<!-- results:NAME -->`` markers. It also copies the tables
that benchmark scripts write (``benchmarks/results/*.md``) into ``benchmarks/README.md``,
and the universe run's (``benchmarks/results/universe.md``) into the README.
``--check`` regenerates them and fails if a README differs (wall times, which vary from
run to run, are compared as ``Xs``); ``tests/test_readme.py`` runs it.

The numbers are deterministic on one machine, not across processors: MKL, OpenBLAS and
torch choose their kernels (AVX2, AVX-512, ...) by CPU, and a last-bit difference in one
matrix product moves a 600-step training run's later digits. So the README records a
numeric fingerprint (a SHA-256 of a small meta-training run and adaptation, on the same
kernels and thread settings as the commands). Where this machine's fingerprint equals the
README's, ``--check`` compares every number; elsewhere it compares the blocks with every
number masked (the same lines, columns and words) and says that the numbers were not
compared, and why.

Usage::

    python scripts/readme_results.py          # rewrite the README blocks
    python scripts/readme_results.py --check  # exit 1 if the README is stale
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BENCH_README = ROOT / "benchmarks" / "README.md"
#: blocks of benchmarks/README.md -> the file a benchmark script wrote
BENCH_BLOCKS = {
    name: ROOT / "benchmarks" / "results" / f"{name}.md"
    for name in (
        "synthetic",
        "learners",
        "pricing",
        "scaling",
        "universe_scaling",
        "executors",
        "executors_seeds",
    )
}
#: blocks of README.md copied from a benchmark's file
README_BLOCKS = {"universe": ROOT / "benchmarks" / "results" / "universe.md"}
#: lines that name output files (machine-specific paths), dropped from the blocks
_PATH_LINES = re.compile(
    r"^(tearsheet written|per-asset results written|adaptation diagnostics written|table:|"
    r"per asset:|index of tearsheets:|MetaStrategy adaptation diagnostics:|every seed:|"
    r"record of the run:|interactive chart written|MetaStrategy interactive chart:)"
)
#: wall times: "in 9.8s", "took 2.8s", and the training lines' "parameters, 19.6s;"
_WALL_TIME = re.compile(r"\b(in|took|parameters,|static\),) [0-9]+(\.[0-9]+)?s\b")
_NUMBER = re.compile(r"[-+]?[0-9][0-9,]*(\.[0-9]+)?(e[-+]?[0-9]+)?")
#: the README line holding the numeric fingerprint of the machine that wrote its numbers
_FINGERPRINT = re.compile(r"<!-- results:fingerprint ([0-9a-f]+) -->")
_THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def fingerprint() -> str:
    """SHA-256 (16 hex digits) of a small MAML run on this machine's floating-point kernels.

    Twenty outer steps of the demo's learner (MLP, ``func`` engine) on seeded tasks, then one
    test-time adaptation (the NumPy kernel MetaStrategy uses) and its predictions; the bytes
    of θ and of the predictions are hashed. Run in a subprocess with the commands' thread
    settings, so it sees the kernels they see.
    """
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--fingerprint"],
        cwd=ROOT,
        env=dict(os.environ, **_THREADS),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the numeric fingerprint failed ({done.returncode}):\n{done.stderr}")
    return done.stdout.strip()


def _fingerprint_here() -> str:
    import hashlib

    import numpy as np
    import torch

    from metabt import MetaLearner
    from metabt.learn.models import MLP

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    xs, xq = rng.standard_normal((8, 60, 12)), rng.standard_normal((8, 20, 12))
    ys, yq = np.tanh(xs[..., 0]) + 0.5 * rng.standard_normal((8, 60)), np.tanh(xq[..., 0])
    learner = MetaLearner(MLP(12), algorithm="maml", inner_lr=0.02, engine="func", seed=0)
    for _ in range(20):
        learner.meta_step(*(a.astype(np.float32) for a in (xs, ys, xq, yq)))
    adapted = learner.adapt(xs[0].astype(np.float32), ys[0].astype(np.float32))
    with torch.no_grad():
        predictions = adapted(torch.from_numpy(xq[0].astype(np.float32))).double().numpy()
    digest = hashlib.sha256()
    for p in learner.model.parameters():
        digest.update(p.detach().numpy().tobytes())
    digest.update(predictions.tobytes())
    return digest.hexdigest()[:16]


def _run(args: list[str], ledger: Path) -> str:
    """Run ``python -m metabt ARGS`` from the repository root; its stdout, path lines dropped.

    ``ledger`` is the trial ledger the run counts in: a fresh one for each regeneration, so
    the README's counts (the demo, then compare on the same test window) are the same
    whatever this machine ran before; and no training cache, so the demo trains as a first
    run does."""
    env = dict(os.environ, **_THREADS, METABT_LEDGER=str(ledger), METABT_CACHE="off")
    done = subprocess.run(
        [sys.executable, "-m", "metabt", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"metabt {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    lines = [line.rstrip() for line in done.stdout.splitlines() if not _PATH_LINES.match(line)]
    return "\n".join(lines).strip() + "\n"


def blocks() -> dict[str, str]:
    """The README blocks, freshly computed: name -> text."""
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Path(tmp) / "ledger.sqlite"
        demo = _run(["backtest", "--quiet", "--report", str(Path(tmp) / "demo.html")], ledger)
        compare = _run(["compare", "--quiet", "--out", str(Path(tmp) / "compare")], ledger)
    return {"demo": demo, "compare": compare}


def render(readme: str, new: dict[str, str], *, fenced: bool = True) -> str:
    """``readme`` with each ``<!-- results:NAME -->`` block replaced by ``new[NAME]``.

    Args:
        readme: the text.
        new: block name -> its content.
        fenced: the block is a ```text fence (command output); else Markdown as it is.

    Raises:
        SystemExit: a marker pair is missing.
    """
    for name, text in new.items():
        fence = "```text\n" if fenced else ""
        close = "```\n" if fenced else ""
        pattern = re.compile(
            rf"(<!-- results:{name} -->\n{fence}).*?({close}<!-- /results:{name} -->)", re.S
        )
        if not pattern.search(readme):
            raise SystemExit(f"README.md has no <!-- results:{name} --> block; add the markers")
        readme = pattern.sub(lambda m, t=text: m.group(1) + t + m.group(2), readme)
    return readme


def _mask(text: str, *, numbers: bool = False) -> str:
    text = _WALL_TIME.sub(r"\1 Xs", text)
    if numbers:
        text = _FINGERPRINT.sub("<!-- results:fingerprint # -->", text)
        # number widths change the alignment of the tables: compare words, not spaces
        text = " ".join(_NUMBER.sub("#", text).split())
    return text


def _body(text: str) -> str:
    """A results file without its own title line (the README section gives the title)."""
    lines = text.splitlines(keepends=True)
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "".join(lines).lstrip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the README is stale")
    parser.add_argument("--fingerprint", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--benchmarks-only",
        action="store_true",
        help="only benchmarks/README.md (no command is run)",
    )
    args = parser.parse_args(argv)
    if args.fingerprint:
        print(_fingerprint_here())
        return 0
    bench = {name: _body(path.read_text(encoding="utf-8")) for name, path in BENCH_BLOCKS.items()}
    pages = [(BENCH_README, lambda text: render(text, bench, fenced=False))]
    # the README's universe table is the universe benchmark's file (no command is run)
    universe = {
        name: _body(path.read_text(encoding="utf-8")) for name, path in README_BLOCKS.items()
    }
    numbers = True  # compare every number (False: this machine's kernels differ)
    if args.benchmarks_only:
        pages.append((README, lambda text: render(text, universe, fenced=False)))
    else:
        here = fingerprint()
        found = _FINGERPRINT.search(README.read_text(encoding="utf-8"))
        if found is None:
            raise SystemExit("README.md has no <!-- results:fingerprint ... --> line; add it")
        if args.check and found.group(1) != here:
            numbers = False
            print(
                f"numbers not compared: this machine's floating-point kernels give numeric "
                f"fingerprint {here}, the README's numbers were written on one giving "
                f"{found.group(1)}; lines, columns and words are compared (run "
                "`python scripts/readme_results.py` here to write this machine's numbers)"
            )
        fresh = blocks()

        def update_readme(text: str) -> str:
            text = _FINGERPRINT.sub(f"<!-- results:fingerprint {here} -->", text)
            return render(render(text, fresh), universe, fenced=False)

        pages.append((README, update_readme))
    stale = []
    for page, update in pages:
        current = page.read_text(encoding="utf-8")
        updated = update(current)
        if args.check:
            masked = page == README and not numbers
            if _mask(updated, numbers=masked) != _mask(current, numbers=masked):
                stale.append(page.relative_to(ROOT))
            continue
        tmp = page.with_name(f".{page.name}.tmp")
        tmp.write_text(updated, encoding="utf-8")
        os.replace(tmp, page)
        print(f"{page.relative_to(ROOT)} results rewritten")
    if stale:
        print(
            f"{', '.join(map(str, stale))}: results are stale; run "
            "`python scripts/readme_results.py`",
            file=sys.stderr,
        )
        return 1
    if args.check:
        what = "" if numbers else " (all but the numbers: see above)"
        print(f"README results match the commands and the benchmark tables{what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
