"""The simulated Reigh worker's parts: its Edge Function and table calls, its heartbeat guardian, and
the checkout it is laid out as on an emulated network volume.

Where this sits: ``orchestrator.standins.worker`` is the process the orchestrator starts on an emulated
pod (``python worker.py ...``); it speaks the real worker's protocol through :mod:`.edge` (HTTP, as
banodoco/Reigh-Worker ``source/core/db/*.py`` does), starts :mod:`.guardian` as a separate process
(``heartbeat_guardian.py``), and :mod:`.volume` writes the checkout the start command finds. The
sources, and how the simulation differs from them, are in ``orchestrator/standins/worker/process.py``'s docstring.
"""
