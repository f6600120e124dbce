"""The prefork master: binds listeners, forks workers, rebuilds and pushes snapshots."""
