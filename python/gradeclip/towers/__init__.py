"""Tower adapters: one module per model family behind the interface in :mod:`gradeclip.towers.base`."""
