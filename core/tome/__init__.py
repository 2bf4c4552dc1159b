"""TOME, the upstream tokenization service: Django glue (``django.py``) and a local emulator.

The typed client library itself is the top-level ``tokenpool_tome`` package (shipped alone as the
``tokenpool-tome-client`` wheel); import it from there.
"""
