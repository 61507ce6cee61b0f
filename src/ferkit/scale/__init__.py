"""Scale-out on Ray: batch analysis, videos split into segments, distributed training.

Ray is the optional ``ray`` extra; nothing outside this package imports it, and nothing here imports it at module
load, so ``import ferkit`` and every single-process command stay as light as before.
"""
