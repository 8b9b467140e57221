"""Generated code of the brew.v1 API (proto/brew/v1/ranking.proto).

Do not edit: regenerate with `python proto/generate.py`; a test fails when
these files are stale.
"""
