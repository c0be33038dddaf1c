"""Judging results: metrics, significance (PSR, DSR, bootstrap, HAC), verdicts, reports and
plots."""
