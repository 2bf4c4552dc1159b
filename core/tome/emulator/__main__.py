"""``python -m core.tome.emulator --port 8900 [--database-url ...]`` (no Django needed)."""
from core.tome.emulator.cli import main

if __name__ == "__main__":
    main()
