"""Widgets the TUI's screens are built from."""
