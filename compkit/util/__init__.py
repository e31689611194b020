"""Small helpers every layer uses: the user-error type, file I/O, locks, the registry type, plots."""
