"""Judging results: metrics, significance (PSR, DSR, bootstrap, HAC), verdicts, reports and
plots."""

__all__: list[str] = []
