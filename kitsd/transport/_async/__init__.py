"""The asyncio transport and its instance endpoint, written by hand;
``kitsd/transport/_sync/`` holds their generated twins (``.ci/unasync.py``)."""
