"""The runner: everything between an experiment's prompts and its results file.

* :mod:`.config` — :class:`~.config.RunConfig` (the settings that determine the numbers, validated once) and
  :class:`~.config.RunIdentity` (what a file records and a resume checks), fingerprints;
* :mod:`.batching` — which prompts share a batch, and each prompt's own random stream;
* :mod:`.loop` — :func:`~.loop.run_profiling`: preflight, lock, batches, checkpoints, resume;
* :mod:`.output` — the final write and the merge of data-parallel shards;
* :mod:`.distributed` — data-parallel runs over accelerate / torchrun.
"""
