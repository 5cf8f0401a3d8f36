"""``python -m analysis RUNS... --out report/``: the same as ``pkpo-analyze``."""

from pkpo.analyze import main

if __name__ == "__main__":
    raise SystemExit(main())
