"""HTTP job server for remote GPU machines (``track4dgen serve``).

``app`` (FastAPI routes), ``store`` (SQLite WAL job queue), ``worker`` (one ``track4dgen run``
subprocess per job, recovery, retention), ``uploads`` (safe archive extraction), ``auth`` (bearer
tokens), ``cli`` (argument parsing and uvicorn). Imported lazily by the CLI so ``track4dgen run``
never pays for the web stack.
"""
