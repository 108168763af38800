"""The sync retry loops, generated from ``lb/_async/`` by ``.ci/unasync.py``: edit those."""
