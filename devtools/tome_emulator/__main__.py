"""``python -m devtools.tome_emulator --port 8900 [--database-url ...]`` (no Django needed)."""
from devtools.tome_emulator.cli import main

if __name__ == "__main__":
    main()
