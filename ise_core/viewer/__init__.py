"""The trajectory viewer: a web app over a run's outputs, for ``ise view`` and the Airflow UI.

- ``index``   the episode index collect writes (``episode_index.jsonl``), so the episode list
              never opens one file per episode;
- ``data``    the data roots and the only way the app opens a file;
- ``listing`` filters, sorting and paging of the index;
- ``views``   what each page shows, as plain values;
- ``app``     the FastAPI app;
- ``serve``   ``ise view``.

Nothing is imported here, so collect (which needs only ``index``) loads no web code.
"""
