"""alerts package (see DESIGN.md)."""
