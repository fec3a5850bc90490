"""ISE: Intent → Simulate → Execute. Pure stage functions; Airflow, DVC and the CLI call them."""

__version__ = "0.1.0"
