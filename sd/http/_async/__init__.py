"""The asyncio halves of sd.http written by hand; ``sd/http/_sync/`` holds their
generated twins (``.ci/unasync.py``)."""
