"""Data quality: rule-based document filters and near-duplicate removal (MinHash LSH).

Pure functions over batches of documents and numpy arrays; ``pipelines/quality_stages.py``
wraps them in Beam. ``words`` turns texts into stable word hashes, ``minhash`` turns word
n-grams into signatures and LSH band keys, ``clusters`` verifies band buckets and computes
connected components one step at a time, ``filters`` holds the quality rules.
"""
