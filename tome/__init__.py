"""TOME, the upstream tokenization service: Django glue (``provider.py``) and a local emulator.

The typed client library itself is the top-level ``tokenpool_tome`` package (shipped alone as the
``tokenpool-tome-client`` wheel); import it from there.
"""

# TOME's documented per-call batch limit (docs/tome-api.md): the database ceiling of a pool's
# batch_size, the emulator's default and the default of settings.TOME_MAX_BATCH (what this
# deployment sends, which may be lower). No imports here: settings.py reads it.
TOME_BATCH_LIMIT = 5000
