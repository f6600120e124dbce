"""Worker processes: one uvloop event loop each, serving the snapshot the master pushed."""
