"""Small pieces every other part uses: the errors the package raises on purpose, atomic file
writes, the one rule that turns ``--amp`` into an autocast dtype, pictures (mask PNGs,
overlays, grids) and self-contained HTML pages.

The lowest layer: it imports nothing else from this package.
"""
