"""The trajectory viewer: a web app over a run's outputs, for ``ise view`` and the Airflow UI.

- the episode index it reads is written by collect (``ise_core.simulate.episode_index``,
  ``episode_index.jsonl``), so the episode list never opens one file per episode;
- ``data``    the data roots and the only way the app opens a file;
- ``listing`` filters, sorting and paging of the index;
- ``views``   what each page shows, as plain values;
- ``app``     the FastAPI app;
- ``serve``   ``ise view``.

Nothing is imported here: ``ise view`` imports what it serves.
"""

DEFAULT_PORT = 8765  # ``ise view --port``
