"""The sync breaker endpoint, generated from ``breaker/_async/`` by ``.ci/unasync.py``:
edit that."""
