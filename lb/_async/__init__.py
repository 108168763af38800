"""The asyncio retry loops, written by hand; ``lb/_sync/`` holds their generated twins
(``.ci/unasync.py``)."""
