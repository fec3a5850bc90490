"""Record what each ``ise`` process of a traced pipeline run loads, calls and reads.

Python imports ``sitecustomize`` at start-up from the first folder on ``sys.path`` that holds
one, so putting this folder on PYTHONPATH instruments every process of a ``dvc repro``. It
does nothing unless ``ISE_DEPS_TRACE`` names a folder and the process is the ``ise`` command;
then, at exit, it writes ``<pid>.json`` there with:

- ``argv``      the command (``["ise", "gate", "sft"]``), which says the stage
- ``imported``  the file of every module loaded
- ``opened``    every path opened through Python (prompts, taxonomy, template files)
- ``called``    the file of every function that ran after start-up outside an import (module
                and class bodies and import-time decorators are not calls of the stage);
                only with ``ISE_DEPS_TRACE_CALLS`` set, and never for ``ise gate`` (Great
                Expectations is call-heavy: tracing would cost more than the gate)
"""

from __future__ import annotations

import json
import os
import sys
import threading
from types import FrameType
from typing import Any

_OUT = os.environ.get("ISE_DEPS_TRACE")
_CO_OPTIMIZED = 0x0001  # set on function code; unset on module and class bodies
_IMPORT_FRAME = "_find_and_load"


def _install(out_dir: str, trace_calls: bool) -> None:
    called: set[str] = set()
    opened: set[str] = set()
    # Imports under way now (this file's own) never report their return to a trace function
    # installed inside them, so counting starts at zero.
    importing = [0]
    tracing = [trace_calls]

    # sys.settrace, not sys.setprofile: its global function sees Python calls only (no C
    # calls) and returns no local tracer, so the stage runs ~1.3x slower instead of ~3x.
    def import_frame(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "return":
            importing[0] -= 1
        return import_frame

    def on_call(frame: FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        if code.co_name == _IMPORT_FRAME:
            importing[0] += 1
            return import_frame
        if not importing[0] and code.co_flags & _CO_OPTIMIZED:
            called.add(code.co_filename)
        return None

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and args and isinstance(args[0], str):
            opened.add(os.path.abspath(args[0]))

    def stop_calls() -> None:
        # Exit handlers (e.g. sandbox clean-up registered with atexit) are not the stage.
        if tracing[0]:
            tracing[0] = False
            sys.settrace(None)
            threading.settrace(None)

    real_exit = sys.exit

    def exit_and_stop(status: Any = None) -> Any:
        stop_calls()
        real_exit(status)

    def dump() -> None:
        stop_calls()
        imported = sorted(
            {str(getattr(m, "__file__", None)) for m in list(sys.modules.values())} - {"None"}
        )
        record = {
            "argv": [os.path.basename(sys.argv[0]), *sys.argv[1:]],
            "imported": imported,
            "opened": sorted(opened),
            "called": sorted(called) if trace_calls else None,
        }
        with open(os.path.join(out_dir, f"{os.getpid()}.json"), "w", encoding="utf-8") as fh:
            json.dump(record, fh)

    sys.addaudithook(audit)
    if trace_calls:
        sys.settrace(on_call)
        threading.settrace(on_call)
        sys.exit = exit_and_stop  # the console script ends with sys.exit(main())
    import atexit

    atexit.register(dump)  # registered first, so it runs after every other exit handler


if _OUT and sys.argv and os.path.basename(sys.argv[0]) == "ise":
    _install(_OUT, bool(os.environ.get("ISE_DEPS_TRACE_CALLS")) and sys.argv[1:2] != ["gate"])
