"""``python -m imdlbenco_maskclip ...`` is the ``benco`` command (also under torchrun)."""

from imdlbenco_maskclip.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
