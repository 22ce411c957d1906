"""ingest package (see DESIGN.md)."""
