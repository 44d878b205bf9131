"""The engine jobs: each runs one ``PythonSlicer -m DTCCore <command> --jsonl`` subprocess and reads its events.

- :mod:`.enginejob`: the runner every job is built on (reader threads -> queue -> poll, cancel file, process group)
- :mod:`.segmentjob`: Segment (``dtc segment``) and its result files
- :mod:`.rankjob`: the Next case ranking (``dtc rank``)
- :mod:`.infojob`: what models are and what a device choice gives (``dtc info``)
- :mod:`.trainjob`: the fine-tune (``dtc train``)
- :mod:`.spare`: the next job's process, started in advance (``dtc spare``; Segment, ranking, model information)

Nothing here imports torch (the jobs run in Slicer's process; the engine runs in the subprocess), and this
file imports nothing, so importing one job loads only what it needs.
"""
