"""Benchmarks of snapbot, each judged in the same run against the reference it is compared
with; ``python -m bench`` runs them, ``bench/README.md`` tabulates the recorded results."""
