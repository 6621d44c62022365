"""What every step shares and no step owns: settings from the environment, structured logging, credential
redaction, S3 storage, MLflow tracking, provenance (code identity, git commit, config hash), atomic writes,
the one file-hash helper (file_hashes.sha256_of), and the allocator setting that keeps freed memory for the
next batch (allocator.py).

May import: model/ and configs/ only (no other package of components/), so every step can use it.
"""
