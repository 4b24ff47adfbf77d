"""API: a read API over the SQLite file for the frontend (FastAPI)."""
