"""One module per published benchmark format; each exposes ``load_*(path, collector)``."""
