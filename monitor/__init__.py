"""monitor package (see DESIGN.md)."""
