"""Saver: the single writer of the SQLite file; loads pages, writes the run's files and uploads them over SFTP."""
