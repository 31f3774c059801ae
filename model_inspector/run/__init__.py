"""The runner: everything between an experiment's prompts and its results file.

* :mod:`.config` — :class:`~.config.RunConfig` (the settings that determine the numbers, validated once) and
  :class:`~.config.RunIdentity` (what a file records and a resume checks), fingerprints;
* :mod:`.batching` — which prompts share a batch, and each prompt's own random stream;
* :mod:`.loop` — :func:`~.loop.run_profiling`: preflight, lock, identity, resume, the run's metadata;
* :mod:`.batchloop` — the batches: whole batches, checkpoints, and what an interrupt or an exception saves;
* :mod:`.output` — the one finalisation sequence (write, verify, remove the sidecar), the merge of data-parallel
  shards, and the leftovers a kill can leave;
* :mod:`.distributed` — data-parallel runs over accelerate / torchrun.
"""
