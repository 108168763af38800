"""Generated sync twins of ``kitsd/transport/_async/`` (``.ci/unasync.py``): do not
edit."""
