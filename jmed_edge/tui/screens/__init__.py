"""The TUI's screens, one per mode."""
