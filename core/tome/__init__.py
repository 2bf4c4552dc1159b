"""TOME, the upstream tokenization service: the typed client library and a local emulator."""
