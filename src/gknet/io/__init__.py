"""Files in and out: images (read, convert, save), atomic writes, optional plotting."""
