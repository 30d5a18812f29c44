"""Files and folders: atomic writes, one-writer folder locks, output-folder checks."""
