"""Generated sync twins of ``sd/http/_async/`` (``.ci/unasync.py``): do not edit."""
