"""Data layer: readers for both releases, validation, download, provenance and the synthetic phantom."""
