"""The asyncio breaker endpoint, written by hand; ``breaker/_sync/`` holds its generated
twin (``.ci/unasync.py``)."""
