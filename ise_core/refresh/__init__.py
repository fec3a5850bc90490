"""Scheduled refreshes: periods of the schedule, what each adds, their history and lineage.

``periods``   the schedule's intervals and the ledger of the periods a dataset covers
``history``   per-period statistics, the history file and the card's growth table
``publish``   holding the published dataset while a period builds its successor
``run``       one period end to end (``ise refresh --period``; the DAG calls the same steps)
"""
