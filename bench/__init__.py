"""The side-by-side benchmark harness (`make bench`); see docs/performance.md."""
